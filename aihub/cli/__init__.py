"""The ``aihub`` command: ``commands`` parses the sub-commands, ``client`` talks to a server's API, ``runner`` runs
a workflow file in this process (``aihub run``)."""

from aihub.cli.commands import main

__all__ = ["main"]
