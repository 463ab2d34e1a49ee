"""fmmforge.codegen"""
