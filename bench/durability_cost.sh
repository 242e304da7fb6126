#!/usr/bin/env bash
# bench/durability_cost.sh [BASE_REV] [DURATION] [ROUNDS]
# Issue 12: the cost of "durable before visible" (WAL + seq mark file fsynced before the
# publisher sees a row), measured against BASE_REV (default: the commit before issue 12)
# in the same run, interleaved (base, new, base, new ...) so both see the same load on a
# shared machine. Line load = 10 presses x 40 tags / 100 ms; heavy = 40 presses x 40 tags
# / 100 ms (16,000 readings/s, 400 msgs/s). The base tree is exported to /tmp with
# `git archive` (never into the repo). The "epoch in the envelope" alternative costs what
# the base costs (no fsync per commit; ~15 bytes more per message), so the base stands for it.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE_REV=${1:-64e9d6c}
DURATION=${2:-30}
ROUNDS=${3:-2}
PY=${PYTHON:-$PWD/.venv/bin/python}
BASE=/tmp/press-collector-durability-tree
rm -rf "$BASE" && mkdir -p "$BASE"
git archive "$BASE_REV" | tar -x -C "$BASE"
OUT=${OUT:-/tmp/press-collector-durability-results}
mkdir -p "$OUT"
for round in $(seq 1 "$ROUNDS"); do
  for load in line heavy; do
    presses=10; [ "$load" = heavy ] && presses=40
    for variant in base new; do
      dir=$PWD; [ "$variant" = base ] && dir=$BASE
      (cd "$dir" && "$PY" -m bench.run line --presses "$presses" --duration "$DURATION" \
         --workdir "/tmp/press-collector-durability-work-$variant" --results "$OUT/$variant-$load-$round") \
         | grep '"scenario": "line"' | sed "s/^/$variant $load $round /"
    done
  done
done | tee "$OUT/summary.txt"
