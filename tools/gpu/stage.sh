#!/usr/bin/env bash
# Get the checkout ready for the device machine (run here, before the device call):
#   tools/gpu/stage.sh            pack FER2013 into .gpu/ (git-ignored, carried), park the shipped
#                                 weights (the job never reads them) so tree + archive fit the
#                                 64 MiB the device machine takes, print what will travel
#   tools/gpu/stage.sh --restore  put the shipped weights back (git checkout) after the run
# FERKIT_FER2013 names the Kaggle-layout FER2013 folder (default ../shared/datasets/fer2013).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "${1:-}" = "--restore" ]; then
  git checkout -- src/ferkit/weights && echo "stage: shipped weights restored"
  exit 0
fi
data="${FERKIT_FER2013:-../shared/datasets/fer2013}"
if [ ! -f .gpu/fer2013.tar.gz ]; then
  "${PYTHON:-python3}" tools/gpu/pack_data.py "$data" .gpu/fer2013.tar.gz
fi
if ! git diff --quiet -- src/ferkit/weights; then
  echo "stage: src/ferkit/weights has uncommitted changes; commit them before parking" >&2
  exit 2
fi
rm -f src/ferkit/weights/*.pt src/ferkit/weights/*.onnx
tree=$(git ls-files -z --cached --others --exclude-standard | { xargs -0 -r stat -c %s 2>/dev/null || true; } | awk '{s+=$1} END {print s+0}')
arch=$(stat -c %s .gpu/fer2013.tar.gz)
total=$((tree + arch))
limit=$((64 * 1024 * 1024))
awk -v t="$tree" -v a="$arch" 'BEGIN {printf "stage: tree %.1f MiB + archive %.1f MiB = %.1f MiB (limit 64 MiB)\n", t/1048576, a/1048576, (t+a)/1048576}'
if [ "$total" -gt "$limit" ]; then
  echo "stage: over the 64 MiB transfer limit" >&2
  exit 1
fi
echo "stage: ready; run the job with carry [\".gpu\"], then: tools/gpu/stage.sh --restore"
