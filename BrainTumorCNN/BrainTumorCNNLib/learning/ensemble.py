"""The fold models of a finished cross-validation run as one network: the mean of their probabilities
(nnU-Net ships its folds the same way), EnsembleCNN for a run of TwoPathCNN, CascadeEnsembleCNN for one of
InputCascadeCNN (registry.ensemble_of).

Its card carries the run's held-out scores, each case scored by the one member that never saw it (the
run's per-case table: the ensemble itself was not scored, and every case the run trained on was seen by
all but one member), and names for each member the cases it trained on and those it never saw; the
cases no member saw (`never_seen_by_any_member`, e.g. BRATS 2012 cases, which are never trained on) are
the only ones of the run on which the ensemble as a whole may be scored.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import List, Sequence

from ..network import registry, weights
from ..scoring import shift_scores
from . import crossval


class EnsembleError(ValueError):
    """A run that cannot make an ensemble: not cross-validated, unfinished, or with unlike members."""


def name_of(run_dir: Path) -> str:
    """The registry name of the ensemble `run_dir`'s folds make (by the model its first fold trained)."""
    return _ensemble_spec(run_dir, _member(run_dir)).name


def _member(run_dir: Path) -> str:
    """The registry model the run's first fold trained."""
    return _read(Path(run_dir) / "fold-0" / "config.json", "fold 0 was never started")["model"]


def _ensemble_spec(run_dir: Path, member: str) -> registry.ModelSpec:
    try:
        return registry.ensemble_of(member)
    except ValueError as exc:
        raise EnsembleError(f"{run_dir} trained {member}: {exc}") from None


def assemble(run_dir: Path, output: Path) -> dict:
    """Write `output/<name>.safetensors` + `.json` (name_of) from the folds of the cross-validation run
    `run_dir`; returns the card.  Refuses a run whose folds are not all trained and scored."""
    run_dir = Path(run_dir)
    split_path, summary_path = run_dir / "folds.json", run_dir / "summary.json"
    if not split_path.is_file():
        raise EnsembleError(f"{run_dir} is not a cross-validation run (no folds.json)")
    member = _member(run_dir)
    spec = _ensemble_spec(run_dir, member)
    name = spec.name
    split = json.loads(split_path.read_text())
    folds, cases = int(split["folds"]), sorted(split["cases"])
    members, cards = [], []
    for fold in range(folds):
        fold_dir = run_dir / f"fold-{fold}"
        config = _read(fold_dir / "config.json", f"fold {fold} was never started")
        planned = int(config["phase1_epochs"]) + int(config["phase2_epochs"])
        done = _read(fold_dir / "summary.json", f"fold {fold} has not finished training").get("epoch")
        if done != planned:
            raise EnsembleError(f"fold {fold} of {run_dir} stopped at epoch {done} of {planned}: finish it "
                                "(the same crossval command continues it)")
        if config["model"] != member:
            raise EnsembleError(f"fold {fold} trained {config['model']} where fold 0 trained {member}: an ensemble's "
                                "members share one architecture")
        model, card = weights.load(member, crossval.fold_weights(run_dir, fold))
        members.append(model)
        cards.append(card)
    summary = _read(summary_path, "its folds have not all been scored: run crossval to the end")
    if summary.get("missing"):
        raise EnsembleError(f"{run_dir}: held-out cases never scored: {', '.join(summary['missing'])}")
    for card in cards[1:]:
        for key, what in (("num_classes", "classes"), ("label_scheme", "label scheme")):
            if card[key] != cards[0][key]:
                raise EnsembleError(f"the folds of {run_dir} differ in their {what}")
        if card["config"].get("preprocessing") != cards[0]["config"].get("preprocessing"):
            raise EnsembleError(f"the folds of {run_dir} were trained on differently preprocessed cases")

    ensemble = spec.build(members[0].num_classes, members[0].in_channels, members=folds)
    for slot, fold_model in zip(ensemble.members, members):
        slot.load_state_dict(fold_model.state_dict())
    trained = [sorted(card["train_cases"]) for card in cards]
    rule = crossval.chosen_rule(summary)
    nested = summary.get("cleanup_rule_chosen_by_other_folds")
    if nested is None or "scores" not in nested:
        raise EnsembleError(f"{summary_path} predates the nested choice of the cleanup rule and its per-case "
                            "scores: rerun the run's crossval command with --only-folds (no fold) to summarise it "
                            "again")
    # the figure of what ships: the models cleaned with the rule the card carries, each fold's choice of it
    # made on the other folds' cases
    scored, left_out = crossval.split_means(crossval.held_out_rows(run_dir, chosen_rule=True))
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    card = {
        "description": spec.description,
        "paper": "Havaei et al., Brain Tumor Segmentation with Deep Neural Networks, Medical Image Analysis 35 (2017)",
        "label_scheme": cards[0]["label_scheme"],
        "classes": cards[0]["classes"],
        "receptive_field": spec.receptive_field,
        "members": [{"fold": fold, "architecture": member, "sha256": card["sha256"], "steps": card.get("steps"),
                     "trained_on": names, "never_saw": sorted(set(cases) - set(names))}
                    for fold, (card, names) in enumerate(zip(cards, trained))],
        "never_seen_by_any_member": sorted(set(cases) - {n for names in trained for n in names}),
        "cleanup": {
            "rule": rule, **crossval.CLEANUP_RULES[rule].card_fields(),
            "chosen": ("of the cleanup rules a model may carry (crossval.MODEL_RULES), the one with the best mean "
                       "Dice over the held-out cases; chosen for each fold on the other folds' cases instead, the rules "
                       + "; ".join(f"fold {f}: {n}" for f, n in nested["rule_of_fold"].items())
                       + " give the Dice in dice_chosen_on_other_folds"),
            "dice_chosen_on_other_folds": {k.replace("dice_", ""): round(v["mean"], 4)
                                           for k, v in nested["dice"].items()},
        },
        "training": {
            "run": str(run_dir),
            "wall_s": round(sum(float(card.get("training_wall_s") or 0.0) for card in cards), 1),
            "config": cards[0]["config"],
        },
        "validation": {
            "protocol": (f"{folds}-fold cross-validation by case (fold seed {split['seed']}): each case segmented "
                         "whole through `braintumorcnn segment`'s pipeline by the member that never saw it and "
                         "cleaned with the rule its fold chose on the other folds' cases (the rule this card "
                         "carries, as `segment` applies it); mean (sd) over the held-out cases. The ensemble "
                         "itself is not scored here."),
            "folds": folds,
            "fold_seed": split["seed"],
            "cases": [r["case"] for r in scored],
            **crossval.by_metric(nested["scores"], "mean"),
            "sd": crossval.by_metric(nested["scores"], "sd"),
            "per_case": scored,
            **({"left_out": left_out} if left_out else {}),
        },
        "assembled": time.strftime("%Y-%m-%d"),
    }
    shifts = site_shifts_of(run_dir, card["validation"]["cases"])
    if shifts:
        card["validation"]["site_shifts"] = shifts
    return weights.save(ensemble, name, output / f"{name}.safetensors", card)


def site_shifts_of(run_dir: Path, cases: Sequence[str]) -> dict:
    """The card's summary of the run's site-shift benchmark (`robustness --run RUN_DIR`, its robustness.csv
    kept in the run's folder) over `cases` (those of the card's Dice: a patient's second scan is left out
    as there), or {} where there is none; refuses rows that scored the run's folds with another cleanup
    rule than the one the card carries."""
    path = run_dir / shift_scores.CSV_NAME
    rows = [row for row in shift_scores.read_rows(path) if row["case"] in set(cases)]
    if not rows:
        return {}
    label, _ = crossval.held_out_rule(run_dir)
    stale = sorted({row["model"] for row in rows} - {label})
    if stale:
        raise EnsembleError(f"{path} scores {'; '.join(stale)}, not the run as it is now ({label}): run "
                            f"`braintumorcnn robustness --run {run_dir}` again into a new folder and put its "
                            f"{shift_scores.CSV_NAME} here")
    slices = {row.get("slices") for row in rows}
    what = (f"a {slices.pop()}-slice slab through the tumor's largest cross-section" if len(slices) == 1
            else "the whole volume or a slab through the tumor's largest cross-section")
    return {"protocol": (f"`braintumorcnn robustness --run` on the run's cases: each case ({what}) under "
                         "each site shift applied to the raw images, segmented by the member that never saw "
                         "it and cleaned with this card's rule; change = shifted minus clean Dice, paired per "
                         "case, mean over the cases"),
            **shift_scores.card_summary(rows)}


def member_names(card: dict) -> List[str]:
    """One line per member: its fold and the cases it never saw."""
    return [f"fold {m['fold']}: never saw {', '.join(m['never_saw'])}" for m in card["members"]]


def _read(path: Path, why: str) -> dict:
    if not path.is_file():
        raise EnsembleError(f"{path} is missing: {why}")
    return json.loads(path.read_text())
