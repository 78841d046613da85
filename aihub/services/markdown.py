"""README rendering: Markdown to HTML that is safe to put in a page.

Module READMEs are written by users, so the HTML that markdown-it produces (raw HTML in the Markdown allowed,
as READMEs use it for images and details blocks) is cleaned by nh3 with an allow-list of tags, attributes and
URL schemes: no scripts, no event handlers, no ``javascript:`` links, no styles.
"""

from __future__ import annotations

import copy

import nh3
from markdown_it import MarkdownIt

__all__ = ["render_markdown"]

_MD = MarkdownIt("commonmark", {"html": True, "linkify": False}).enable(["table", "strikethrough"])

_TAGS = set(nh3.ALLOWED_TAGS)
_ATTRIBUTES: dict[str, set[str]] = copy.deepcopy(nh3.ALLOWED_ATTRIBUTES)
_ATTRIBUTES.setdefault("a", set()).update({"href", "title"})
_ATTRIBUTES.setdefault("img", set()).update({"src", "alt", "title", "width", "height"})
_ATTRIBUTES["code"] = {"class"}  # language-xxx, for highlighting
_ATTRIBUTES.setdefault("th", set()).add("style")
_ATTRIBUTES.setdefault("td", set()).add("style")
_SCHEMES = {"http", "https", "mailto"}


def render_markdown(text: str) -> str:
    """Sanitized HTML of ``text`` (CommonMark plus tables and strikethrough)."""
    html = _MD.render(text)
    return nh3.clean(
        html,
        tags=_TAGS,
        clean_content_tags={"script", "style"},
        attributes=_ATTRIBUTES,
        url_schemes=_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        filter_style_properties={"text-align"},
    )
