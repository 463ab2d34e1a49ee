from fmmforge.core.app.cli import run

run()
