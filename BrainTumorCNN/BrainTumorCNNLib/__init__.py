"""BrainTumorCNN engine: Havaei et al. (2017) brain tumor segmentation, usable
without the Slicer application."""
__version__ = "0.1.0"
