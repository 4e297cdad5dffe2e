/* The migration page: the server rendered the current state; this keeps it
   current from /ws/migrations/<id>/, placing the text each update carries
   (migration.display: figures, colours, the chart, the check list). */
(function () {
  "use strict";
  var K = window.kvmweb;
  var stateNode = document.getElementById("migration-state");
  if (!K || !stateNode) return;
  var state = JSON.parse(stateNode.textContent);
  var id = state.id;

  function bind(name) { return document.querySelector('[data-bind="' + name + '"]'); }
  function section(name) { return document.querySelector('[data-section="' + name + '"]'); }

  function rows(node, list) {
    node.replaceChildren();
    list.forEach(function (row) {
      node.appendChild(K.el("dt", null, row.label));
      node.appendChild(K.el("dd", null, row.text));
    });
  }

  function render(m) {
    state = m;
    var d = m.display;
    var badge = bind("status");
    badge.textContent = m.status_display;
    badge.className = "status " + d.status_colour;
    section("phase").hidden = d.finished;  // a phase is live only while it runs
    bind("phase").textContent = d.finished ? "" : m.phase_display;
    var waiting = bind("waiting_reason");
    waiting.textContent = m.waiting_reason || "";
    waiting.hidden = !m.waiting_reason;
    document.title = "Migration #" + id + ": " + m.domain + " (" + m.status_display + ") · kvmweb";

    var headline = bind("headline");
    headline.textContent = d.headline;
    headline.hidden = !d.headline;
    // A bar only for progress that cannot go back (d.bar is null otherwise).
    var bar = bind("bar");
    bar.hidden = d.bar === null;
    if (d.bar !== null) {
      bar.setAttribute("aria-valuenow", d.bar);
      bar.firstElementChild.style.width = d.bar + "%";
    }
    var figures = bind("figures");
    figures.replaceChildren();
    figures.hidden = !d.progress.length && !d.outcome.length;
    d.progress.concat(d.outcome).forEach(function (row) {
      figures.appendChild(K.el("dt", null, row.label));
      figures.appendChild(K.el("dd", { "data-field": row.key }, row.text));
    });
    document.querySelector('#chart [data-series="sent"]').setAttribute("points", d.chart.points);
    document.querySelector('#chart [data-series="remaining"]').setAttribute("points", d.chart.remaining_points);
    bind("chart-scale").textContent = d.chart.scale ? " (" + d.chart.scale + ")" : ": nothing sent yet";

    bind("cancel_requested").hidden = !(m.cancel_requested && !d.finished);
    var cancelForm = document.querySelector("[data-cancel-form]");
    if (cancelForm) {
      if (d.finished) cancelForm.hidden = true;
      else if (m.cancel_requested) cancelForm.querySelector("button").disabled = true;
    }

    section("error").hidden = !m.error;
    bind("error").textContent = m.error || "";
    section("error_detail").hidden = !m.error_detail;
    bind("error_detail").textContent = m.error_detail || "";

    section("stats").hidden = d.stats.length === 0;
    rows(bind("stats"), d.stats);

    section("earlier-events").hidden = d.events_total <= d.events.length;
    bind("events-shown").textContent = String(d.events.length);
    bind("events-total").textContent = String(d.events_total);
    var events = bind("events");
    events.replaceChildren();
    if (!d.events.length) events.appendChild(K.el("li", { "class": "muted" }, "Nothing yet."));
    d.events.forEach(function (e) {
      var li = K.el("li");
      li.appendChild(K.el("time", { datetime: e.at }, e.time));
      li.appendChild(document.createTextNode(" " + e.message));
      events.appendChild(li);
    });

    if (d.checks_html) bind("checks").replaceChildren.apply(bind("checks"), K.fragment(d.checks_html));
  }

  // Cancel through the API, after a confirmation; the form is the fallback.
  var cancelForm = document.querySelector("[data-cancel-form]");
  if (cancelForm) {
    cancelForm.addEventListener("submit", function (e) {
      e.preventDefault();
      if (!window.confirm(cancelForm.getAttribute("data-question"))) return;
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
            if (!state.display.finished) { notice.textContent = "Cancel requested: stopping…"; notice.hidden = false; }
          } else {
            notice.textContent = body.detail || ("Could not cancel (HTTP " + r.status + ").");
            notice.hidden = false;
            button.disabled = false;
          }
        });
      }).catch(function () { button.disabled = false; cancelForm.submit(); });
    });
  }

  if (!state.display.finished) {
    var live = bind("live");
    var sock = K.socket("/ws/migrations/" + id + "/", {
      open: function () { live.hidden = false; },
      close: function () { live.hidden = true; },
      message: function (msg) {
        if (!msg.migration) return;
        render(msg.migration);
        if (msg.migration.display.finished) sock.stop();
      }
    });
  }
})();
