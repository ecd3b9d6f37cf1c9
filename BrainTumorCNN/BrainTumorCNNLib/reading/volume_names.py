"""Which MRI sequence a volume is, from its name, so the Slicer module can
pre-select its four inputs (T1, T1c, T2, FLAIR) the way files are named:

- BraTS 2017-2021: `BraTS2021_00000_t1`, `_t1ce`, `_t2`, `_flair`;
- BraTS 2023: `BraTS-GLI-00000-000-t1n`, `-t1c`, `-t2w`, `-t2f`;
- MSD Task01 channels: `FLAIR`, `T1w`, `t1gd`, `T2w`;
- BRATS 2012/2013: `VSD.Brain.XX.O.MR_T1c.54514`, `..._Flair...`;
- scanner-style names: `T1 post gad`, `T1+C`, `t1_mprage_pre`, `T2 FLAIR`, `ax t2 tse`.

A name is split into lower-case words at every non-alphanumeric character;
a name matching no sequence, or two (`t1 t2`), is left unassigned (None).
Names of label maps and of this module's own outputs are never inputs.
"""
from __future__ import annotations

import re
from typing import Dict, List, Optional, Sequence, Tuple

from ..modalities import MODALITIES

_T1C_WORD = re.compile(r"t1w?(c|ce|gd|gad|post|postcontrast|contrast|enhanced)+")
_T1_WORD = re.compile(r"t1w?|t1n|t1native|t1pre")
_T2_WORD = re.compile(r"t2w?")
_FLAIR_WORD = re.compile(r"t2f|.*flair.*")
#: Words that turn a T1 name into a post-contrast T1 (`T1 post gad`, `T1+C`).
_CONTRAST_WORDS = frozenset({"c", "ce", "gd", "gad", "gado", "gadolinium", "post", "postcontrast", "contrast",
                             "enhanced"})
_PRE_CONTRAST_WORDS = frozenset({"pre", "precontrast", "native"})
#: Words of names that are not MRI inputs: label maps, masks, this module's outputs.
_NOT_INPUT_WORDS = frozenset({"seg", "segmentation", "label", "labels", "labelmap", "mask", "probability"})


def _words(name: str) -> List[str]:
    return [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]


def modality_of_word(word: str) -> Optional[str]:
    """The sequence one lower-case word names (`t1ce`, `t2w`, `flair`, ...), else None; file names (io) use it too."""
    for modality, pattern in (("FLAIR", _FLAIR_WORD), ("T1c", _T1C_WORD), ("T1", _T1_WORD), ("T2", _T2_WORD)):
        if pattern.fullmatch(word):
            return modality
    return None


def _classify(name: str) -> Tuple[Optional[str], Tuple[str, ...]]:
    """(modality or None, the name's other words: what identifies the case)."""
    words = _words(name)
    if _NOT_INPUT_WORDS.intersection(words):
        return None, ()
    found = {w: modality_of_word(w) for w in words}
    modalities = {m for m in found.values() if m}
    if modalities == {"T1"} and _CONTRAST_WORDS.intersection(words) and not _PRE_CONTRAST_WORDS.intersection(words):
        modalities = {"T1c"}
    if modalities == {"T2", "FLAIR"}:  # "T2 FLAIR" is a FLAIR
        modalities = {"FLAIR"}
    if len(modalities) != 1:
        return None, ()
    case = tuple(w for w in words if not found[w] and w not in _CONTRAST_WORDS | _PRE_CONTRAST_WORDS)
    return modalities.pop(), case


def guess_modality(name: str) -> Optional[str]:
    """The sequence ("T1", "T1c", "T2" or "FLAIR") a volume name says, or None
    when it says none or more than one."""
    return _classify(name)[0]


def assign(names: Sequence[str]) -> Dict[str, str]:
    """Pick an input volume for each sequence from volume names in scene order
    (oldest first); returns {modality: name} for the sequences it could pick.

    With one case loaded, each sequence gets its only candidate.  With
    several, names are grouped by case (the name without its sequence words)
    and the group with the most sequences wins, the most recently loaded on a
    tie.  A sequence with two candidates in the winning group stays unassigned:
    better an empty selector than a wrong guess."""
    groups: Dict[Tuple[str, ...], Dict[str, List[str]]] = {}
    last_seen: Dict[Tuple[str, ...], int] = {}
    for order, name in enumerate(names):
        modality, case = _classify(name)
        if modality is not None:
            groups.setdefault(case, {}).setdefault(modality, []).append(name)
            last_seen[case] = order
    if not groups:
        return {}
    by_modality: Dict[str, List[str]] = {}
    for group in groups.values():
        for modality, candidates in group.items():
            by_modality.setdefault(modality, []).extend(candidates)
    if all(len(c) == 1 for c in by_modality.values()):
        chosen = by_modality
    else:
        chosen = groups[max(groups, key=lambda case: (len(groups[case]), last_seen[case]))]
    return {m: chosen[m][0] for m in MODALITIES if len(chosen.get(m, ())) == 1}
