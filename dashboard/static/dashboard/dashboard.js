/* The dashboard, live: running migrations with their progress, the hosts'
   VM counts when a migration moves a VM, and the split-brain alarms (from /ws/dashboard/). */
(function () {
  "use strict";
  var K = window.kvmweb;
  var panel = document.getElementById("live-migrations");
  if (!K || !panel) return;
  var tbody = panel.querySelector("tbody");
  var rows = {};  // migration id -> <tr>
  var KEEP_FINISHED_MS = 60000;

  function placeholder() {
    var empty = !Object.keys(rows).length;
    var ph = tbody.querySelector("tr.placeholder");
    if (empty) {
      // Also replaces the server's "waiting for the live feed" row once the
      // feed has said there is nothing running.
      var tr = K.el("tr", { "class": "placeholder" });
      tr.appendChild(K.el("td", { colspan: "4", "class": "muted" }, "No migration is running."));
      if (ph) ph.replaceWith(tr); else tbody.appendChild(tr);
    } else if (ph) {
      ph.remove();
    }
  }

  function upsert(m) {
    var tr = rows[m.id];
    if (!tr) {
      tr = K.el("tr", { "data-migration": m.id });
      rows[m.id] = tr;
      tbody.insertBefore(tr, tbody.firstChild);
    }
    var d = m.display;
    var vm = K.el("td");
    vm.appendChild(K.el("a", { href: m.url }, m.domain));
    var route = K.el("td", null, m.source + " → " + m.target + " (" + m.mode + ")");
    var status = K.el("td");
    status.appendChild(K.el("span", { "class": "status " + d.status_colour }, m.status_display));
    if (d.phase) status.appendChild(K.el("div", { "class": "small muted" }, d.phase));
    if (m.waiting_reason) status.appendChild(K.el("div", { "class": "small muted" }, m.waiting_reason));
    if (m.status === "failed" && m.error) status.appendChild(K.el("div", { "class": "small reason" }, m.error));
    var progress = K.el("td");
    // A bar only where progress cannot go back (d.bar, a cold copy); a live
    // migration's summary says its pass and the memory left instead.
    if (d.bar !== null) {
      var bar = K.el("div", { "class": "bar" });
      var fill = K.el("span");
      fill.style.width = d.bar + "%";
      bar.appendChild(fill);
      progress.appendChild(bar);
    }
    progress.appendChild(K.el("div", { "class": "small" }, d.summary));
    tr.replaceChildren(vm, route, status, progress);
    if (d.finished && !tr.dataset.leaving) {
      tr.dataset.leaving = "1";
      setTimeout(function () { tr.remove(); delete rows[m.id]; placeholder(); }, KEEP_FINISHED_MS);
    }
    placeholder();
  }

  // The hosts' counts, and the line above their table as the server wrote it.
  function hosts(list, sentence) {
    if (!list) return;
    var summary = document.querySelector('[data-bind="summary"]');
    if (summary && sentence) summary.textContent = sentence;
    list.forEach(function (h) {
      var tr = document.querySelector('#hosts tr[data-host="' + CSS.escape(h.name) + '"]');
      if (!tr) return;
      tr.querySelector("td.vms").replaceChildren(K.el("span", { "class": "count" }, h.running_count),
                                                 document.createTextNode(" running / " + h.domain_count));
      if (h.capacity) capacity(tr.querySelector(".capacity"), h.capacity);
      // A host never read when the page was made has been read now: its figures come with a reload.
      if (h.status === "online") tr.querySelectorAll(".not-read").forEach(function (td) {
        td.classList.remove("not-read");
        td.replaceChildren(K.el("a", { href: location.pathname }, "read now: reload for its figures"));
      });
      var badge = tr.querySelector(".maintenance");
      if (badge) badge.hidden = !h.maintenance;
    });
  }

  // The committed-memory bar (templates/hosts/_capacity.html), from Capacity.as_bar():
  // the server computes the widths, colour and words; this only places them.
  function capacity(box, c) {
    if (!box) return;
    var bar = box.querySelector(".bar");
    bar.className = "bar stacked" + (c.level ? " " + c.level : "");
    bar.querySelector(".running").style.width = c.running + "%";
    bar.querySelector(".incoming").style.width = c.incoming + "%";
    box.querySelector('[data-bind="capacity"]').textContent = c.summary;
  }

  function moved(d) {
    var ul = panel.querySelector('[data-bind="moved"]');
    var li = K.el("li", null, d.name + " now runs on " + d.host + ".");
    ul.insertBefore(li, ul.firstChild);
    while (ul.children.length > 5) ul.lastChild.remove();
  }

  // The split-brain alarms: VMs running on several hosts at once.
  var alarms = document.getElementById("alarms");
  function alarm(d) {
    if (!alarms) return;
    var ul = alarms.querySelector('[data-bind="alarms"]');
    var li = ul.querySelector('li[data-domain="' + CSS.escape(String(d.id)) + '"]');
    if (d.split_brain && !d.removed) {
      var item = K.el("li", { "data-domain": d.id });
      item.appendChild(K.el("a", { href: d.url }, d.name));
      item.appendChild(document.createTextNode(" runs on " + d.running_on.join(" and ") + " at once."));
      if (li) li.replaceWith(item); else ul.appendChild(item);
    } else if (li) {
      li.remove();
    }
    alarms.hidden = !ul.children.length;
  }

  var live = panel.querySelector('[data-bind="live"]');
  K.socket("/ws/dashboard/", {
    open: function () { live.hidden = false; },
    close: function () { live.hidden = true; },
    message: function (msg) {
      if (msg.type === "dashboard.state") {
        // Full state: drop what we had and show what is running now.
        Object.keys(rows).forEach(function (id) { rows[id].remove(); });
        rows = {};
        (msg.migrations || []).slice().reverse().forEach(upsert);
        hosts(msg.hosts, msg.hosts_summary);
        placeholder();
        if (alarms) alarms.querySelector('[data-bind="alarms"]').replaceChildren();
        (msg.alarms || []).forEach(alarm);
      } else if (msg.type === "dashboard.migration") {
        upsert(msg.migration);
      } else if (msg.type === "dashboard.domain") {
        alarm(msg.domain);
      } else if (msg.type === "dashboard.hosts") {
        hosts(msg.hosts, msg.hosts_summary);
        if (msg.moved) moved(msg.moved);
      }
    }
  });
})();
