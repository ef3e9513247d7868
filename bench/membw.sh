#!/bin/sh
# Memory read bandwidth of this machine: builds bench/membw.c into .build/membw (when missing
# or older than the source) and runs it with the arguments given, e.g.
#   bench/membw.sh                      # threads 1 and the online CPU count, human-readable
#   bench/membw.sh --threads 1,2 --json # one JSON object on stdout, the lines on stderr
# CC overrides the compiler (default cc). AVX2 loads on x86 CPUs that have AVX2, plain C elsewhere.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
src="$root/bench/membw.c"
bin="$root/.build/membw"
mkdir -p "$root/.build"
if [ ! -x "$bin" ] || [ "$src" -nt "$bin" ] || [ "$0" -nt "$bin" ]; then
    flags="-O3 -pthread"
    case "$(uname -m)" in
        x86_64 | amd64 | i?86)
            if grep -qw avx2 /proc/cpuinfo 2>/dev/null; then flags="$flags -mavx2"; fi ;;
    esac
    # shellcheck disable=SC2086
    ${CC:-cc} $flags -o "$bin.tmp.$$" "$src"
    mv -f "$bin.tmp.$$" "$bin"
fi
exec "$bin" "$@"
