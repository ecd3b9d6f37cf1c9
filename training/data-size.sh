#!/usr/bin/env bash
# Is the data the limit? Fold FOLD of the augmented recipe (training/run.sh augmented) trained again on every
# other of its training patients (same config, seed, schedule and held-out validation cases: only the
# training patients halve), for at most MINUTES; rerunning the same line continues it.  Its validation curve
# (training/data-size/fold-FOLD-half/log.csv) is compared with the full fold's at equal steps
# (docs/training.md, "Is the data the limit?").
# Usage: training/data-size.sh FOLD MINUTES
set -euo pipefail
cd "$(dirname "$0")/.."
fold=$1 minutes=$2
full=training/cv4-TwoPathCNN-augmented/fold-$fold
run=training/data-size/fold-$fold-half
mkdir -p "$run"
if [ ! -f "$run/half.txt" ]; then
  # patients, not cases: a scan kept under two names (same_patient_groups) goes in or out as one
  .venv/bin/python - "$full/config.json" "$run/half.txt" <<'PY'
import sys
from pathlib import Path
from BrainTumorCNNLib.learning.sampling import case_name, load_case, same_patient_groups
from BrainTumorCNNLib.learning.training import TrainingConfig
config = TrainingConfig.from_json(open(sys.argv[1]).read())
paths = {case_name(p): p for p in config.train_cases}
cases = [load_case(Path(p), config.preprocessing, Path(config.cache_dir)) for p in paths.values()]
group = {n: tuple(sorted(g)) for g in same_patient_groups(cases) for n in g}
patients = sorted({group.get(n, (n,)) for n in paths})
kept = [paths[n] for names in patients[::2] for n in names]
open(sys.argv[2], "w").write("\n".join(kept) + "\n")
print(f"{len(patients[::2])} of {len(patients)} patients ({len(kept)} cases)")
PY
fi
exec nice -n 10 .venv/bin/braintumorcnn train --config "$full/config.json" --run-dir "$run" \
  --time-limit "$minutes" --quiet $(cat "$run/half.txt")
