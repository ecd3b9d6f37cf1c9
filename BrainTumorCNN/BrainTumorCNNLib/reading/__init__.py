"""Reading cases: image files, their grids and sanity checks, which file is which modality."""
