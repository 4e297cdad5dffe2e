/* The migration page: the server rendered the current state; this keeps it
   current from /ws/migrations/<id>/ and draws the remaining-memory chart. */
(function () {
  "use strict";
  var K = window.kvmweb;
  var stateNode = document.getElementById("migration-state");
  if (!K || !stateNode) return;
  var state = JSON.parse(stateNode.textContent);
  var id = state.id;
  var points = [];        // [seconds since the first sample, bytes remaining]
  var lastSample = null;  // sampled_at of the newest point
  var firstSample = null;
  var checksKnown = state.checks !== undefined && state.checks.length > 0;

  function bind(name) { return document.querySelector('[data-bind="' + name + '"]'); }
  function section(name) { return document.querySelector('[data-section="' + name + '"]'); }

  function render(m) {
    var previous = state;
    state = m;
    var badge = bind("status");
    badge.textContent = m.status_display;
    badge.className = "status " + (K.STATUS_COLOURS[m.status] || "grey");
    bind("phase").textContent = m.phase_display;
    document.title = "Migration #" + id + ": " + m.domain + " (" + m.status_display + ") · kvmweb";

    var p = m.progress || {};
    var percent = Math.max(0, Math.min(100, Math.round(Number(p.percent) || 0)));
    if (m.status === "succeeded") percent = 100;
    var bar = bind("bar");
    bar.setAttribute("aria-valuenow", percent);
    bar.firstElementChild.style.width = percent + "%";
    bind("percent").textContent = String(percent);
    document.querySelectorAll("#progress [data-field]").forEach(function (dd) {
      dd.textContent = K.fmt(p[dd.getAttribute("data-field")], dd.getAttribute("data-kind"));
    });
    addPoint(p);

    var finished = !!K.FINISHED[m.status];
    bind("cancel_requested").hidden = !(m.cancel_requested && !finished);
    var cancelForm = document.querySelector("[data-cancel-form]");
    if (cancelForm) {
      if (finished) cancelForm.hidden = true;
      else if (m.cancel_requested) cancelForm.querySelector("button").disabled = true;
    }

    section("error").hidden = !m.error;
    bind("error").textContent = m.error || "";
    section("error_detail").hidden = !m.error_detail;
    bind("error_detail").textContent = m.error_detail || "";

    renderStats(m.stats || {});
    renderEvents(m.events || []);
    if (m.checks !== undefined) {
      renderChecks(m.checks);
    } else if (!checksKnown && (previous.status !== m.status || finished)) {
      fetchChecks();
    }
  }

  var labelsNode = document.getElementById("stat-labels");
  var STAT_LABELS = labelsNode ? JSON.parse(labelsNode.textContent) : {};

  function renderStats(stats) {
    var keys = Object.keys(stats);
    section("stats").hidden = keys.length === 0;
    var dl = bind("stats");
    dl.replaceChildren();
    keys.forEach(function (key) {
      var label = STAT_LABELS[key] || key.replace(/_/g, " ");
      dl.appendChild(K.el("dt", null, label.charAt(0).toUpperCase() + label.slice(1)));
      dl.appendChild(K.el("dd", null, K.fmt(stats[key], K.kindFor(key))));
    });
  }

  function renderEvents(events) {
    var ol = bind("events");
    ol.replaceChildren();
    if (!events.length) ol.appendChild(K.el("li", { "class": "muted" }, "Nothing yet."));
    events.forEach(function (e) {
      var li = K.el("li");
      li.appendChild(K.el("time", { datetime: e.at }, String(e.at || "").slice(11, 19)));
      li.appendChild(document.createTextNode(" " + (e.message || "")));
      ol.appendChild(li);
    });
  }

  function renderChecks(checks) {
    if (!checks || !checks.length) return;
    checksKnown = true;
    bind("checks").replaceChildren(K.checkList(checks));
  }

  // The socket's state has no checks; the API has them once the worker ran them.
  function fetchChecks() {
    fetch("/api/migrations/" + id + "/", { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (body) { if (body && body.checks) renderChecks(body.checks); })
      .catch(function () {});
  }

  function addPoint(p) {
    var remaining = p.memory_remaining !== undefined && p.memory_remaining !== null ? p.memory_remaining : p.data_remaining;
    if (remaining === undefined || remaining === null || !p.sampled_at || p.sampled_at === lastSample) return;
    // A sample taken before libvirt knew the size says "0 remaining": not a point.
    if (!(Number(p.memory_total) || Number(p.data_total))) return;
    if (firstSample === null) firstSample = p.sampled_at;
    lastSample = p.sampled_at;
    points.push([p.sampled_at - firstSample, Number(remaining)]);
    if (points.length > 2000) points.shift();
    drawChart();
  }

  function drawChart() {
    var svg = document.getElementById("chart");
    if (!svg || !points.length) return;
    var w = 600, h = 160, pad = 4;
    var xmax = Math.max(points[points.length - 1][0] - points[0][0], 1);
    var ymax = Math.max.apply(null, points.map(function (pt) { return pt[1]; })) || 1;
    var coords = points.map(function (pt) {
      var x = ((pt[0] - points[0][0]) / xmax) * (w - 2 * pad) + pad;
      var y = h - pad - (pt[1] / ymax) * (h - 2 * pad);
      return x.toFixed(1) + "," + y.toFixed(1);
    });
    svg.querySelector("polyline").setAttribute("points", coords.join(" "));
    bind("chart-scale").textContent = " (top: " + K.bytes(ymax) + ", " + K.seconds(xmax) + " shown)";
  }

  // Cancel through the API, after a confirmation; the form is the fallback.
  var cancelForm = document.querySelector("[data-cancel-form]");
  if (cancelForm) {
    cancelForm.addEventListener("submit", function (e) {
      e.preventDefault();
      var question = "Cancel the migration of " + cancelForm.getAttribute("data-domain") + "? It stays on " +
        cancelForm.getAttribute("data-source") + ".";
      if (!window.confirm(question)) return;
      var button = cancelForm.querySelector("button");
      button.disabled = true;
      fetch(cancelForm.getAttribute("data-api"), {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRFToken": K.csrfToken(cancelForm), Accept: "application/json" }
      }).then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (body) {
          var notice = bind("cancel_requested");
          if (r.ok) {
            if (!K.FINISHED[state.status]) { notice.textContent = "Cancel requested: stopping…"; notice.hidden = false; }
          } else {
            notice.textContent = body.detail || ("Could not cancel (HTTP " + r.status + ").");
            notice.hidden = false;
            button.disabled = false;
          }
        });
      }).catch(function () { button.disabled = false; cancelForm.submit(); });
    });
  }

  addPoint(state.progress || {});
  if (!K.FINISHED[state.status]) {
    var live = bind("live");
    var sock = K.socket("/ws/migrations/" + id + "/", {
      open: function () { live.hidden = false; },
      close: function () { live.hidden = true; },
      message: function (msg) {
        if (!msg.migration) return;
        render(msg.migration);
        if (K.FINISHED[msg.migration.status]) sock.stop();
      }
    });
  }
})();
