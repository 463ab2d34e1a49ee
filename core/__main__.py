from fmmforge.core.cli import run

run()
