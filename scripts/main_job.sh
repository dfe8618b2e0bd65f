#!/usr/bin/env bash
# The main job on the default dataset (ML-100K with posters and plots):
# prepare the data (validate, split, extract posters) and print its statistics.
# Usage: bash scripts/main_job.sh [CONFIG]   (run from anywhere; uses .venv if present)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
export TOKENIZERS_PARALLELISM=false
CONFIG="${1:-configs/default.yaml}"
if [ -x .venv/bin/mmrec ]; then MMREC=.venv/bin/mmrec; else MMREC=mmrec; fi

echo "== 1/1 prepare data ($CONFIG)"
"$MMREC" data prepare "$CONFIG"
