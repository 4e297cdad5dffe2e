/* The evacuation page: the server rendered the current state; this keeps it
   current from /ws/evacuations/<id>/ (full state first, then every change).
   Every text comes formatted from the server; this only places it. */
(function () {
  "use strict";
  var K = window.kvmweb;
  var stateNode = document.getElementById("evacuation-state");
  if (!K || !stateNode) return;
  var state = JSON.parse(stateNode.textContent);

  function bind(name) { return document.querySelector('[data-bind="' + name + '"]'); }

  function row(item) {
    var tr = K.el("tr", { "data-domain": item.domain_name });
    tr.appendChild(K.el("td", null, item.domain_name));
    tr.appendChild(K.el("td", null, item.source_name));
    tr.appendChild(K.el("td", null, item.target_name));
    tr.appendChild(K.el("td", { "data-field": "state" }, item.state_display + (item.phase ? " · " + item.phase : "")));
    tr.appendChild(K.el("td", { "data-field": "percent" }, item.percent_display));
    var cell = K.el("td", { "data-field": "migration" });
    if (item.migration) cell.appendChild(K.el("a", { href: "/migrations/" + item.migration + "/" }, "#" + item.migration));
    tr.appendChild(cell);
    tr.appendChild(K.el("td", { "data-field": "error", "class": "small" }, item.error));
    return tr;
  }

  function render(e) {
    state = e;
    var badge = bind("status");
    badge.textContent = e.status_display;
    badge.className = "status " + e.status_colour;
    bind("progress").textContent = e.progress_display;
    var finished = e.finished;
    bind("cancel_requested").hidden = !(e.cancel_requested && !finished);
    var cancelForm = document.querySelector("[data-cancel-form]");
    if (cancelForm) {
      if (finished) cancelForm.hidden = true;
      else if (e.cancel_requested) cancelForm.querySelector("button").disabled = true;
    }
    if (e.plan.length) bind("moves").replaceChildren.apply(bind("moves"), e.plan.map(row));
    var left = document.querySelector('[data-section="left"]');
    left.hidden = !e.left.length;
    bind("left").replaceChildren.apply(bind("left"), e.left.map(function (l) {
      var li = K.el("li");
      li.appendChild(K.el("strong", null, l.domain_name));
      li.appendChild(document.createTextNode(": " + l.reason));
      return li;
    }));
    document.title = e.kind_display + " #" + e.id + " of " + e.subject + " (" + e.status_display + ") · kvmweb";
  }

  K.socket("/ws/evacuations/" + state.id + "/", {
    message: function (msg) {
      if (msg.evacuation) render(msg.evacuation);
    }
  });
})();
