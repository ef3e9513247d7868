#!/usr/bin/env python3
"""Write bench/prompt_tokens_512.json: the benchmark prompt as token ids.

Tokenizes bench/prompt.txt with llama.cpp's own tokenizer (through llama-cpp-python,
add_bos=False, special=False) from the model's GGUF, then truncates (or repeats the
ids) to exactly --count ids. The JSON is committed, so Tessera and the llama.cpp peer
read the same ids and Tessera's tokenizer is not part of the speed comparison.

Run with the bench venv:
  .venv-bench/bin/python bench/make_prompt_tokens.py --model /path/SmolLM2-135M-Instruct.Q4_1.gguf
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from model_bench import default_model_path  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="GGUF whose tokenizer to use (default: as model_bench.py)")
    ap.add_argument("--text", default=os.path.join(HERE, "prompt.txt"))
    ap.add_argument("--count", type=int, default=512)
    ap.add_argument("--out", default=os.path.join(HERE, "prompt_tokens_512.json"))
    args = ap.parse_args(argv)

    from llama_cpp import Llama

    model = args.model or default_model_path()
    with open(args.text, "rb") as f:
        text = f.read()
    llm = Llama(model_path=model, vocab_only=True, verbose=False)
    ids = llm.tokenize(text, add_bos=False, special=False)
    if not ids:
        sys.exit("tokenizer returned no ids")
    full = len(ids)
    while len(ids) < args.count:
        ids = ids + ids[: args.count - len(ids)]
    ids = ids[: args.count]
    with open(args.out, "w") as f:
        json.dump(ids, f)
        f.write("\n")
    print(f"{args.text}: {full} ids from {os.path.basename(model)}; wrote {len(ids)} to {args.out}"
          f" ({'truncated' if full >= args.count else 'repeated'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
