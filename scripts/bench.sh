#!/usr/bin/env bash
# make bench: performance figures of keel, each printed beside a peer
# measured in the same run and the ratio between them. Benchmarks are added
# by the subsystems as they land; see docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
shopt -s nullglob
ran=0
for b in scripts/bench.d/*.sh; do
	echo "== $(basename "$b" .sh)"
	bash "$b"
	ran=$((ran + 1))
done
[ "$ran" -gt 0 ] || echo "no benchmarks yet"
