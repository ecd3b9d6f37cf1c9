"""Writing a segmentation out: Slicer segmentation nodes and .seg.nrrd files, label maps' volumes,
preview pictures, DICOM SEG, and the names of a case's output files."""
