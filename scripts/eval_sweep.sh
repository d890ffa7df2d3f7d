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
cols = "accuracy cost_usd acc/best cost/best lift(pts) gap_rec priors_acc priors_cost/best".split()
print(f"{'strategy':<9} {'seed':>4}  " + " ".join(f"{c:>16}" for c in cols))
for s in strategies:
    rows = []
    for seed in seeds:
        r = json.load(open(f"{out}/{name}-{s}-{seed}/report.json"))
        p, q = r["policy"], r.get("prior_policy") or {}
        single = {x["name"]: x for x in r["singles"]}
        b, c = single[r["best_single"]], single[r["cheapest_single"]]
        # Random mixing of cheapest and best at the policy's cost (as report.json's versus_mix).
        share = min(1, max(0, (p["cost_usd"] - c["cost_usd"]) / (b["cost_usd"] - c["cost_usd"])))
        mix = c["accuracy"] + share * (b["accuracy"] - c["accuracy"])
        gap = (p["accuracy"] - c["accuracy"]) / (b["accuracy"] - c["accuracy"])
        row = [p["accuracy"], p["cost_usd"], p["accuracy_vs_best"], p["cost_vs_best"],
               100 * (p["accuracy"] - mix), gap, q.get("accuracy", 0), q.get("cost_vs_best", 0)]
        rows.append(row)
        print(f"{s:<9} {seed:>4}  " + " ".join(f"{v:>16.4f}" for v in row))
    mean = [sum(x[i] for x in rows) / len(rows) for i in range(len(cols))]
    print(f"{s:<9} {'mean':>4}  " + " ".join(f"{v:>16.4f}" for v in mean))
PY
