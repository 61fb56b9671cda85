"""``python -m archiver`` runs the CLI (the same as the ``archiver`` command)."""

from archiver.cli import cli

cli(prog_name="archiver")
