"""README rendering: Markdown to sanitized HTML."""

from __future__ import annotations

import pytest

from aihub.services.markdown import render_markdown


def test_markdown_features() -> None:
    html = render_markdown(
        "# hash-file\n\nSome *text* and `code`.\n\n| a | b |\n|:--|--:|\n| 1 | 2 |\n\n"
        "```python\nprint(1)\n```\n\n~~old~~ [docs](https://example.com/docs)\n"
    )
    assert "<h1>hash-file</h1>" in html
    assert "<em>text</em>" in html and "<code>code</code>" in html
    assert '<th style="text-align:left">a</th>' in html
    assert '<code class="language-python">print(1)\n</code>' in html
    assert "<s>old</s>" in html
    assert '<a href="https://example.com/docs" rel="noopener noreferrer nofollow">docs</a>' in html


@pytest.mark.parametrize(
    ("markdown", "forbidden"),
    [
        ("<script>alert(1)</script>", "alert"),
        ("<img src=x onerror=alert(1)>", "onerror"),
        ('<a href="javascript:alert(1)">x</a>', "javascript:"),
        ("[x](javascript:alert(1))", "href"),  # not made a link: stays text
        ('<iframe src="https://evil.example"></iframe>', "iframe"),
        ("<style>body{display:none}</style>", "display"),
        ('<div style="position:fixed">x</div>', "position"),
        ('<form action="/logout"><button>go</button></form>', "form"),
        ("<!-- hidden --> text", "hidden"),
    ],
)
def test_dangerous_html_is_removed(markdown: str, forbidden: str) -> None:
    assert forbidden not in render_markdown(markdown)


def test_harmless_html_is_kept() -> None:
    html = render_markdown(
        '<details><summary>More</summary>\n\n<img src="https://e.com/a.png" alt="diagram">\n\n</details>'
    )
    assert "<details><summary>More</summary>" in html
    assert '<img src="https://e.com/a.png" alt="diagram">' in html
