/* AIHub Workflow: keyboard and screen-reader behaviour that HTML alone cannot give (issue 21).
   - the header's menu button on narrow screens (aria-expanded);
   - DAG nodes and summary boxes (role=button): Enter/Space open them, arrow keys move along the edges
     (data-up/-down: first parent/child, data-left/-right: the row), Home/End: first/last unit;
   - the node panel: focus moves into it when a node (or a chip, or a row of the table of nodes) opens it and
     back to that node on Close or Escape; #panel-status (role=status) says what loaded;
   - the panel's tabs follow the WAI-ARIA tabs pattern (arrows, Home/End move between tabs, Enter/Space open).
   Everything is delegated from document, so content swapped in by htmx or the live updates needs no set-up. */
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  var opener = null; // the id of the element that opened the node panel

  function byId(id) { return id ? document.getElementById(id) : null; }

  function activate(el) {
    // a node's clickable part is its rect (hx-get); a chip, a tab or a link is itself
    var target = el.matches("[hx-get]") ? el : el.querySelector("[hx-get]") || el;
    target.dispatchEvent(new MouseEvent("click", {bubbles: true, cancelable: true}));
  }

  function onGraphKey(event, unit) {
    var key = event.key, next = null;
    if (key === "Enter" || key === " ") { event.preventDefault(); activate(unit); return; }
    var dir = {ArrowUp: "up", ArrowDown: "down", ArrowLeft: "left", ArrowRight: "right"}[key];
    if (dir) { next = byId(unit.getAttribute("data-" + dir)); }
    var units = unit.ownerSVGElement ? unit.ownerSVGElement.querySelectorAll(".node[role=button]") : [];
    if (key === "Home" && units.length) { next = units[0]; }
    if (key === "End" && units.length) { next = units[units.length - 1]; }
    if (dir || key === "Home" || key === "End") { event.preventDefault(); }
    if (next) { next.focus(); }
  }

  function onTabKey(event, tab) {
    var tabs = Array.prototype.slice.call(tab.closest("[role=tablist]").querySelectorAll("[role=tab]"));
    var i = tabs.indexOf(tab), next = null;
    if (event.key === "ArrowRight") { next = tabs[(i + 1) % tabs.length]; }
    if (event.key === "ArrowLeft") { next = tabs[(i - 1 + tabs.length) % tabs.length]; }
    if (event.key === "Home") { next = tabs[0]; }
    if (event.key === "End") { next = tabs[tabs.length - 1]; }
    if (event.key === " ") { event.preventDefault(); activate(tab); return; }
    if (next) {
      event.preventDefault();
      tabs.forEach(function (t) { t.setAttribute("tabindex", t === next ? "0" : "-1"); });
      next.focus();
    }
  }

  // Close: the panel's first content again, focus back on what opened it (or, on a page opened with the
  // panel in place, on the node itself); false when there is no run page to go back to (then the link goes)
  function closePanel() {
    var panel = byId("node-panel"), empty = byId("node-panel-empty"), detail = byId("node-detail");
    if (!panel || !empty) { return false; }
    var name = detail ? detail.getAttribute("data-node") : "";
    panel.innerHTML = empty.innerHTML;
    var status = byId("panel-status");
    announce(status ? status.getAttribute("data-closed") : "");
    var back = byId(opener) || byId("node-" + name) || byId("chip-btn-" + name);
    if (back) { back.focus(); }
    return true;
  }

  function announce(text) {
    var status = byId("panel-status");
    if (status) { status.textContent = ""; window.setTimeout(function () { status.textContent = text; }, 50); }
  }

  document.addEventListener("keydown", function (event) {
    var el = event.target;
    if (!(el instanceof Element)) { return; }
    if (el.matches(".dag .node[role=button]")) { onGraphKey(event, el); return; }
    if (el.matches("[role=tab]")) { onTabKey(event, el); }
    if (event.key === "Escape" && el.closest("#node-panel") && closePanel()) { event.preventDefault(); }
  });

  document.addEventListener("click", function (event) {
    var el = event.target instanceof Element ? event.target : null;
    if (!el) { return; }
    var toggle = el.closest("#menu-toggle");
    if (toggle) {
      var open = toggle.getAttribute("aria-expanded") !== "true";
      toggle.setAttribute("aria-expanded", open ? "true" : "false");
      toggle.closest("header").classList.toggle("open", open);
    }
    if (el.closest("#close-panel") && closePanel()) { event.preventDefault(); }
  });

  // after a swap into the panel that the user asked for, move focus there and say what loaded; live
  // refreshes of an open panel (triggered by the panel itself) leave focus alone (htmx keeps it by id)
  document.addEventListener("htmx:afterSettle", function (event) {
    var detail = event.detail || {};
    var panel = byId("node-panel");
    var from = detail.requestConfig && detail.requestConfig.elt;
    if (!panel || detail.target !== panel || !(from instanceof Element)) { return; }
    var unit = from.closest("[data-opens-panel]");
    var detailEl = byId("node-detail");
    if (!detailEl) { return; }
    if (unit) {
      opener = unit.id;
      var heading = detailEl.querySelector("h2");
      if (heading) { heading.focus(); }
    } else if (from.matches("[role=tab]") || from.closest("[role=tablist]")) {
      var selected = panel.querySelector("[role=tab][aria-selected=true]");
      if (selected) { selected.focus(); }
    } else if (from.id === "retry-from-node") {
      var confirm = byId("confirm-retry");
      if (confirm) { confirm.focus(); }
    } else if (from.id === "cancel-retry") {
      var again = byId("retry-from-node");
      if (again) { again.focus(); }
    } else {
      return;
    }
    announce(detailEl.getAttribute("data-announce") || "");
  });

  // a table's scroll region (runs, workflows, nodes) is a Tab stop while it has something to scroll to, so
  // that the keyboard can scroll it; where the table fits (a wide screen) it is not one more stop on the way.
  // (The HTML makes each a stop: so it stays for a browser without this script.)
  function scrollStops() {
    document.querySelectorAll(".table-scroll").forEach(function (region) {
      if (region.scrollWidth > region.clientWidth) { region.setAttribute("tabindex", "0"); }
      else { region.removeAttribute("tabindex"); }
    });
  }
  document.addEventListener("DOMContentLoaded", scrollStops);
  document.addEventListener("htmx:afterSettle", scrollStops);
  document.addEventListener("toggle", scrollStops, true);  // (a <details> opened: its table may not fit)
  window.addEventListener("resize", scrollStops);
})();
