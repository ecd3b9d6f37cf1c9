"""Synthetic cases made from numbers, not patient data: the phantom (a four-modality case with its
ground truth) and the healthy anatomy it is built from, for the demo, the tests and the benchmarks."""
