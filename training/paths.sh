#!/usr/bin/env bash
# The single networks of the paper's table at convergence (issue 33): fold FOLD of MODEL (LocalPathCNN,
# GlobalPathCNN or TwoPathCNN-1phase) on the folds of the TwoPathCNN campaign (training/run.sh), with the
# cascades' recipe (training/cascade.sh: 60 + 4 epochs of 100 batches of 32 windows of 16 x 16 labels,
# the augmentation of training/thick.json, its lesion contrast reduced by up to 70 % from the first
# step); TwoPathCNN-1phase trains its 64 epochs in phase 1.  AverageCNN is trained by none: MODEL AverageCNN
# assembles each fold from the finished LocalPathCNN and GlobalPathCNN runs' same fold and scores it.
# SliceStackCNN, the project's own network (issue 33 item 5), trains the same way beside them.
# Rerunning the same line continues the run exactly.
# Usage: training/paths.sh MODEL FOLD MINUTES [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
model=$1 fold=$2 minutes=$3 threads=${4:-1}
case $model in
  LocalPathCNN|GlobalPathCNN|SliceStackCNN) extra=() ;;
  TwoPathCNN-1phase) extra=(--phase1-epochs 64 --phase2-epochs 0) ;;
  AverageCNN) extra=(--local-run training/cv4-LocalPathCNN-thick --global-run training/cv4-GlobalPathCNN-thick) ;;
  *) echo "model: LocalPathCNN, GlobalPathCNN, TwoPathCNN-1phase, AverageCNN or SliceStackCNN" >&2; exit 2 ;;
esac
source training/common.sh
campaign_crossval "training/cv4-$model-thick" runs/cache-paper "$model" "$fold" "$minutes" "$threads" \
  --config training/thick.json "${extra[@]}"
