"""fmmforge.core: exact tensor algebra, decompositions, catalogue, store and CLI."""
