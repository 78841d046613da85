"""``python -m aihub.cli``: the ``aihub`` command."""

import sys

from aihub.cli.commands import main

sys.exit(main())
