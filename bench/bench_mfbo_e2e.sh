#!/usr/bin/env bash
# mfbo vs regmix end to end on the real corpus (issue 3): proxy compute each spends to reach its
# recommendation, and the recommendation's objective at the target scale (2 seeds, via
# `mixopt transfer --factor 1`, next to uniform and natural).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
export MLFLOW_TRACKING_URI="sqlite:///$work/mlflow.db"
for s in mfbo_e2e regmix_e2e; do
  start=$(date +%s)
  mixopt run "$root/bench/configs/$s.yaml" > $s.log 2>&1 || { tail -20 $s.log; exit 1; }
  python - "$work" "$s" <<'PY'
import sys, mixopt
study = mixopt.load_study(sys.argv[2].replace("_", "-"), f"sqlite:///{sys.argv[1]}/mlflow.db")
secs = sum(t.metrics.get("train_seconds", 0.0) for t in study.trials)
flops = sum(t.metrics.get("flops_per_token", 0.0) * t.metrics.get("tokens", 0.0) for t in study.trials)
rungs = {}
for t in study.trials:
    rungs[t.spec.tokens] = rungs.get(t.spec.tokens, 0) + 1
print(f"{study.name}: trials per token budget {rungs}; proxy compute {secs:.0f} worker-s, {flops:.3g} FLOPs")
PY
  echo "$s wall: $(( $(date +%s) - start )) s"
  mixopt transfer "$root/bench/configs/$s.yaml" --seeds 2 --factor 1 2>&1 | grep -E "^  |Transfer"
done
