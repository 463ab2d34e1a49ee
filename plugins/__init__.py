"""fmmforge.plugins"""
