#!/usr/bin/env bash
# The test command: installs what the tests need (system packages, the default model, the
# `openai` client in a venv) and runs the whole suite: the Swift tests, then the HTTP API
# through the official openai client against real `tessera serve` processes on 127.0.0.1.
# Fixtures are committed; regenerating them is tools/make-fixtures.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
swift build --build-tests
swift run tessera models pull >/dev/null
# The openai-client tests' venv (PyPI's openai, pinned).
if [ ! -x .venv-test/bin/python ] || ! .venv-test/bin/python -c 'import openai' 2>/dev/null; then
  python3 -m venv .venv-test
  .venv-test/bin/pip install -q -r Tests/openai/requirements.txt
fi
status=0
swift test --skip-build --disable-swift-testing "$@" || status=$?
# The benchmark harnesses' own tests (standard-library python; the converter's skip without numpy/gguf).
python3 -m unittest discover -s bench -p 'test_*.py' </dev/null || status=$?
# The HTTP API through the official openai client, against real servers on 127.0.0.1.
(cd Tests/openai && TESSERA_BIN="$PWD/../../.build/debug/tessera" ../../.venv-test/bin/python -m unittest -v test_openai_api test_serving_lifecycle test_limits_and_ledger test_tenancy </dev/null) || status=$?
# The example gateway that links Tessera (built, to prove a dependent package builds).
swift build --package-path Examples/Gateway || status=$?
exit "$status"
