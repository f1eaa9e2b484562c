#!/usr/bin/env bash
# Issue-4 figures on the real corpus, with the product's own commands, in a temp folder:
#  1. a sweep of 4 mixtures over a 6-rung ladder, `mixopt fit` -> held-out relative error of the
#     largest rung predicted from the smaller ones;
#  2. a RegMix study on small proxies, `mixopt transfer` -> recommended vs uniform vs natural at
#     >= 4x params and tokens, 3 seeds each.
# Usage: bash bench/bench_scaling_transfer.sh   (from the repo root, in the project venv)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
export MLFLOW_TRACKING_URI="sqlite:///$work/mlflow.db"
start=$(date +%s)
mixopt run "$root/bench/configs/ladder.yaml" > ladder.log 2>&1 || { tail -20 ladder.log; exit 1; }
echo "ladder sweep: $(( $(date +%s) - start )) s"
mixopt fit "$root/bench/configs/ladder.yaml" --kind loss_scale --bootstrap 50
start=$(date +%s)
mixopt run "$root/bench/configs/transfer.yaml" > transfer-src.log 2>&1 || { tail -20 transfer-src.log; exit 1; }
mixopt transfer "$root/bench/configs/transfer.yaml" --seeds 3 --factor 4 2>&1 | grep -v "^\[" | grep -v INFO
echo "transfer (study + check): $(( $(date +%s) - start )) s"
