"""fmmforge.core.app: the application floor (command-line commands built on the subsystems)."""
