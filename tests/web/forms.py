"""Reads the controls of a rendered form the way a browser submits them, so tests post what a user would."""

from __future__ import annotations

from collections.abc import Iterable
from html.parser import HTMLParser


class _Controls(HTMLParser):
    def __init__(self, root_id: str) -> None:
        super().__init__(convert_charrefs=True)
        self.root_id = root_id
        self.depth = 0  # >0 while inside the root element
        self.fields: list[tuple[str, str]] = []
        self._select: tuple[str, list[tuple[str, bool]]] | None = None
        self._option: list[str] | None = None
        self._option_attrs: dict[str, str | None] = {}
        self._textarea: tuple[str, list[str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if self.depth == 0:
            if a.get("id") == self.root_id:
                self.depth = 1
            return
        if tag not in ("input", "br", "img", "hr", "meta", "link", "path", "rect"):
            self.depth += 1
        name = a.get("name")
        disabled = "disabled" in a
        if tag == "input" and name and not disabled:
            kind = (a.get("type") or "text").lower()
            if kind in ("submit", "button", "image", "reset"):
                return
            if kind in ("checkbox", "radio") and "checked" not in a:
                return
            self.fields.append((name, a.get("value") or ("on" if kind in ("checkbox", "radio") else "")))
        elif tag == "select" and name and not disabled:
            self._select = (name, [])
        elif tag == "option" and self._select is not None:
            self._option, self._option_attrs = [], a
        elif tag == "textarea" and name and not disabled:
            self._textarea = (name, [])

    def handle_endtag(self, tag: str) -> None:
        if self.depth == 0:
            return
        if tag == "option" and self._select is not None and self._option is not None:
            value = self._option_attrs.get("value")
            text = "".join(self._option).strip()
            self._select[1].append((value if value is not None else text, "selected" in self._option_attrs))
            self._option = None
        elif tag == "select" and self._select is not None:
            name, options = self._select
            chosen = [v for v, selected in options if selected] or [v for v, _ in options[:1]]
            self.fields.extend((name, v) for v in chosen[-1:])
            self._select = None
        elif tag == "textarea" and self._textarea is not None:
            name, parts = self._textarea
            text = "".join(parts)
            self.fields.append((name, text[1:] if text.startswith("\n") else text))
            self._textarea = None
        if tag not in ("input", "br", "img", "hr", "meta", "link", "path", "rect"):
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if self._option is not None:
            self._option.append(data)
        elif self._textarea is not None:
            self._textarea[1].append(data)


class Form:
    """The fields of the element with id ``root`` in ``html``; edit them, then post ``data(op)``."""

    def __init__(self, html: str, root: str) -> None:
        parser = _Controls(root)
        parser.feed(html)
        if parser.depth == 0 and not parser.fields:
            raise AssertionError(f"no element #{root} with fields in the page")
        self.fields = parser.fields

    def get(self, name: str) -> str:
        values = self.getlist(name)
        assert values, f"no field {name!r}"
        return values[-1]

    def getlist(self, name: str) -> list[str]:
        return [v for k, v in self.fields if k == name]

    def set(self, name: str, value: str) -> Form:
        """Sets a field (adding it if absent; a hidden field before a checkbox of that name stays)."""
        for index, (key, _) in enumerate(self.fields):
            if key == name:
                self.fields[index] = (name, value)
                return self
        self.fields.append((name, value))
        return self

    def update(self, values: dict[str, str]) -> Form:
        for name, value in values.items():
            self.set(name, value)
        return self

    def check(self, name: str, value: str) -> Form:
        self.fields.append((name, value))
        return self

    def uncheck(self, name: str, value: str) -> Form:
        self.fields = [(k, v) for k, v in self.fields if (k, v) != (name, value)]
        return self

    def remove(self, names: Iterable[str]) -> Form:
        drop = set(names)
        self.fields = [(k, v) for k, v in self.fields if k not in drop]
        return self

    def data(self, op: str | None = None) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for key, value in self.fields:
            out.setdefault(key, []).append(value)
        if op is not None:
            out["op"] = [op]
        return out
