"""Facts about the four input sequences that every stage shares (the file reader, preprocessing,
the Slicer layer), kept apart so none of them imports another only for these."""

#: Channel order of every (4, Z, Y, X) volume: T1, post-contrast T1, T2, FLAIR.
MODALITIES = ("T1", "T1c", "T2", "FLAIR")
