"""Every setting a user can give (``AIHUB_*``, aihub/settings.py) has its row in the README's configuration
table — by its own name, or under a ``AIHUB_PREFIX_*`` row that lists the rest of its name."""

from __future__ import annotations

import re
from pathlib import Path

from aihub.settings import Settings

README = Path(__file__).resolve().parents[1] / "README.md"


def configuration_table(text: str) -> str:
    return text.split("## Configuration", 1)[1].split("\n## ", 1)[0]


def undocumented(table: str) -> list[str]:
    named = set(re.findall(r"AIHUB_[A-Z0-9_]*[A-Z0-9]", table))
    groups = {
        prefix: set(re.findall(r"`([A-Z0-9_]+)`", row))
        for prefix, row in re.findall(r"^\| `(AIHUB_[A-Z0-9_]+)_\*` \|(.*)$", table, re.M)
    }
    missing = []
    for field in Settings.model_fields:
        name = f"AIHUB_{field.upper()}"
        grouped = any(name.startswith(f"{p}_") and name[len(p) + 1 :] in rest for p, rest in groups.items())
        if name not in named and not grouped:
            missing.append(name)
    return missing


def test_every_setting_has_a_row_in_the_readme() -> None:
    assert undocumented(configuration_table(README.read_text())) == []


def test_the_check_sees_a_missing_setting() -> None:
    table = configuration_table(README.read_text())
    without = table.replace("`AIHUB_MAX_TEXT_OUTPUT`", "`SOMETHING_ELSE`")
    assert undocumented(without) == ["AIHUB_MAX_TEXT_OUTPUT"]
    grouped = table.replace("`KANIKO_IMAGE`, ", "")
    assert undocumented(grouped) == ["AIHUB_KUBERNETES_BUILD_KANIKO_IMAGE"]
