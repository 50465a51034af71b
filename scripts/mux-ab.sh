#!/bin/sh
# mux-ab.sh: compare the mux benchmarks of an earlier commit with the working
# tree, interleaved: every round runs the old binary, then the new one, so a
# change in the machine's load falls on both alike. Both binaries run the
# working tree's external mux tests (bench_test.go and its helpers), so the same
# benchmarks are compared. Prints the median of every benchmark's MB/s (msgs/s
# for Messages64) per side.
#
#   scripts/mux-ab.sh OLD_REV [ROUNDS] [BENCH_REGEXP]
#   scripts/mux-ab.sh 1b2b1d2 4 'Throughput/(tcp|mux-v2-kcptun)$'
set -eu
old=${1:?usage: $0 OLD_REV [ROUNDS] [BENCH_REGEXP]}
rounds=${2:-4}
re=${3:-Throughput|Aggregate64|Messages64}
top=$(git rev-parse --show-toplevel)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mkdir "$work/old"
git -C "$top" archive "$old" | tar -x -C "$work/old"
# The external tests (package mux_test) hold the benchmarks and use only the
# exported API; the old tree keeps its own internal tests.
for f in "$work"/old/mux/*_test.go; do
	if grep -q '^package mux_test' "$f"; then rm "$f"; fi
done
for f in "$top"/mux/*_test.go; do
	if grep -q '^package mux_test' "$f"; then cp "$f" "$work/old/mux/"; fi
done
# ...and the shared test helpers they import.
rm -rf "$work/old/internal/nettest"
mkdir -p "$work/old/internal"
cp -r "$top/internal/nettest" "$work/old/internal/"

(cd "$work/old" && go test -c -o "$work/old.test" ./mux/)
(cd "$top" && go test -c -o "$work/new.test" ./mux/)

for r in $(seq "$rounds"); do
	for side in old new; do
		(cd "$top/mux" && "$work/$side.test" -test.run '^$' -test.bench "$re" -test.count 1) |
			awk -v side="$side" '/^Benchmark/ {
				v = $5
				for (i = 3; i < NF; i++) if ($(i + 1) == "msgs/s") v = $i
				print side, $1, v
			}' >>"$work/results"
	done
	echo "round $r of $rounds done" >&2
done

# Median per side and benchmark.
sort -k1,1 -k2,2 -k3,3g "$work/results" | awk '
	function flush() {
		if (n) printf "%-4s %-45s %12.0f  (%d runs)\n", key1, key2, (n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2), n
	}
	{
		if ($1 != key1 || $2 != key2) { flush(); key1 = $1; key2 = $2; n = 0 }
		v[++n] = $3
	}
	END { flush() }' | sort -k2,2 -k1,1r
