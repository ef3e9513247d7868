#!/usr/bin/env bash
# The test command: installs what the tests need (system packages, the default model) and
# runs the whole suite. Fixtures are committed; regenerating them is tools/make-fixtures.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
swift build --build-tests
swift run tessera models pull >/dev/null
swift test --skip-build --disable-swift-testing "$@"
# The benchmark harnesses' own tests (standard-library python; the converter's skip without numpy/gguf).
python3 -m unittest discover -s bench -p 'test_*.py' </dev/null
