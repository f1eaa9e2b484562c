#!/usr/bin/env bash
# Does the recommended mixture win at a larger scale? (issue 10), with the product's own commands.
#   bash bench/bench_transfer.sh target    # examples/transfer-target.yaml: pydocs held out of training
#   bash bench/bench_transfer.sh average   # examples/transfer-average.yaml: mean loss over the 18 domains
#   bash bench/bench_transfer.sh target-auto   # examples/transfer-target-auto.yaml: target, `lr: auto` everywhere
# 1. Three proxy studies on the same initial design (24 Dirichlet mixtures, then 24 proposals):
#    regmix, bo and mixing_law, dense-3k proxies at 320k tokens.
# 2. `mixopt transfer`: their recommendations, the best proxy trial's mixture, uniform and natural at
#    dense-37k (11.9x the params) on 3.2M tokens (10x), seeds 0-2 (paired: same init and sampler
#    seed in every arm); each arm also trained once at 6 smaller rungs (dense-3k, -6k, -14k at two
#    budgets each, every rung >= 500 optimizer steps), where L = E + A/N^a + B/D^b is fitted to
#    predict its loss at the target before it is measured.
# Prints the transfer table (also transfer.json / transfer.png in $WORK/mixopt-out/<study>-transfer
# and an MLflow run); the timings of each phase. CPU size: about 35 minutes on 2 cores.
# Env: WORK (default: a new temp folder, kept), SEEDS (3).
set -euo pipefail
kind=${1:-target}
case "$kind" in target|average|target-auto) ;; *) echo "usage: bash bench/bench_transfer.sh target|average|target-auto" >&2; exit 2 ;; esac
root=$(cd "$(dirname "$0")/.." && pwd)
cfg="$root/examples/transfer-$kind.yaml"
work=${WORK:-$(mktemp -d)}
mkdir -p "$work" && cd "$work"
export MLFLOW_TRACKING_URI="sqlite:///$work/mlflow.db" RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}
echo "work folder: $work"
mixopt data prepare "$cfg" > prepare.log 2>&1 || { tail -5 prepare.log; exit 1; }
t0=$(date +%s)
for s in regmix bo mixing_law; do
  start=$(date +%s)
  mixopt run "$cfg" --study "$kind-$s" --search.searcher=$s > "$s.log" 2>&1 || { tail -20 "$s.log"; exit 1; }
  echo "$kind-$s: 48 proxies in $(( $(date +%s) - start )) s; recommendation: $(mixopt recommend "$cfg" --study "$kind-$s" --json 2>/dev/null | python -c 'import json, sys; d = json.load(sys.stdin); print(", ".join(f"{k} {v:.2f}" for k, v in sorted(d["mixture"].items(), key=lambda kv: -kv[1])[:3]), "| predicted", round(d["predicted_objective"], 4))')"
done
start=$(date +%s)
mixopt transfer "$cfg" --study "$kind-regmix" --from "$kind-bo" --from "$kind-mixing_law" --seeds "${SEEDS:-3}" \
  --preset dense-37k --tokens 3200000 \
  --rung dense-3k:1000000 --rung dense-3k:2000000 --rung dense-6k:1000000 --rung dense-6k:2000000 \
  --rung dense-14k:1500000 --rung dense-14k:3000000 > transfer.log 2>&1 || { tail -20 transfer.log; exit 1; }
sed -n '/^Transfer to/,$p' transfer.log | grep -v "^wrote\|^\[" || true
echo "transfer: $(( $(date +%s) - start )) s; whole benchmark: $(( $(date +%s) - t0 )) s (corpus prepared before)"
