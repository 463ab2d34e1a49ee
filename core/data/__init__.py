"""Package data: the pickle-free AlphaTensor factorizations (see ALPHATENSOR.md)."""
