#!/usr/bin/env bash
# `make bench [QUICK=1]`: the criterion micro-benchmarks, the Python benchmarks (pytest-benchmark,
# every stack they start is stopped at the end), then docs/benchmarks.md and its plot.
# The report is written even when a benchmark fails, and the failure still fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-${VENV:-.venv}/bin/python}
TARGET=${CARGO_TARGET_DIR:-target}
OUT="$TARGET/bench"
say() { printf '[bench] %s\n' "$*" >&2; }
quick() { [ -n "${QUICK:-}" ] && [ "${QUICK}" != "0" ]; }

mkdir -p "$OUT"
if quick; then
  say "quick mode: counts scaled down 3 to 10x"
  CRITERION_ARGS=(--warm-up-time 0.2 --measurement-time 0.5 --sample-size 20)
else
  CRITERION_ARGS=(--warm-up-time 1 --measurement-time 3)
fi

say "criterion: cargo bench --bench codec --bench batching"
rm -rf "$TARGET/criterion"  # only this run's estimates may reach the page
t0=$(date +%s)
cargo bench --quiet --bench codec --bench batching -- "${CRITERION_ARGS[@]}" > "$OUT/criterion.log" 2>&1 \
  || { tail -40 "$OUT/criterion.log" >&2; exit 1; }
grep -E '^[a-z_]+/[^ ]+ +time:|^ +time:' -B1 "$OUT/criterion.log" | grep -v '^--' >&2 || true
say "criterion done in $(( $(date +%s) - t0 ))s"

say "python benchmarks: pytest -c benches/pytest.ini benches"
status=0
"$PY" -m pytest -c benches/pytest.ini benches --benchmark-json="$OUT/python.json" -q -rfE \
  || status=$?
say "python benchmarks done in $(( $(date +%s) - t0 ))s since the start"

if [ -s "$OUT/python.json" ]; then
  "$PY" benches/report.py --json "$OUT/python.json" --criterion "$TARGET/criterion" \
    --out docs/benchmarks.md --png docs/benchmarks-throughput.png
else
  say "no benchmark results: docs/benchmarks.md left as it was"
  [ "$status" -ne 0 ] || status=1
fi
say "total $(( $(date +%s) - t0 ))s"
exit "$status"
