"""Text for the terminal: what both the embedded runner (``aihub run``) and the server client print.

Kept apart from :mod:`aihub.cli.client` so that ``aihub run`` does not import the HTTP and WebSocket clients.
"""

from __future__ import annotations

import re

#: terminal escape sequences (CSI, OSC, DCS/PM/APC/SOS strings, two-character ESC sequences, 8-bit CSI/OSC)
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"
    r"|\x1b[ -/]*[0-~]?"
    r"|\x9b[0-?]*[ -/]*[@-~]|\x9d[^\x07\x9c]*[\x07\x9c]?"
)
#: other control characters: none may reach the terminal (tab and newline stay; a lone CR becomes a newline)
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """A node's log text made safe for a terminal: a log could otherwise move the cursor, rewrite what is
    already on screen, set the window title or the clipboard, or hide lines."""
    text = _ESCAPES.sub("", text).replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROLS.sub("", text)
