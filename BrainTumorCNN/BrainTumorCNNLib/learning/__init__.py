"""Training: the loop, the case cache and window sampling, augmentation, cross-validation."""
