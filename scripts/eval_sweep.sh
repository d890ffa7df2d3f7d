#!/usr/bin/env bash
# Runs `optimizer eval` for each strategy × seed and prints one line per run (the learned
# policy's accuracy and cost next to the best single model), plus the mean per strategy.
#
#   scripts/eval_sweep.sh DATASET.jsonl [SEEDS="1 2 3"] [STRATEGIES="cost balanced quality"]
#
# Extra `optimizer eval` flags go in EVAL_ARGS (e.g. EVAL_ARGS="--rounds 3"). Reports are kept
# under $EVAL_SWEEP_DIR (default target/eval-sweep)/<dataset>-<strategy>-<seed>/. Needs the release
# binary and python3.
set -euo pipefail
dataset=${1:?usage: eval_sweep.sh DATASET.jsonl [SEEDS] [STRATEGIES]}
seeds=${2:-1 2 3}
strategies=${3:-cost balanced quality}
bin=${OPTIMIZER_BIN:-target/release/optimizer}
name=$(basename "$dataset" .jsonl)
out=${EVAL_SWEEP_DIR:-target/eval-sweep}
mkdir -p "$out"
for strategy in $strategies; do
  for seed in $seeds; do
    dir="$out/$name-$strategy-$seed"
    # shellcheck disable=SC2086
    "$bin" eval --dataset "$dataset" --strategy "$strategy" --seed "$seed" --out "$dir" \
      ${EVAL_ARGS:-} >"$dir.log" 2>&1 || { echo "failed: see $dir.log" >&2; exit 1; }
  done
done
python3 - "$out" "$name" "$seeds" "$strategies" <<'PY'
import json, sys
out, name, seeds, strategies = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split()
print(f"{'strategy':<9} {'seed':>4}  {'accuracy':>8} {'cost':>10} {'acc/best':>8} {'cost/best':>9}  "
      f"{'priors acc':>10} {'priors cost/best':>16}")
for s in strategies:
    rows = []
    for seed in seeds:
        r = json.load(open(f"{out}/{name}-{s}-{seed}/report.json"))
        p, q = r["policy"], r.get("prior_policy") or {}
        rows.append((p["accuracy"], p["cost_usd"], p["accuracy_vs_best"], p["cost_vs_best"],
                     q.get("accuracy", 0), q.get("cost_vs_best", 0)))
        print(f"{s:<9} {seed:>4}  {p['accuracy']:>8.1%} {p['cost_usd']:>10.4f} "
              f"{p['accuracy_vs_best']:>8.1%} {p['cost_vs_best']:>9.1%}  "
              f"{q.get('accuracy', 0):>10.1%} {q.get('cost_vs_best', 0):>16.1%}")
    n = len(rows)
    m = [sum(x[i] for x in rows) / n for i in range(6)]
    print(f"{s:<9} {'mean':>4}  {m[0]:>8.1%} {m[1]:>10.4f} {m[2]:>8.1%} {m[3]:>9.1%}  "
          f"{m[4]:>10.1%} {m[5]:>16.1%}")
PY
