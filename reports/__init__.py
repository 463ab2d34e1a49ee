"""fmmforge.reports"""
