"""Segmenting a case: dense inference, cleanup, the pipeline end to end, the GUI's worker task."""
