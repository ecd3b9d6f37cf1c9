"""Atomic file output: a reader never sees a half-written file, and a failed
write (full disk, kill, cancel) leaves the previous file intact.  Files that
belong together (a case's outputs) are written as a group: all of them appear,
or none."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, List, Sequence, Union

PathLike = Union[str, Path]


@contextlib.contextmanager
def atomic_path(destination: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `destination`; move it into place only if
    the block succeeds, otherwise delete it.  The temporary name keeps the
    destination's suffixes so writers that pick a format by extension work."""
    with atomic_paths([destination]) as (tmp,):
        yield tmp


@contextlib.contextmanager
def atomic_paths(destinations: Sequence[PathLike]) -> Iterator[List[Path]]:
    """Yield temporary paths for files that belong together, as atomic_path
    does for one.  When the block succeeds they are moved into place in the
    order given, so the last one can mark the group complete; when the block
    or a move fails, the temporary files and the files of the group already
    moved are deleted, so no part of the group is left."""
    destinations = [Path(d) for d in destinations]
    temporaries: List[Path] = []
    moved: List[Path] = []
    try:
        for destination in destinations:
            temporaries.append(_temporary(destination))
        yield temporaries
        for tmp, destination in zip(temporaries, destinations):
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes files private; outputs get the usual mode
            os.replace(tmp, destination)
            moved.append(destination)
    except BaseException:
        for destination in moved:
            destination.unlink()
        raise
    finally:
        for tmp in temporaries:
            if tmp.exists():
                tmp.unlink()


def _temporary(destination: Path) -> Path:
    """An empty file beside `destination`, named `.<name>.<random>.part<suffixes>` (batch runs remove
    leftovers of killed runs by that pattern)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(destination.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=f".part{suffix}", dir=destination.parent)
    os.close(fd)
    return Path(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(destination: PathLike, text: str) -> None:
    with atomic_path(destination) as tmp:
        tmp.write_text(text)
