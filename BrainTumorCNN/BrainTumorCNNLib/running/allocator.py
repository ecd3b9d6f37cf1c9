"""glibc's allocator set up by the program for dense inference (placeholder, measured below)."""
from __future__ import annotations


def keep_freed_memory() -> bool:
    return False
