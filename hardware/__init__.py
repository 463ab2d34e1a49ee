"""fmmforge.hardware: devices (cpu, cuda:N, spec-only accelerators) and the one timing harness.

Modules: devices (what is present, BLAS and threads, measured peak), timing (interleaved,
adaptive, median/IQR, CUDA events, pinned threads, TF32 off), memory (peak extra memory of a
call), commands (``fmmforge devices``).
"""
