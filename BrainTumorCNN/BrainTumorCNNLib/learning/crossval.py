"""Cross-validation by case: K folds fixed by a seed and mixing releases (sites), one training per fold,
every held-out case segmented whole through the pipeline `segment` runs, per-case and mean +- sd scores.

Layout of a run folder (each step resumes where a previous run stopped):

    cache/            preprocessed cases (sampling's cache; portable to a machine without SimpleITK)
    folds.json        the fold of every case (kept: a rerun with other cases or seed is refused)
    fold-K/           the training run of fold K (training.train) and
    fold-K/predictions/<case>.npz   its held-out cases' labels before cleanup (cropped, uint8)
    per_case.csv      scores of every held-out case, with its fold and release
    summary.json      mean and sd of every score, the cleanup rules compared (and each fold's rule chosen
                      on the other folds' cases), the settings

Cases whose truth lacks the enhancing / non-enhancing split (BRATS 2012) are
never trained on; they are held out in their fold and scored on the regions
their truth has.

The same scan often comes in several releases under other names (BraTS 2023's
BraTS-GLI-00000-000 is BraTS2021_00000, voxel for voxel).  Such cases are found
by their images (`sampling.same_patient_groups`) and dealt into one fold (and
kept together when a fold's inner validation cases are drawn).  A run whose
split was made without that grouping keeps its split; a held-out case whose
same-patient twin was trained on in its fold is scored (column `twin_trained`)
but left out of the means, and of twins held out together only the first by
name counts (the others name it in column `same_patient_scored`): the means are
over patients.
"""
from __future__ import annotations

import csv
import json
import re
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import labels
from ..atomic import atomic_path, write_text
from ..modalities import MODALITIES
from ..network import weights
from ..running.pipeline import SegmentationOptions, segment_preprocessed
from ..running.postprocessing import CleanupConfig, postprocess
from ..scoring import metrics, tables
from . import training
from .sampling import CachedCase, load_case, same_patient_groups

#: Cleanup rules compared on the held-out predictions (cheap: the network runs once per case), the
#: gentler first: a tie in `nested_rule_choice` goes to the earlier.
CLEANUP_RULES: Dict[str, Optional[CleanupConfig]] = {
    "none": None,
    "small+flat (default)": CleanupConfig(),
    "small+flat+within 10 mm of largest or over 1/4 of it": CleanupConfig(max_distance_mm=10.0,
                                                                          distant_max_share=0.25),
    "small+flat+within 20 mm of largest": CleanupConfig(max_distance_mm=20.0),
    "small+flat+within 10 mm of largest": CleanupConfig(max_distance_mm=10.0),
    "small+flat+largest only": CleanupConfig(keep_largest_only=True),
}

#: The rules a model's card may carry, so that `segment` applies them by default: those that remove no
#: expert-labelled tumor of ../shared/data (test_crossval checks it on the truth). "Within 10 mm" removes
#: the second focus of BraTS2021_00009 (12.6 mL, 18-20 mm from the first), "largest only" too.
COMPONENT_MODEL_RULES = ("small+flat (default)", "small+flat+within 10 mm of largest or over 1/4 of it",
                         "small+flat+within 20 mm of largest")
#: Edema growths (postprocessing.grow_edema) a card may add to those rules: the share of the way from the
#: brain's median FLAIR to the edema's, mm from the tumor (docs/accuracy.md: 0.4-0.5 within 2 mm gained as
#: much as any fixed height on the 20 patients and held under fainter lesions).
EDEMA_GROWTHS = ((0.4, 2.0), (0.5, 2.0))


def growth_name(share: float, mm: float) -> str:
    """How a rule's name states its edema growth (CleanupConfig.edema_flair_share, edema_growth_mm)."""
    return f"FLAIR {share:.0%} up to the edema's, {mm:g} mm"


GROWN_RULES = {f"{name.replace(' (default)', '')}+edema grown ({growth_name(share, mm)})":
               replace(CLEANUP_RULES[name], edema_flair_share=share, edema_growth_mm=mm)
               for name in COMPONENT_MODEL_RULES for share, mm in EDEMA_GROWTHS}
CLEANUP_RULES.update(GROWN_RULES)
MODEL_RULES = COMPONENT_MODEL_RULES + tuple(GROWN_RULES)

RELEASES = ((r"^BraTS-GLI-", "BraTS 2023"), (r"^BraTS2021_", "BraTS 2021"), (r"^BraTS20_", "BraTS 2020"),
            (r"^Brats18_", "BraTS 2018"), (r"^BRATS_|^HG|^LG", "BRATS 2012/2013"))


def release(name: str) -> str:
    """The release (and so the site pool) a case comes from, from its BraTS name; "other" otherwise."""
    return next((label for pattern, label in RELEASES if re.search(pattern, name)), "other")


def assign_folds(names: Sequence[str], folds: int, seed: int,
                 same_patient: Sequence[Sequence[str]] = ()) -> Dict[str, int]:
    """Fold of every case: cases shuffled within their release, then dealt round-robin over the folds
    (the deal continues from release to release), so every fold mixes releases and sizes differ by one.
    Each group of `same_patient` is dealt as one case (by its first name) into one fold."""
    first = {n: n for n in names}
    for group in same_patient:
        for name in group:
            first[name] = min(group)
    units = sorted(set(first.values()))
    if folds < 2 or folds > len(units):
        raise ValueError(f"--folds must be between 2 and the number of different patients ({len(units)}), "
                         f"not {folds}")
    rng = np.random.default_rng(seed)
    fold_of, turn = {}, 0
    for group in sorted({release(n) for n in units}):
        for unit in rng.permutation(sorted(n for n in units if release(n) == group)):
            fold_of[str(unit)] = turn % folds
            turn += 1
    return {name: fold_of[first[name]] for name in names}


def _std(values: List[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def mean_sd(rows: Sequence[dict]) -> Dict[str, Dict[str, float]]:
    """{score: {"mean", "sd", "n"}} over the rows that have it."""
    out = {}
    for key in metrics.summarize(rows):
        values = [float(r[key]) for r in rows if r.get(key) not in (None, "") and not np.isnan(float(r[key]))]
        out[key] = {"mean": float(np.mean(values)), "sd": _std(values), "n": len(values)}
    return out


def score(case: CachedCase, predicted: np.ndarray, rule: Optional[CleanupConfig]) -> dict:
    """BraTS scores of a cropped prediction (before cleanup) after `rule`, on the case's full grid."""
    cleaned = predicted if rule is None else postprocess(predicted, case.spacing, rule,
                                                         case.images[MODALITIES.index("FLAIR")], case.brain)[0]
    scores = metrics.evaluate_case(case.uncrop(cleaned), case.uncrop(case.truth), case.spacing, case.regions)
    return scores.as_row()


def run(cases: Sequence[Path], folds: int, run_dir: Path, config: training.TrainingConfig,
        options: SegmentationOptions, seed: int = 0, inner_validation: int = 0,
        only_folds: Optional[Sequence[int]] = None, base_runs: Optional[Dict[str, Path]] = None,
        progress: bool = True, validate_held_out: bool = False, deadline: Optional[float] = None) -> dict:
    """Train and evaluate every fold (resuming), then write per_case.csv and summary.json.

    `base_runs` maps a weights field of TrainingConfig (`first_weights` of a cascade, `start_weights` of a
    further stage, `local_weights` / `global_weights` of AverageCNN) to an earlier cross-validation run on the
    same folds: each fold builds on the weights that run's same fold kept, which never saw the fold's held-out
    cases.

    `validate_held_out`: each fold's validation curve is drawn on its held-out cases (with
    `config.keep == "last"`, so no weights are chosen on them).  Past `deadline` the fold in training
    stops with a checkpoint and the run returns {"stopped": "deadline", ...}: the same call continues.
    """
    say = print if progress else (lambda *a, **k: None)
    run_dir.mkdir(parents=True, exist_ok=True)
    cache = Path(config.cache_dir) if config.cache_dir else run_dir / "cache"
    loaded = []
    for i, path in enumerate(cases):
        say(f"[{i + 1}/{len(cases)}] preparing {Path(path).name}", flush=True)
        loaded.append(load_case(Path(path), config.preprocessing, cache))
    by_name = {c.name: c for c in loaded}
    if len(by_name) != len(loaded):
        raise ValueError("two cases share a name; cross-validation needs one name per case")
    sources = {c.name: str(p) for c, p in zip(loaded, cases)}
    same_patient = same_patient_groups(loaded)
    for group in same_patient:
        say(f"same patient (identical images): {', '.join(group)}", flush=True)
    fold_of = _folds(run_dir / "folds.json", sorted(by_name), folds, seed, same_patient)
    twins = _twins_trained(fold_of, same_patient, by_name)
    for name, twin in twins.items():
        say(f"warning: this run's split holds out {name} in fold {fold_of[name]} while training on {twin}, "
            f"the same patient: {name} is scored but left out of the means", flush=True)
    split = (run_dir / "folds.json").read_text()
    for base in (base_runs or {}).values():
        if not (base / "folds.json").is_file() or json.loads((base / "folds.json").read_text()) != json.loads(split):
            raise ValueError(f"{base} is not a cross-validation run of these cases on the same folds")
    all_rows, elsewhere = [], []
    for fold in range(folds):
        held_out = sorted(n for n, f in fold_of.items() if f == fold)
        if only_folds is not None and fold not in only_folds:
            elsewhere.append(fold)
            continue
        trainable = sorted(n for n, f in fold_of.items() if f != fold and by_name[n].trainable)
        rng = np.random.default_rng([seed, fold])
        validation = (held_out if validate_held_out
                      else _inner_validation(trainable, inner_validation, same_patient, rng))
        fold_dir = run_dir / f"fold-{fold}"
        built_on = {name: str(fold_weights(base, fold)) for name, base in (base_runs or {}).items()}
        fold_config = replace(config, train_cases=[sources[n] for n in trainable if n not in validation],
                              validation_cases=[sources[n] for n in validation], cache_dir=str(cache),
                              seed=config.seed + fold, **built_on)
        say(f"fold {fold} ({fold + 1} of {folds}): training on {len(fold_config.train_cases)} cases, "
            f"holding out {', '.join(held_out)}", flush=True)
        if _train(fold_config, fold_dir, progress, deadline).get("stopped"):
            return {"stopped": "deadline", "fold": fold}
        all_rows += _evaluate(fold, fold_dir, [by_name[n] for n in held_out], config.model, options, say,
                              config.keep)
    # the other folds' scores are read last: a fold run at the same time by another process counts once done
    for fold in elsewhere:
        rows = _read_rows(run_dir / f"fold-{fold}" / "per_case.csv")
        if not rows:
            say(f"fold {fold} ({fold + 1} of {folds}) has no scores yet: its cases are missing from this summary "
                "(run the same command with --only-folds and no fold once every fold is done)", flush=True)
        all_rows += rows
    repeats = _repeats(fold_of, same_patient, twins)
    for row in all_rows:
        row["twin_trained"] = twins.get(row["case"], "")
        row["same_patient_scored"] = repeats.get(row["case"], "")
    result = _summarise(run_dir, all_rows, by_name, fold_of, config, options, folds, seed)
    say(format_summary(result), flush=True)
    return result


def held_out_folds(run_dir: Path) -> Dict[str, int]:
    """{case name: the fold that holds it out} of a cross-validation run."""
    path = run_dir / "folds.json"
    if not path.is_file():
        raise ValueError(f"{run_dir} is not a cross-validation run (no folds.json)")
    return {name: int(fold) for name, fold in json.loads(path.read_text())["cases"].items()}


def held_out_rule(run_dir: Path) -> Tuple[str, CleanupConfig]:
    """How `robustness --run` names a run's held-out models in its rows, and their cleanup: the run's
    folder name, with the rule the run chose (`chosen_rule`) where it is not the default cleanup, so that
    rows scored before the run's rule changed are told apart (learning/ensemble.py refuses them)."""
    summary, default = run_dir / "summary.json", SegmentationOptions().cleanup
    rule = chosen_rule(json.loads(summary.read_text())) if summary.is_file() else None
    cleanup = CLEANUP_RULES[rule] if rule is not None else default
    return Path(run_dir).resolve().name + (f", cleanup {rule}" if cleanup != default else ""), cleanup


def _folds(path: Path, names: List[str], folds: int, seed: int,
           same_patient: Sequence[Sequence[str]]) -> Dict[str, int]:
    """The run's split: the saved one when the run exists (also when it was dealt before same-patient
    grouping: a resumed run keeps the split its folds were trained on), a new one otherwise."""
    if path.is_file():
        saved = json.loads(path.read_text())
        if (saved.get("folds"), saved.get("seed"), sorted(saved.get("cases", {}))) != (folds, seed, sorted(names)):
            raise ValueError(f"{path.parent} holds a cross-validation of other cases, folds or seed; "
                             "use a new --run-dir")
        return saved["cases"]
    wanted = assign_folds(names, folds, seed, same_patient)
    write_text(path, json.dumps({"folds": folds, "seed": seed, "cases": wanted}, indent=2))
    return wanted


def _inner_validation(trainable: List[str], count: int, same_patient: Sequence[Sequence[str]],
                      rng: np.random.Generator) -> List[str]:
    """`count` patients drawn from a fold's trainable cases for early stopping, each with all its
    same-patient cases (a twin left in training would make validation score what it trained on)."""
    if not count:
        return []
    group_of = {name: sorted(g) for g in same_patient for name in g}
    units = sorted({tuple(group_of.get(n, [n])) for n in trainable})
    drawn = rng.choice(len(units), size=count, replace=False)
    return sorted(n for i in drawn for n in units[i] if n in trainable)


def _twins_trained(fold_of: Dict[str, int], same_patient: Sequence[Sequence[str]],
                   by_name: Dict[str, CachedCase]) -> Dict[str, str]:
    """{held-out case: a same-patient case its fold trained on}: scores that saw the answer."""
    out = {}
    for group in same_patient:
        for name in group:
            trained = [m for m in group if fold_of[m] != fold_of[name] and by_name[m].trainable]
            if trained:
                out[name] = trained[0]
    return out


def _repeats(fold_of: Dict[str, int], same_patient: Sequence[Sequence[str]],
             twins: Dict[str, str]) -> Dict[str, str]:
    """{held-out case: the same-patient case held out in the same fold that the means count instead}."""
    out = {}
    for group in same_patient:
        for fold in {fold_of[name] for name in group}:
            together = sorted(name for name in group if fold_of[name] == fold and name not in twins)
            out.update({name: together[0] for name in together[1:]})
    return out


def in_means(row: dict) -> bool:
    """Whether a per-case row counts in the run's means: one row per patient, none whose fold saw it."""
    return not (row.get("twin_trained") or row.get("same_patient_scored"))


def left_out_reason(row: dict) -> str:
    """Why a row is not in the means ('' when it is)."""
    if row.get("twin_trained"):
        return f"its fold trained on {row['twin_trained']}, the same patient"
    if row.get("same_patient_scored"):
        return f"the same patient as {row['same_patient_scored']}, counted once"
    return ""


def split_means(rows: Sequence[dict]) -> Tuple[List[dict], List[dict]]:
    """The per-case rows the means count, and the others, each with its `reason` (what a card lists)."""
    return ([r for r in rows if in_means(r)],
            [dict(r, reason=left_out_reason(r)) for r in rows if not in_means(r)])


def fold_weights(base: Path, fold: int) -> Path:
    """The weights fold `fold` of the cross-validation run `base` kept (best or last, as its config says):
    the model that never saw that fold's held-out cases."""
    config = base / f"fold-{fold}" / "config.json"
    keep = json.loads(config.read_text()).get("keep", "best") if config.is_file() else "best"
    path = base / f"fold-{fold}" / f"{keep}.safetensors"
    if not path.is_file():
        raise ValueError(f"{path} is missing: run fold {fold} of {base} first")
    return path


def _train(config: training.TrainingConfig, fold_dir: Path, progress: bool, deadline: Optional[float]) -> dict:
    """Train the fold, unless its run finished before (a rerun goes straight to evaluation)."""
    summary_path = fold_dir / "summary.json"
    total = config.phase1_epochs + config.phase2_epochs
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        if summary.get("epoch") == total:
            return summary
    return training.train(config, fold_dir, progress=progress, deadline=deadline)


def _evaluate(fold: int, fold_dir: Path, cases: List[CachedCase], model_name: str,
              options: SegmentationOptions, say, keep: str = "best") -> List[dict]:
    """Segment every held-out case (kept in predictions/, so a rerun only scores) and score it."""
    path = fold_dir / "per_case.csv"
    done = {r["case"]: r for r in _read_rows(path)}
    model, card = weights.load(model_name, fold_dir / f"{keep}.safetensors", device="cpu")
    predictions = fold_dir / "predictions"
    predictions.mkdir(exist_ok=True)
    for i, case in enumerate(cases):
        if case.name in done:
            continue
        stored = predictions / f"{case.name}.npz"
        started = time.time()
        if stored.is_file():
            with np.load(stored, allow_pickle=False) as data:
                predicted = data["labels"]
        else:
            result = segment_preprocessed(model, model_name, card, case.images.astype(np.float32), case.brain,
                                          case.spacing, replace(options, cleanup=None))
            predicted = result.labels
            _save_npz(stored, labels=predicted)
        row = {"fold": fold, "case": case.name, "release": release(case.name),
               **score(case, predicted, options.cleanup), "seconds": round(time.time() - started, 1)}
        done[case.name] = row
        _write_rows(path, list(done.values()))
        say(f"  fold {fold}: {case.name} ({i + 1}/{len(cases)}) Dice "
            + " / ".join(f"{row.get('dice_' + r, float('nan')):.3f}" for r in labels.REGIONS), flush=True)
    return [done[case.name] for case in cases]


def _summarise(run_dir: Path, rows: List[dict], by_name: Dict[str, CachedCase], fold_of: Dict[str, int],
               config: training.TrainingConfig, options: SegmentationOptions, folds: int, seed: int) -> dict:
    rows = sorted(rows, key=lambda r: (int(r["fold"]), r["case"]))
    _write_rows(run_dir / "per_case.csv", rows)
    left_out = {r["case"]: r["twin_trained"] for r in rows if r.get("twin_trained")}
    repeated = {r["case"]: r["same_patient_scored"] for r in rows if r.get("same_patient_scored")}
    kept = [r for r in rows if in_means(r)]
    scored = {name: [] for name in CLEANUP_RULES}
    for row in kept:
        stored = run_dir / f"fold-{row['fold']}" / "predictions" / f"{row['case']}.npz"
        with np.load(stored, allow_pickle=False) as data:
            for name, rule in CLEANUP_RULES.items():
                scored[name].append(score(by_name[row["case"]], data["labels"], rule))
    rules = {name: _dice(rows_of) for name, rows_of in scored.items()}
    chosen = nested_rule_choice([int(r["fold"]) for r in kept], {name: scored[name] for name in MODEL_RULES})
    nested = [dict(row, **scored[chosen[int(row["fold"])]][i], cleanup=chosen[int(row["fold"])])
              for i, row in enumerate(kept)]
    _write_rows(run_dir / NESTED_CSV, nested)
    missing = sorted(set(fold_of) - {r["case"] for r in rows})
    result = {
        "model": config.model, "folds": folds, "seed": seed, "cases": len(kept), "missing": missing,
        "left_out_same_patient_trained": left_out, "left_out_same_patient_repeated": repeated,
        "scores": mean_sd(kept), "cleanup_rules": rules,
        "cleanup_rule_chosen_by_other_folds": {
            "rule_of_fold": {str(f): name for f, name in chosen.items()},
            "dice": _dice(nested), "scores": mean_sd(nested), "per_case": NESTED_CSV},
        "training": {k: v for k, v in asdict(config).items() if k not in ("train_cases", "validation_cases")},
        "inference": {"flips": options.flips, "cleanup": asdict(options.cleanup) if options.cleanup else None},
        "train_seconds_per_fold": [_wall(run_dir / f"fold-{f}") for f in range(folds)],
    }
    write_text(run_dir / "summary.json", json.dumps(result, indent=2))
    return result


#: Per case, the scores with the cleanup rule its fold chose on the other folds' cases: the honest figure of
#: shipping the run's models with the rule their cards carry.
NESTED_CSV = "per_case_chosen_rule.csv"


def _dice(rows: Sequence[dict]) -> Dict[str, Dict[str, float]]:
    return {k: v for k, v in mean_sd(rows).items() if k.startswith("dice_")}


def nested_rule_choice(folds: Sequence[int], scored: Dict[str, List[dict]]) -> Dict[int, str]:
    """For each fold, the cleanup rule with the best mean Dice (mean of the regions' means) over the
    other folds' held-out cases (a tie: the earlier in `scored`): the rule's figure on the fold's own cases
    is then not chosen on them.
    `scored[rule][i]` is the scores of the i-th case, held out by fold `folds[i]`."""
    return {fold: max(scored, key=lambda name: rule_merit(_dice([row for row, f in zip(scored[name], folds)
                                                                 if f != fold])))
            for fold in sorted(set(folds))}


def rule_merit(dice: Dict[str, Dict[str, float]]) -> float:
    """What ranks cleanup rules: the mean of the regions' mean Dice ({"dice_complete": {"mean": ...}, ...})."""
    means = [v["mean"] for v in dice.values()]
    return float(np.mean(means)) if means else float("-inf")


def chosen_rule(summary: dict) -> str:
    """The rule of MODEL_RULES with the best mean Dice over every held-out case of a run's summary (a tie:
    the gentler); `summary["cleanup_rule_chosen_by_other_folds"]` is the honest figure of choosing so."""
    rules = summary["cleanup_rules"]
    return max((name for name in MODEL_RULES if name in rules), key=lambda name: rule_merit(rules[name]))


def _wall(fold_dir: Path) -> Optional[float]:
    path = fold_dir / "summary.json"
    return round(json.loads(path.read_text())["wall_s"], 1) if path.is_file() else None


def format_summary(result: dict) -> str:
    scores = result["scores"]
    lines = [f"{result['model']}: {result['cases']} held-out cases, {result['folds']} folds (seed {result['seed']})"]
    lines += [f"  left out of the means: {case} (its fold trained on {twin}, the same patient)"
              for case, twin in result.get("left_out_same_patient_trained", {}).items()]
    lines += [f"  left out of the means: {case} (the same patient as {twin}, counted once)"
              for case, twin in result.get("left_out_same_patient_repeated", {}).items()]
    lines += _metric_lines(scores, "  ")
    width = max(map(len, result["cleanup_rules"]))
    for name, dice in result["cleanup_rules"].items():
        lines.append(f"  cleanup {name:{width}s} Dice " + " / ".join(f"{v['mean']:.3f}" for v in dice.values()))
    if "cleanup_rule_chosen_by_other_folds" in result:
        chosen = result["cleanup_rule_chosen_by_other_folds"]
        lines.append("  cleanup rule a model may carry, chosen for each fold on the other folds' cases: Dice "
                     + " / ".join(f"{v['mean']:.3f}" for v in chosen["dice"].values()) + " ("
                     + "; ".join(f"fold {f}: {name}" for f, name in chosen["rule_of_fold"].items()) + ")")
        lines += _metric_lines(chosen.get("scores", {}), "    ")
    return "\n".join(lines)


def _metric_lines(scores: Dict[str, Dict[str, float]], indent: str) -> List[str]:
    """One line per metric the scores hold: mean ± sd per region."""
    lines = []
    for metric in metrics.METRICS:
        cells = [f"{scores[k]['mean']:.3f} ± {scores[k]['sd']:.3f}" for r in labels.REGIONS
                 if (k := f"{metric}_{r}") in scores]
        if cells:
            lines.append(f"{indent}{metric:12s} " + " / ".join(cells) + "   (complete / core / enhancing)")
    return lines


def by_metric(scores: Dict[str, Dict[str, float]], stat: str) -> Dict[str, Dict[str, float]]:
    """{metric: {region: value}} of a run's summary scores ({"dice_complete": {"mean", "sd"}, ...}),
    `stat` of each, to 4 digits: the form a model card holds them in."""
    return {metric: {region: round(scores[key][stat], 4) for region in labels.REGIONS
                     if (key := f"{metric}_{region}") in scores} for metric in metrics.METRICS}


def held_out_rows(run_dir: Path, chosen_rule: bool = False) -> List[dict]:
    """The run's per-case table (per_case.csv; with `chosen_rule`, NESTED_CSV), numbers as numbers (None
    where a region has no truth)."""
    text = ("case", "release", "twin_trained", "same_patient_scored", "cleanup")
    table = NESTED_CSV if chosen_rule else "per_case.csv"
    return [{k: (v if k in text else (float(v) if v not in ("", None) else None)) for k, v in row.items()}
            for row in _read_rows(Path(run_dir) / table) if row["case"] != "mean"]


def _save_npz(path: Path, **arrays) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)


def _read_rows(path: Path) -> List[dict]:
    if not path.is_file():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def _write_rows(path: Path, rows: List[dict]) -> None:
    tables.write_csv(path, rows, mean=False)
