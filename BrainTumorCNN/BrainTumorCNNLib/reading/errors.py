"""The error of a case that cannot be read, in its own module so that the
readers of image files (io.py) and of DICOM series (dicom.py) share it without
importing each other."""


class CaseError(ValueError):
    """A case that cannot be read as four modalities (+ truth); names the fix."""
