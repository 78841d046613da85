"""The contrast of every status colour, measured from the stylesheet (WCAG 2.1 relative luminance): white text on
each status colour (badges, chips, DAG nodes) >= 4.5:1, each status colour against the page and the graph's
background >= 3:1 (the node's outline, a non-text contrast); the DAG's colours are the stylesheet's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aihub.domain.status import NODE_COLOURS, NodeStatus
from aihub.web.svg import STATUS_ICONS

CSS = Path(__file__).resolve().parents[2] / "aihub" / "web" / "static" / "app.css"
WHITE = "#ffffff"


def luminance(hex_colour: str) -> float:
    h = hex_colour.lstrip("#")
    if len(h) == 3:
        h = "".join(c * 2 for c in h)
    channels = [int(h[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def rules(css: str) -> list[tuple[str, dict[str, str]]]:
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    css = re.sub(
        r"@media[^{]*\{((?:[^{}]*\{[^}]*\})*)\s*\}", r"\1", css
    )  # media blocks: their rules count too
    found = []
    for selector, body in re.findall(r"([^{}]+)\{([^}]*)\}", css):
        decls = {}
        for decl in body.split(";"):
            if ":" in decl:
                name, value = decl.split(":", 1)
                decls[name.strip()] = value.strip()
        found.append((" ".join(selector.split()), decls))
    return found


def variables(css: str) -> dict[str, str]:
    root = next(d for s, d in rules(css) if s == ":root")
    return {k: v for k, v in root.items() if k.startswith("--")}


def resolve(value: str, env: dict[str, str]) -> str:
    m = re.fullmatch(r"var\((--[\w-]+)\)", value)
    return env[m[1]] if m else value


def status_backgrounds(css: str) -> list[tuple[str, str, str]]:
    """(selector, background, text colour) of every badge and chip rule that sets a background."""
    env = variables(css)
    text = {"badge": "#fff", "chip": "#fff"}
    for selector, decls in rules(css):
        for kind in text:
            if selector == f".{kind}" and "color" in decls:
                text[kind] = resolve(decls["color"], env)
    out = []
    for selector, decls in rules(css):
        kind = "badge" if ".badge" in selector else "chip" if ".chip" in selector else None
        if kind and "background" in decls and "::" not in selector:
            out.append((selector, resolve(decls["background"], env), text[kind]))
    return out


def test_the_stylesheet_defines_the_dag_colours() -> None:
    env = variables(CSS.read_text())
    for status, colour in NODE_COLOURS.items():
        assert env[f"--s-{status.value.lower()}"] == colour, status


def test_white_text_on_every_status_colour_is_at_least_4_5_to_1() -> None:
    pairs = status_backgrounds(CSS.read_text())
    assert len(pairs) >= 12, pairs  # badges of runs, nodes, modules, reviews and the chips
    low = [(s, bg, fg, round(contrast(bg, fg), 2)) for s, bg, fg in pairs if contrast(bg, fg) < 4.5]
    assert not low, low
    # the DAG's node labels are white too (.dag svg text)
    for status, colour in NODE_COLOURS.items():
        assert contrast(colour, WHITE) >= 4.5, (status, colour)


def test_every_status_colour_stands_out_from_the_page_at_3_to_1() -> None:
    css = CSS.read_text()
    pages = {WHITE, "#fbfcfd", resolve("var(--bg)", variables(css))}  # page, graph background, table heads
    for status, colour in NODE_COLOURS.items():
        for page in pages:
            assert contrast(colour, page) >= 3.0, (status, colour, page, round(contrast(colour, page), 2))


def test_every_status_has_a_glyph_besides_its_colour() -> None:
    css = CSS.read_text()
    for status in NodeStatus:
        assert STATUS_ICONS[status.value], status
    for status in ("RUNNING", "SUCCEEDED", "FAILED", "STOPPED", "SKIPPED"):
        assert re.search(rf"\.badge\.s-{status}::before", css), status
        assert re.search(rf"\.chip\.status-{status}::before", css), status


@pytest.mark.parametrize(("colour", "passes"), [("#43a047", False), ("#e53935", False), ("#2e7d32", True)])
def test_the_measure_fails_the_seed_shades(colour: str, passes: bool) -> None:
    """The seed's green 3.3:1 and red 4.2:1 with white text: the check must say no to them."""
    assert (contrast(colour, WHITE) >= 4.5) is passes
