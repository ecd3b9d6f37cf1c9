"""The engine sets glibc's allocator up itself (running/allocator.py): a slice-sized tensor comes from the
heap and its memory, once freed, stays there for the next slice instead of being unmapped and mapped
afresh (each fresh page a minor page fault, zeroed by the kernel).  Observed through glibc's own
accounting (mallinfo2) in fresh processes, with and without the engine's set-up."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: In a fresh process: glibc's accounting while a 200 MB tensor is held and after it is freed, with or
#: without the engine's set-up (a Runner) first.
CHILD = """
import ctypes, json, sys
import torch
if sys.argv[1] == "engine":
    from BrainTumorCNNLib.network import networks
    from BrainTumorCNNLib.running import inference
    inference.Runner(networks.LocalPathCNN(num_classes=4), torch.device("cpu"), True, 1 << 30, None)

class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
block = torch.ones(50 << 20)  # 200 MB, a large activation of a slice
held = libc.mallinfo2()
del block
freed = libc.mallinfo2()
print(json.dumps({"mapped_while_held": held.hblkhd, "heap_after_free": freed.arena}))
"""


def _accounting(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator (Linux)")
def test_the_engine_keeps_freed_memory_for_the_next_slice():
    size = 200 << 20
    plain, engine = _accounting("plain"), _accounting("engine")
    # glibc's default: the block is mapped on its own and unmapped on free, the heap stays small
    assert plain["mapped_while_held"] >= size and plain["heap_after_free"] < size
    # the engine's set-up: the block comes from the heap, which keeps it once freed
    assert engine["mapped_while_held"] < size and engine["heap_after_free"] >= size
