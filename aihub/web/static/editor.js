// The workflow editor posts itself on every change and the answer replaces its fields (htmx). The field that
// has the focus keeps what the user typed meanwhile: the server's copy of it may be older than the field.
(function () {
  "use strict";
  var saved = null;
  var TYPED = /^(text|search|url|number|)$/;

  function editable(el) {
    if (!el || !el.id) return false;
    if (el.tagName === "TEXTAREA" || el.tagName === "SELECT") return true;
    return el.tagName === "INPUT" && TYPED.test(el.type || "");
  }

  document.addEventListener("htmx:beforeSwap", function (event) {
    var el = document.activeElement;
    var target = event.detail.target;
    saved = null;
    if (!target || target.id !== "editor-body" || !editable(el) || !target.contains(el)) return;
    var start = null;
    var end = null;
    try {
      start = el.selectionStart;
      end = el.selectionEnd;
    } catch (e) {
      // number inputs have no selection
    }
    saved = { id: el.id, value: el.value, start: start, end: end };
  });

  document.addEventListener("htmx:afterSwap", function () {
    var s = saved;
    saved = null;
    if (!s) return;
    var el = document.getElementById(s.id);
    if (!el || el.value === s.value) return;
    el.value = s.value;
    // a value set by script does not fire "change" on blur: fire it, so the server hears of the edit
    el.addEventListener("blur", function () {
      el.dispatchEvent(new Event("change", { bubbles: true }));
    }, { once: true });
    if (document.activeElement === el && s.start !== null && el.setSelectionRange) {
      try {
        el.setSelectionRange(s.start, s.end);
      } catch (e) {
        // not a text field
      }
    }
  });
})();
