"""fmmforge.hardware"""
