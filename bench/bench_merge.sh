#!/usr/bin/env bash
# Model-merging proxies: do merged scores rank mixtures as trained proxies do? (issue 18), with the
# product's own command. For each proxy size: 32 random mixtures over the 17 training domains of
# examples/transfer-target.yaml (debian recipe; pydocs held out) trained for real, and scored by
# merging experts trained with seed fraction s = 0.5, 0.75 and auto (the default: 0.5 at dense-3k's 156 steps,
# 0.9 at dense-37k's 1,562), each with the mixture's own weights (power 1) and flattened ones (power 0.5, the
# default), at merge scale 1 (the default: a weight average) and 1.25 (each expert's change from the seed scaled
# up); Spearman / Pearson per objective
# (mean loss over the 18 domains, held-out loss on pydocs), the merge's compute and noise, and
# RegMix's regression trained on as many random proxies as the merge costs.
#   bash bench/bench_merge.sh            # dense-3k at 320k tokens, then dense-37k at 3.2M tokens
#   SIZES=3k bash bench/bench_merge.sh   # one size only (3k | 37k)
# Env: WORK (default: a new temp folder, kept), MIXTURES (32).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cfg="$root/examples/transfer-target.yaml"
work=${WORK:-$(mktemp -d)}
mkdir -p "$work" && cd "$work"
export MLFLOW_TRACKING_URI="sqlite:///$work/mlflow.db" RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}
echo "work folder: $work"
mixopt data prepare "$cfg" > prepare.log 2>&1 || { tail -5 prepare.log; exit 1; }
for size in ${SIZES:-3k 37k}; do
  case $size in
    3k) over=(--proxy.preset=dense-3k --proxy.tokens=320000) ;;
    37k) over=(--proxy.preset=dense-37k --proxy.tokens=3200000) ;;
    *) echo "SIZES: 3k or 37k" >&2; exit 2 ;;
  esac
  start=$(date +%s)
  mixopt merge-check "$cfg" "${over[@]}" --mixtures "${MIXTURES:-32}" --seed-fraction 0.5 --seed-fraction 0.75 \
    --seed-fraction auto --power 1 --power 0.5 --scale 1 --scale 1.25 \
    --name "merge-check-$size" > "check-$size.log" 2>&1 || { tail -20 "check-$size.log"; exit 1; }
  sed -n '/^Merged vs trained/,$p' "check-$size.log"
  echo "dense-$size: $(( $(date +%s) - start )) s"
done
