"""Atomic file output: a reader never sees a half-written file, and a failed
write (full disk, kill, cancel) leaves the previous file intact."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Union


@contextlib.contextmanager
def atomic_path(destination: Union[str, Path]) -> Iterator[Path]:
    """Yield a temporary path beside `destination`; move it into place only if
    the block succeeds, otherwise delete it.  The temporary name keeps the
    destination's suffixes so writers that pick a format by extension work."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(destination.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=f".part{suffix}", dir=destination.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes files private; outputs get the usual mode
        os.replace(tmp_path, destination)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(destination: Union[str, Path], text: str) -> None:
    with atomic_path(destination) as tmp:
        tmp.write_text(text)
