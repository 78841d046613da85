"""The message catalogues a checkout runs with: ``make run`` and ``make test`` compile a ``.po`` again whenever
it is newer than its ``.mo`` (the ``.mo`` files are not kept in git, and the set-up's own stamp follows only
``pyproject.toml``), so a translation edited in a checkout is the one the next server shows."""

from __future__ import annotations

import gettext
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOCALES = ROOT / "aihub" / "web" / "locale"
COMPILE = "pybabel -q compile --use-fuzzy -d aihub/web/locale -l {language}"


def _make(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))}
    result = subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.parametrize("language", ["zh_CN", "en"])
def test_a_changed_catalogue_is_compiled_by_the_next_make_run_or_make_test(language: str) -> None:
    po = LOCALES / language / "LC_MESSAGES" / "messages.po"
    mo = po.with_suffix(".mo")
    _make(str(mo.relative_to(ROOT)))  # up to date first: then nothing is compiled again
    assert mo.stat().st_mtime >= po.stat().st_mtime
    for target in ("run", "test"):
        assert COMPILE.format(language=language) not in _make("-n", target)

    earlier = po.stat().st_mtime - 10
    os.utime(mo, (earlier, earlier))  # the translation was edited after the catalogue was made
    for target in ("run", "test"):
        assert COMPILE.format(language=language) in _make("-n", target), target
    _make(str(mo.relative_to(ROOT)))
    assert mo.stat().st_mtime >= po.stat().st_mtime
    with mo.open("rb") as f:
        catalogue = gettext.GNUTranslations(f)
    assert catalogue.gettext("Start from") == {"zh_CN": "基于", "en": "Start from"}[language]
