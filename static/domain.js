/* A VM's page, live: its state, where it runs, where else it is defined and
   the split-brain alarm follow the inventory (its own socket, /ws/domains/<id>/:
   domain.state first, then domain.update as libvirt reports changes). */
(function () {
  "use strict";
  var K = window.kvmweb;
  var root = document.getElementById("domain-live");
  if (!K || !root) return;
  function bind(name) { return document.querySelector('[data-bind="' + name + '"]'); }

  function show(d) {
    var state = bind("state");
    if (d.removed) {
      state.className = "status grey";
      state.textContent = "No longer defined on any host";
      return;
    }
    state.className = "status " + d.state_colour;
    state.textContent = d.state_label;
    var host = bind("host");
    host.textContent = d.host;
    host.href = "/hosts/" + encodeURIComponent(d.host) + "/";
    var also = bind("also-defined");
    // The remove links are the server's to draw: a reload brings them back.
    also.replaceChildren(document.createTextNode(d.also_defined.length ?
      d.also_defined.map(function (o) { return "on " + o.host + " (" + o.state_label + ")"; }).join("; ") :
      "nowhere else"));
    var alarm = bind("split-brain");
    alarm.hidden = !d.split_brain;
    bind("split-brain-text").textContent = d.name + " runs on " + d.running_on.join(" and ") + " at once.";
  }

  K.socket(root.dataset.ws, {
    message: function (msg) {
      if (msg.type === "domain.state" || msg.type === "domain.update") show(msg.domain);
    }
  });
})();
