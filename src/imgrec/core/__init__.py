"""The bottom layer: errors, storage (atomic writes), safe image loading, the restricted
unpickler, sample photos and the plotting helpers. It imports nothing else of imgrec."""
