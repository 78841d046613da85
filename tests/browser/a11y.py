"""The standing accessibility check of the browser tests: axe-core in every page state they visit.

``install(context)`` makes every page of a browser context load the vendored axe-core (``axe/axe.min.js``, an
init script: it runs before the page's own scripts and is not subject to its CSP) and run it, WCAG 2.1 A and AA
rules only, once a document has loaded and again after every htmx swap has settled (debounced, so a burst of live
updates costs one run). Each run reports through a binding to the Python side, which keeps every violation.
``audit(page)`` runs axe now, waits for it and returns the violations; the browser fixtures call it on every
open page before closing it, and ``check(violations)`` fails the test on any violation seen, naming the rule,
the elements and the page.

Nothing here drives the page: a run of axe only reads the DOM, so the keyboard-only test stays keyboard-only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import BrowserContext, Page
from playwright.sync_api import Error as PlaywrightError

AXE = Path(__file__).resolve().parent / "axe" / "axe.min.js"
#: WCAG 2.1 level A and AA (2.0 rules are tagged wcag2a/wcag2aa, the 2.1 additions wcag21a/wcag21aa)
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]

RUNNER = """
(() => {
  if (window.top !== window || window.__axeAudit) return;
  const options = {runOnly: {type: "tag", values: %(tags)s}, resultTypes: ["violations"]};
  let chain = Promise.resolve([]);
  let timer = null;
  const runOnce = async () => {
    if (document.contentType !== "text/html") return [];  // a JSON answer or a text file: not a page
    const result = await axe.run(document, options);
    const violations = result.violations.map((v) => ({
      id: v.id, impact: v.impact, help: v.help,
      targets: v.nodes.slice(0, 5).map((n) => n.target.join(" ") + " :: " + (n.failureSummary || "")),
    }));
    if (window.__axeReport) await window.__axeReport({url: location.href, violations});
    return violations;
  };
  // one run at a time: axe refuses to start while another run is going on
  window.__axeAudit = () => (chain = chain.catch(() => []).then(runOnce));
  const schedule = () => { clearTimeout(timer); timer = setTimeout(() => window.__axeAudit(), 150); };
  document.addEventListener("DOMContentLoaded", schedule);
  document.addEventListener("htmx:afterSettle", schedule);
})();
"""


@dataclass
class Findings:
    """Every violation reported by any page of the contexts it was installed in, keyed by (url, rule)."""

    seen: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    runs: int = 0

    def add(self, url: str, violations: list[dict[str, Any]]) -> None:
        self.runs += 1
        for v in violations:
            self.seen.setdefault((url, v["id"]), {**v, "url": url})

    def report(self) -> str:
        lines = []
        for v in self.seen.values():
            lines.append(f"{v['id']} ({v['impact']}) on {v['url']}: {v['help']}")
            lines.extend(f"    {t}" for t in v["targets"])
        return "\n".join(lines)


def install(context: BrowserContext, findings: Findings) -> BrowserContext:
    """Inject axe-core into every page the context opens and collect what it finds into ``findings``."""
    context.expose_binding("__axeReport", lambda _source, data: findings.add(data["url"], data["violations"]))
    context.add_init_script(path=str(AXE))
    context.add_init_script(RUNNER % {"tags": TAGS})
    return context


def audit(page: Page) -> list[dict[str, Any]]:
    """Run axe on the page's current state now (after any run in progress) and return its violations (the
    context's ``Findings`` get them too). A document that is not a page (a JSON answer, a text file) has
    nothing to check. A navigation that replaces the document meanwhile is waited for, and the new one
    checked."""
    for attempt in range(3):
        page.wait_for_load_state("domcontentloaded")
        try:
            found = page.evaluate(
                "() => window.__axeAudit && document.contentType === 'text/html' ? window.__axeAudit() : []"
            )
        except PlaywrightError:
            if attempt == 2:
                raise
            continue  # the document went away under the run: check the one that replaced it
        return list(found)
    return []


def audit_open_pages(context: BrowserContext) -> None:
    for page in context.pages:
        if not page.is_closed() and page.url.startswith("http"):
            audit(page)


def check(findings: Findings) -> None:
    assert not findings.seen, "axe-core found WCAG 2.1 A/AA violations:\n" + findings.report()
