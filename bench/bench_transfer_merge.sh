#!/usr/bin/env bash
# Does a merge-screened recommendation win at 10x where RegMix alone tied? (issue 18), with the product's
# own commands, on the same corpus, proxies and target as bench/bench_transfer.sh:
#   bash bench/bench_transfer_merge.sh average   # examples/transfer-average.yaml: mean loss over the 18 domains
#   bash bench/bench_transfer_merge.sh target    # examples/transfer-target.yaml: pydocs held out of training
# 1. RegMix: 48 dense-3k proxies at 320k tokens (24 Dirichlet, then 24 proposals).
# 2. Merge-screened, at no more proxy compute: experts of the same proxy (seed on natural for half of
#    its tokens, then one expert per training domain: 9 to 9.5 proxies' worth), 2 screening rounds of
#    96 mixtures scored by merging (2 validation batches a domain: ~0.077 of a proxy each, 14.8 in all),
#    then 20 trained proxies (searcher merge_screen: the 8 best merged mixtures, then RegMix; the merge at
#    today's merge.power and merge.scale: the README's figures name the settings they were measured at); the
#    recommendation is RegMix's over those 20 (RECOMMEND_FROM=merged: the mean of the 8 best merged
#    mixtures, the default before this benchmark showed it losing at 10x). Total: 44 to 45 proxies' worth.
# 3. `mixopt transfer`: both recommendations, the best proxy trial, uniform and natural at dense-37k
#    (11.9x the params) on 3.2M tokens (10x), seeds 0-2 (paired), and the paired table.
# Env: WORK (default: a new temp folder, kept), SEEDS (3), RECOMMEND_FROM (inner | merged | trained).
set -euo pipefail
kind=${1:-average}
case "$kind" in target|average) ;; *) echo "usage: bash bench/bench_transfer_merge.sh average|target" >&2; exit 2 ;; esac
root=$(cd "$(dirname "$0")/.." && pwd)
cfg="$root/examples/transfer-$kind.yaml"
work=${WORK:-$(mktemp -d)}
mkdir -p "$work" && cd "$work"
export MLFLOW_TRACKING_URI="sqlite:///$work/mlflow.db" RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}
echo "work folder: $work"
mixopt data prepare "$cfg" > prepare.log 2>&1 || { tail -5 prepare.log; exit 1; }
t0=$(date +%s)
start=$(date +%s)
mixopt run "$cfg" --study "$kind-regmix" > regmix.log 2>&1 || { tail -20 regmix.log; exit 1; }
echo "$kind-regmix: 48 proxies in $(( $(date +%s) - start )) s"
start=$(date +%s)
mixopt run "$cfg" --study "$kind-merge" --search.searcher=merge_screen --search.n_init=0 \
  --search.options.searcher=regmix --search.options.train_top=8 --search.options.top_k=8 --budget.trials=20 \
  --search.options.recommend_from="${RECOMMEND_FROM:-inner}" \
  --merge.candidates=96 --merge.rounds=2 --merge.eval_batches=2 --merge.seed_fraction=0.5 \
  > merge.log 2>&1 || { tail -20 merge.log; exit 1; }
grep -E "^merge:|scored by merging" merge.log || true
echo "$kind-merge: $(( $(date +%s) - start )) s"
start=$(date +%s)
mixopt transfer "$cfg" --study "$kind-regmix" --from "$kind-merge" --seeds "${SEEDS:-3}" --name "$kind-merge-transfer" \
  --preset dense-37k --tokens 3200000 > transfer.log 2>&1 || { tail -20 transfer.log; exit 1; }
sed -n '/^Transfer to/,$p' transfer.log | grep -v "^wrote\|^\[" || true
echo "transfer: $(( $(date +%s) - start )) s; whole benchmark: $(( $(date +%s) - t0 )) s (corpus prepared before)"
