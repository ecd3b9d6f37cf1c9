# Sourced by the campaign's scripts (run.sh, cascade.sh, paths.sh): the one command line every fold of the
# paper's table trains with, so each script states only what its networks do differently.
# campaign_crossval RUN_DIR CACHE_DIR MODEL FOLD MINUTES THREADS [FLAGS...]: fold FOLD of the 4-fold
# cross-validation (fold seed 0) over every patient of ../shared/data, 60 + 4 epochs of 100 batches of 32
# windows of 16 x 16 labels, one validation curve on the held-out cases, the last weights kept; each piece in
# the arithmetic its machine does best (auto: bfloat16 where the CPU has it natively, else float32; the runs'
# first pieces all ran bfloat16, their state lists each piece's);
# FLAGS come last and override (argparse keeps a flag's last value).  Rerunning the same line continues the
# run where it stopped (exactly, on a machine of the same arithmetic).
campaign_crossval() {
  local run_dir=$1 cache_dir=$2 model=$3 fold=$4 minutes=$5 threads=$6
  shift 6
  exec nice -n 10 .venv/bin/braintumorcnn crossval $(ls -d ../shared/data/*/*/) \
    --folds 4 --fold-seed 0 --only-folds "$fold" --validate-held-out --keep last \
    --run-dir "$run_dir" --cache-dir "$cache_dir" --model "$model" \
    --precision auto --phase1-epochs 60 --phase2-epochs 4 --batches-per-epoch 100 \
    --batch-size 32 --output-size 16 --learning-rate 0.0012 --patience 0 --validation-slice-step 12 \
    --threads "$threads" --time-limit "$minutes" --n4-shrink 4 "$@"
}
