/* The workflow editor's canvas (issue 13): pointer and key gestures turned into posts of the editor form.
   The server holds the truth: every gesture sets a few fields (a node's x/y, "act", the drop point) and fires
   "change" on the form, which htmx posts; the server applies it to the draft, validates and re-renders
   #editor-body. While a gesture lasts, this file only moves SVG elements so that the user sees it.
   - palette entry dragged onto the canvas: act = its value (add-node, add-module-NAME) at the drop point;
     pressed (mouse or keyboard): the form's normal submit adds the node beside the others;
   - node body: click (or Enter) selects it (its panel opens); drag or arrow keys move it (act = move-I: the server
     checks the place and answers 204, the canvas showing it already); Delete removes it;
   - out port dragged onto another node (or Enter on an out port, then on an in port): act = connect-FROM-TO;
   - an edge: click or Tab focuses it, Delete removes it (act = disconnect-FROM-TO);
   - background drag pans, the wheel and the +/- buttons zoom (the view box is kept in a hidden field);
   - $name in a command that names no input is flagged as the user types (the server does the same). */
(function () {
  "use strict";
  var W = 170, H = 52, STEP = 10;
  var drag = null;        // the gesture under way
  var connecting = null;  // keyboard: the index of the chosen out port
  var moveTimer = null;

  function byId(id) { return document.getElementById(id); }
  function canvas() { return byId("canvas"); }
  function nodeEl(index) { return byId("cnode-" + index); }

  function post(act, fields) {
    var field = byId("canvas-act");
    if (!field) { return; }
    // htmx sends the button that has the focus with the form (a palette entry pressed to start a drag):
    // this post is not that button's
    var active = document.activeElement;
    if (active && active.tagName === "BUTTON") { active.blur(); }
    Object.keys(fields || {}).forEach(function (id) { var f = byId(id); if (f) { f.value = fields[id]; } });
    field.value = act;
    field.dispatchEvent(new Event("change", {bubbles: true}));
    // htmx has read the form (synchronously, in the event): the action must not ride along with the next post
    // (a move is answered with 204 and no re-render that would clear these fields)
    field.value = "";
    ["canvas-drop-x", "canvas-drop-y"].forEach(function (id) { var f = byId(id); if (f) { f.value = ""; } });
    if (act.indexOf("select-") === 0) { mark(act.slice(7)); }
  }

  // The node whose panel is open is drawn selected. A new selection is answered with the side panel alone (out of
  // band: the canvas is not sent again), so the page marks it itself: at once when asked, and as the server's
  // "selected" field says once that is swapped in (the panel's Close button too).
  function mark(index) {
    document.querySelectorAll("#canvas .cnode").forEach(function (g) {
      var on = g.getAttribute("data-index") === String(index);
      g.classList.toggle("selected", on);
      var body = byId("cbody-" + g.getAttribute("data-index"));
      if (body) { body.setAttribute("aria-pressed", on ? "true" : "false"); }
    });
  }

  document.addEventListener("htmx:oobAfterSwap", function () {
    var field = byId("selected-node");
    if (field && canvas()) { mark(field.value); }
  });

  function announce(text) {
    var status = byId("canvas-status");
    if (status) { status.textContent = ""; window.setTimeout(function () { status.textContent = text; }, 30); }
  }

  // --- geometry --------------------------------------------------------------------------------------------

  function toCanvas(clientX, clientY) {
    var m = canvas().getScreenCTM();
    if (!m) { return {x: 0, y: 0}; }
    return new DOMPoint(clientX, clientY).matrixTransform(m.inverse());
  }

  function viewBox() {
    var parts = (canvas().getAttribute("viewBox") || "0 0 960 540").split(/\s+/).map(Number);
    return {x: parts[0], y: parts[1], w: parts[2], h: parts[3]};
  }

  function setViewBox(vb) {
    var r = function (v) { return Math.round(v * 10) / 10; };
    var text = r(vb.x) + " " + r(vb.y) + " " + r(Math.max(vb.w, 50)) + " " + r(Math.max(vb.h, 30));
    canvas().setAttribute("viewBox", text);
    var field = byId("canvas-viewbox");
    if (field) { field.value = text; }
  }

  function zoom(factor, around) {
    var vb = viewBox();
    var p = around || {x: vb.x + vb.w / 2, y: vb.y + vb.h / 2};
    setViewBox({x: p.x - (p.x - vb.x) * factor, y: p.y - (p.y - vb.y) * factor, w: vb.w * factor, h: vb.h * factor});
  }

  function fit() {
    var nodes = canvas().querySelectorAll(".cnode");
    if (!nodes.length) { setViewBox({x: 0, y: 0, w: 960, h: 540}); return; }
    var xs = [], ys = [];
    nodes.forEach(function (g) { xs.push(+g.getAttribute("data-x")); ys.push(+g.getAttribute("data-y")); });
    var left = Math.min.apply(null, xs) - 16, top = Math.min.apply(null, ys) - 16;
    var w = Math.max(Math.max.apply(null, xs) + W + 16 - left, 480);
    var h = Math.max(Math.max.apply(null, ys) + H + 16 - top, 270);
    setViewBox({x: left, y: top, w: w, h: h});
  }

  function edgeD(x1, y1, x2, y2) {
    var bend = Math.max(40, Math.floor(Math.abs(y2 - y1) / 2));
    return "M" + x1 + "," + y1 + " C" + x1 + "," + (y1 + bend) + " " + x2 + "," + (y2 - bend) + " " + x2 + "," + y2;
  }

  function at(index) {
    var g = nodeEl(index);
    return {x: +g.getAttribute("data-x"), y: +g.getAttribute("data-y")};
  }

  function moveNode(index, x, y) {
    var g = nodeEl(index);
    x = Math.round(x); y = Math.round(y);
    g.setAttribute("data-x", x); g.setAttribute("data-y", y);
    g.setAttribute("transform", "translate(" + x + " " + y + ")");
    canvas().querySelectorAll('.edges [data-parent="' + index + '"], .edges [data-child="' + index + '"]').forEach(function (p) {
      var a = at(p.getAttribute("data-parent")), b = at(p.getAttribute("data-child"));
      p.setAttribute("d", edgeD(a.x + W / 2, a.y + H, b.x + W / 2, b.y));
    });
  }

  function savePosition(index) {
    var p = at(index);
    var x = byId("pos-" + index + "-x"), y = byId("pos-" + index + "-y");
    if (x && y) { x.value = p.x; y.value = p.y; }
  }

  // --- pointer gestures ------------------------------------------------------------------------------------

  document.addEventListener("pointerdown", function (event) {
    var el = event.target instanceof Element ? event.target : null;
    if (!el || event.button !== 0 || !canvas()) { return; }
    var entry = el.closest("[data-palette]");
    if (entry) {
      drag = {kind: "palette", entry: entry, x0: event.clientX, y0: event.clientY, moved: false, ghost: null};
      return;
    }
    if (!el.closest("#canvas")) { return; }
    if (el.matches(".port.out")) {
      event.preventDefault();
      var from = +el.getAttribute("data-index"), p = at(from);
      drag = {kind: "edge", from: from, x1: p.x + W / 2, y1: p.y + H};
    } else if (el.matches(".cnode .body")) {
      event.preventDefault();
      var index = +el.getAttribute("data-index"), start = at(index), q = toCanvas(event.clientX, event.clientY);
      drag = {kind: "node", index: index, body: el, sx: start.x, sy: start.y, px: q.x, py: q.y,
              x0: event.clientX, y0: event.clientY, moved: false};
    } else if (el.matches(".canvas-bg") || el === canvas()) {
      event.preventDefault();
      var m = canvas().getScreenCTM();
      drag = {kind: "pan", vb: viewBox(), x0: event.clientX, y0: event.clientY, scale: m ? 1 / m.a : 1};
    }
  });

  document.addEventListener("pointermove", function (event) {
    if (!drag) { return; }
    var far = drag.x0 !== undefined && Math.abs(event.clientX - drag.x0) + Math.abs(event.clientY - drag.y0) > 4;
    if (drag.kind === "palette") {
      if (!drag.moved && !far) { return; }
      event.preventDefault();
      drag.moved = true;
      if (!drag.ghost) {
        drag.ghost = document.createElement("div");
        drag.ghost.className = "palette-ghost";
        drag.ghost.textContent = drag.entry.textContent;
        document.body.appendChild(drag.ghost);
        canvas().classList.add("drop-target");
      }
      drag.ghost.style.left = event.clientX + 8 + "px";
      drag.ghost.style.top = event.clientY + 8 + "px";
    } else if (drag.kind === "node") {
      if (!drag.moved && !far) { return; }
      drag.moved = true;
      var q = toCanvas(event.clientX, event.clientY);
      moveNode(drag.index, drag.sx + q.x - drag.px, drag.sy + q.y - drag.py);
    } else if (drag.kind === "edge") {
      var p = toCanvas(event.clientX, event.clientY);
      byId("rubber-band").setAttribute("d", edgeD(drag.x1, drag.y1, Math.round(p.x), Math.round(p.y)));
    } else if (drag.kind === "pan") {
      setViewBox({x: drag.vb.x - (event.clientX - drag.x0) * drag.scale, y: drag.vb.y - (event.clientY - drag.y0) * drag.scale,
                  w: drag.vb.w, h: drag.vb.h});
    }
  });

  document.addEventListener("pointerup", function (event) {
    var d = drag;
    drag = null;
    if (!d || !canvas()) { return; }
    var under = document.elementFromPoint(event.clientX, event.clientY);
    if (d.kind === "palette") {
      if (d.ghost) { d.ghost.remove(); }
      canvas().classList.remove("drop-target");
      if (d.moved && under && under.closest("#canvas")) {
        var p = toCanvas(event.clientX, event.clientY);
        post(d.entry.value, {"canvas-drop-x": Math.round(p.x - W / 2), "canvas-drop-y": Math.round(p.y - H / 2)});
      }
    } else if (d.kind === "node") {
      if (d.moved) { savePosition(d.index); post("move-" + d.index); }
      else { d.body.focus(); post("select-" + d.index); }
    } else if (d.kind === "edge") {
      byId("rubber-band").setAttribute("d", "");
      var target = under && under.closest(".cnode");
      if (target && +target.getAttribute("data-index") !== d.from) {
        post("connect-" + d.from + "-" + target.getAttribute("data-index"));
      }
    }
  });

  document.addEventListener("wheel", function (event) {
    var el = event.target instanceof Element ? event.target : null;
    if (!el || !el.closest("#canvas")) { return; }
    event.preventDefault();
    zoom(event.deltaY > 0 ? 1.1 : 1 / 1.1, toCanvas(event.clientX, event.clientY));
  }, {passive: false});

  document.addEventListener("click", function (event) {
    var el = event.target instanceof Element ? event.target : null;
    if (!el) { return; }
    if (el.closest("#zoom-in")) { zoom(1 / 1.25); }
    else if (el.closest("#zoom-out")) { zoom(1.25); }
    else if (el.closest("#zoom-fit")) { fit(); }
    else if (el.matches(".edge-hit")) { el.focus(); }
  });

  // --- keyboard --------------------------------------------------------------------------------------------

  function nudge(index, dx, dy) {
    var p = at(index);
    moveNode(index, p.x + dx, p.y + dy);
    savePosition(index);
    window.clearTimeout(moveTimer);
    moveTimer = window.setTimeout(function () { post("move-" + index); }, 400);
  }

  document.addEventListener("keydown", function (event) {
    var el = event.target instanceof Element ? event.target : null;
    if (!el || !canvas()) { return; }
    var key = event.key, press = key === "Enter" || key === " ";
    if (el.id === "palette-search" && key === "Enter") { event.preventDefault(); return; }
    if (!el.closest("#canvas")) { return; }
    var index = el.getAttribute("data-index");
    if (key === "Escape" && connecting !== null) {
      canvas().classList.remove("connecting"); connecting = null; announce("");
      return;
    }
    if (el.matches(".cnode .body")) {
      var moves = {ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1]}[key];
      if (press) { event.preventDefault(); post("select-" + index); }
      else if (key === "Delete" || key === "Backspace") { event.preventDefault(); post("remove-node-" + index); }
      else if (moves) {
        event.preventDefault();
        var step = event.shiftKey ? STEP * 5 : STEP;
        nudge(+index, moves[0] * step, moves[1] * step);
      }
    } else if (el.matches(".port.out") && press) {
      event.preventDefault();
      connecting = +index;
      canvas().classList.add("connecting");
      var status = byId("canvas-status");
      announce((status.getAttribute("data-connecting") || "").replace("NAME", el.getAttribute("aria-label").slice(5)));
    } else if (el.matches(".port.in") && press && connecting !== null) {
      event.preventDefault();
      var from = connecting;
      connecting = null;
      post("connect-" + from + "-" + index);
    } else if (el.matches(".edge-hit") && (key === "Delete" || key === "Backspace")) {
      event.preventDefault();
      post("disconnect-" + el.getAttribute("data-parent") + "-" + el.getAttribute("data-child"));
    }
  });

  // --- palette search, $name flags -------------------------------------------------------------------------

  document.addEventListener("input", function (event) {
    var el = event.target;
    if (el.id === "palette-search") {
      var term = el.value.trim().toLowerCase();
      document.querySelectorAll("#palette-panel .palette-group").forEach(function (group) {
        var shown = 0;
        group.querySelectorAll("[data-name]").forEach(function (b) {
          var hit = b.getAttribute("data-name").indexOf(term) !== -1;
          b.hidden = !hit;
          shown += hit ? 1 : 0;
        });
        group.hidden = shown === 0;
      });
    } else if (el.matches("textarea[data-node-index]")) {
      flagVariables(el);
    }
  });

  // the search box filters the palette; it is no field of the workflow: its changes are not posted
  document.addEventListener("change", function (event) {
    if (event.target.id === "palette-search") { event.stopPropagation(); }
  }, true);

  // A swap brings the server's verdict on the text it was sent; htmx puts the new classes on only when the swap
  // settles, over a flag set meanwhile. A command typed since (its text is not the one the server rendered, or
  // editor.js gave back what was typed while the answer was on its way) is flagged again for the text shown.
  document.addEventListener("htmx:afterSettle", function () {
    document.querySelectorAll("textarea[data-node-index]").forEach(function (t) {
      if (t.value !== t.defaultValue) { flagVariables(t); }
    });
  });

  var VARIABLE = /\$\{?([A-Za-z_][A-Za-z0-9_]*)/g;
  var ASSIGNED = /(?:^|[\s;&|(])(?:([A-Za-z_]\w*)=|for\s+([A-Za-z_]\w*)\s+in\b|read\s+(?:-\w+\s+)*([A-Za-z_]\w*))/g;

  function flagVariables(textarea) {
    var i = textarea.getAttribute("data-node-index"), k = "nodes-" + i, known = {}, m, unknown = [];
    document.querySelectorAll('[name^="' + k + '-inputs-"][name$="-name"], [name^="' + k + '-env-"][name$="-key"]').forEach(function (f) {
      known[f.value.trim()] = true;
    });
    while ((m = ASSIGNED.exec(textarea.value)) !== null) { [m[1], m[2], m[3]].forEach(function (n) { if (n) { known[n] = true; } }); }
    while ((m = VARIABLE.exec(textarea.value)) !== null) {
      var name = m[1];
      if (!known[name] && name !== name.toUpperCase() && unknown.indexOf("$" + name) === -1) { unknown.push("$" + name); }
    }
    var note = byId(k + "-unknown");
    if (note) { note.textContent = unknown.length ? note.getAttribute("data-template").replace("NAMES", unknown.join(", ")) : ""; }
    var g = nodeEl(i);
    // the server's own flags on the node (inputs lost with a deleted node) stay until the server clears them
    if (g) { g.classList.toggle("has-warning", unknown.length > 0 || g.hasAttribute("data-flagged")); }
  }
})();
