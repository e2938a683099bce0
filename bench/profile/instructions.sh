#!/bin/sh
# Instructions per request of a profiling driver, from two callgrind runs (N and 2N
# requests after the same warm-up): (I(2N) - I(N)) / N, so start-up cancels out.
#   bench/profile/instructions.sh orders_read 200 [driver options...]
set -eu
driver=$1; n=$2; shift 2
cd "$(dirname "$0")/../.."
out=$(mktemp -d)
for count in "$n" $((2 * n)); do
    PYTHONPATH=${SRC_OVERRIDE:+$SRC_OVERRIDE:}tests:. valgrind --tool=callgrind --callgrind-out-file="$out/cg.$count" \
        .venv/bin/python -m "bench.profile.$driver" -n "$count" "$@" >/dev/null 2>"$out/log.$count" \
        || { tail -20 "$out/log.$count"; exit 1; }
done
total() { grep -m1 '^summary:\|^totals:' "$1" | awk '{print $2}'; }
a=$(total "$out/cg.$n"); b=$(total "$out/cg.$((2 * n))")
echo "$driver: $(( (b - a) / n )) instructions per request ($n requests; files in $out)"
