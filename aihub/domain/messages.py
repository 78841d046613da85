"""Messages a person reads, kept translatable.

The core speaks English: tools (GraphQL, the CLI, logs) read its messages as they are. A message built with
:func:`msg` is still a plain ``str`` with the English text, but it remembers its template and arguments, so the
web UI can show it in the reader's language (``aihub.web.i18n.translate``): the template is the gettext msgid,
extracted into the catalogues like any other (``babel.cfg`` lists ``msg`` as a keyword).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class Message(str):
    """English text (``str(message)``) plus the ``template`` and ``params`` it was formatted from."""

    template: str
    params: Mapping[str, object]

    def __new__(cls, template: str, params: Mapping[str, object], text: str | None = None) -> Message:
        """``text``: the English wording when it says more than the template (a translation may say less)."""
        english = text if text is not None else template.format(**params) if params else template
        self = super().__new__(cls, english)
        self.template = template
        self.params = dict(params)
        return self

    def __reduce__(self) -> tuple[type[Message], tuple[str, dict[str, object], str]]:
        """Copies and pickles (pydantic copies errors, the Kafka bus may serialise) keep the template."""
        return (Message, (self.template, dict(self.params), str(self)))


def msg(template: str, /, **params: object) -> Message:
    """A translatable message: ``template`` uses ``{name}`` placeholders filled from ``params``."""
    return Message(template, params)


#: beyond this many items :func:`joined` joins plain text (a message nests one level per item)
MAX_JOINED = 100


def joined(items: Sequence[str]) -> str:
    """``items`` joined by ``"; "``, each still translatable: nested ``{first}; {rest}`` messages."""
    if not items or len(items) > MAX_JOINED:
        return "; ".join(items)
    result = items[-1]
    for item in reversed(items[:-1]):
        result = msg("{first}; {rest}", first=item, rest=result)
    return result
