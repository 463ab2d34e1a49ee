"""fmmforge.core.app: the application floor (docs/architecture.md, floor 5).

The ``fmmforge`` command line (cli.py), its commands (one module per subject, each a plugin that
registers its commands through the ``register_commands`` hook, exactly as a third party's), and the
demo job. Progress bars, tables and the command line's words live here and nowhere below.
"""
