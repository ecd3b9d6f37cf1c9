"""glibc's allocator set up by the program itself for dense inference, so that freed memory is kept
for the next slice instead of being handed back to the kernel.

Why: a slice's large temporary tensors (activations, FFT spectra: tens to hundreds of MB) are
allocated and freed slice after slice.  glibc serves every block above its mmap threshold (at most
32 MB, adjusted as blocks are freed) by a fresh mmap and returns it with munmap on free, and trims
the heap's free top above its trim threshold, so each slice touched fresh zeroed pages again:
millions of minor page faults per case and up to a third of its wall time in the kernel
(issue 35).  Here every block comes from the heap (M_MMAP_THRESHOLD above any tensor of a slice),
the heap keeps up to TRIM_THRESHOLD of free memory at its top (M_TRIM_THRESHOLD, with M_TOP_PAD of
slack per growth), and every thread allocates from the one main heap (M_ARENA_MAX 1): a worker
thread's own arena grows in heaps of at most 64 MB and maps larger blocks afresh whatever the
threshold, and free memory kept per thread raised the peak (2.70 GiB with one arena per thread,
2.12 GiB with one, 1.84 GiB with glibc's defaults on a whole case: docs/speed.md).  Set once per process, by the engine (Segmenter, inference.Runner),
whatever the user's environment says; a no-op where the C library is not glibc.  docs/speed.md
measures it against glibc's defaults.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from typing import Dict

log = logging.getLogger(__name__)

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -2, -3, -8

#: Blocks below this come from the heap, not from mmap: above any temporary tensor of a slice.
MMAP_THRESHOLD = 1 << 30
#: Free memory at the heap's top kept rather than returned to the kernel.
TRIM_THRESHOLD = 1 << 30
#: Extra memory asked of the kernel each time the heap grows.
TOP_PAD = 64 << 20
#: Heaps (arenas) threads allocate from: the main one only.
ARENA_MAX = 1
SETTINGS: Dict[int, int] = {M_ARENA_MAX: ARENA_MAX, M_MMAP_THRESHOLD: MMAP_THRESHOLD,
                            M_TRIM_THRESHOLD: TRIM_THRESHOLD, M_TOP_PAD: TOP_PAD}

_lock = threading.Lock()
_state: Dict[str, bool] = {}


def keep_freed_memory() -> bool:
    """Apply SETTINGS to this process's glibc allocator, once; returns whether they are in effect."""
    with _lock:
        if "applied" not in _state:
            _state["applied"] = _apply()
        return _state["applied"]


def _apply() -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl without mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    applied = all(mallopt(parameter, value) == 1 for parameter, value in SETTINGS.items())
    if not applied:
        log.info("glibc refused the allocator settings %s; freed memory may go back to the kernel", SETTINGS)
    return applied
