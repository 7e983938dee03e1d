"""The command line (one Typer app in app.py; the commands by what they act on)."""
