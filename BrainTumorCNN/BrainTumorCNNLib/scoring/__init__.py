"""Scoring segmentations against ground truth: BraTS metrics and their tables."""
