"""Preparing images for the networks: clipping, N4, z-scores; registration."""
