#!/usr/bin/env bash
# The cascades of the paper's table at convergence (issue 33): fold FOLD of MODEL (InputCascadeCNN,
# LocalCascadeCNN or MFCascadeCNN) on the folds of the TwoPathCNN campaign (training/run.sh), its first
# network the converged TwoPathCNN of the same fold of FIRST_RECIPE's run, frozen; the first network's maps
# over each training case are computed once and cached (learning/first_stage.py).  Same schedule as the
# TwoPathCNN campaign (60 + 4 epochs of 100 batches of 32 windows of 16 x 16 labels) and its
# augmentation with the thick slices made before preprocessing (training/thick.json); rerunning the same
# line continues the run exactly.
# Usage: training/cascade.sh MODEL FIRST_RECIPE FOLD MINUTES [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
model=$1 first=$2 fold=$3 minutes=$4 threads=${5:-1}
case $model in
  InputCascadeCNN|LocalCascadeCNN|MFCascadeCNN) ;;
  *) echo "model: InputCascadeCNN, LocalCascadeCNN or MFCascadeCNN" >&2; exit 2 ;;
esac
source training/common.sh
campaign_crossval "training/cv4-$model-on-$first" runs/cache-paper "$model" "$fold" "$minutes" "$threads" \
  --first-run "training/cv4-TwoPathCNN-$first" --config training/thick.json
