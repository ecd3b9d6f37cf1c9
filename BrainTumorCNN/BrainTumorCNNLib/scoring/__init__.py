"""Scoring segmentations against ground truth (BraTS metrics and their tables) and measuring them
(the bidimensional measure; a prior scan compared with the current one)."""
