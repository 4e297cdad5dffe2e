/* The migration form: loads in place where a page offers it (data-load-form),
   shows only the fields that apply, runs the pre-flight checks for the chosen
   target (a dry run through the API) and asks for confirmation before starting.
   Without JavaScript the same form works as a plain POST with a confirm page. */
(function () {
  "use strict";
  var K = window.kvmweb;
  if (!K) return;

  function value(form, name) {
    var field = form.elements[name];
    if (!field) return "";
    if (field.type === "checkbox") return field.checked;
    return field.value;  // a RadioNodeList's value is the checked radio's
  }

  function selectedText(select) {
    if (!select || select.selectedIndex < 0 || !select.value) return "";
    return select.options[select.selectedIndex].text;
  }

  function init(form) {
    if (form.dataset.ready) return;
    form.dataset.ready = "1";
    var slot = form.querySelector("[data-checks]");
    var startButton = form.querySelector("[data-start]");
    var sequence = 0;
    var timer = null;

    function targetName() { return selectedText(form.elements.target_host).split(" ")[0]; }
    function domainName() {
      return form.getAttribute("data-domain-name") || selectedText(form.elements.domain).split(" (on ")[0];
    }
    function sourceName() {
      if (form.getAttribute("data-source")) return form.getAttribute("data-source");
      var m = selectedText(form.elements.domain).match(/\(on ([^,]+),/);
      return m ? m[1] : "its host";
    }

    function toggle() {
      form.querySelectorAll("[data-show-if]").forEach(function (node) {
        node.hidden = !node.getAttribute("data-show-if").split(" ").some(function (cond) {
          var kv = cond.split("=");
          return value(form, kv[0]) === kv[1];
        });
      });
      // Only the chosen target's pools.
      var pool = form.elements.target_pool, host = targetName();
      if (pool) {
        pool.querySelectorAll("optgroup").forEach(function (group) {
          var mine = group.label === host;
          group.hidden = !mine;
          group.disabled = !mine;
        });
        var chosen = pool.options[pool.selectedIndex];
        if (chosen && chosen.parentNode.tagName === "OPTGROUP" && chosen.parentNode.disabled) pool.value = "";
      }
    }

    function show(nodes) { slot.replaceChildren.apply(slot, nodes); }

    function payload() {
      var bw = value(form, "bandwidth_mib");
      return {
        domain: Number(value(form, "domain")),
        target_host: Number(value(form, "target_host")),
        mode: value(form, "mode"),
        storage: value(form, "storage"),
        target_pool: value(form, "storage") === "copy" ? value(form, "target_pool") : "",
        policy: value(form, "policy") || "default",
        bandwidth_mib: bw ? Number(bw) : null,
        shutdown_timeout: Number(value(form, "shutdown_timeout")) || 120,
        force_off: value(form, "mode") === "cold" && value(form, "force_off") === "1",
        delete_source_volumes: !!value(form, "delete_source_volumes"),
        eject_media: !!value(form, "eject_media"),
        dry_run: true
      };
    }

    function problems(body) {
      var out = [];
      if (body && typeof body === "object") {
        if (body.detail) out.push(String(body.detail));
        Object.keys(body).forEach(function (key) {
          if (key === "detail" || !Array.isArray(body[key])) return;
          body[key].forEach(function (msg) { if (out.indexOf(String(msg)) < 0) out.push(String(msg)); });
        });
      }
      return out;
    }

    function runChecks() {
      clearTimeout(timer);
      if (!value(form, "domain") || !value(form, "target_host")) { show([]); return; }
      var mine = ++sequence;
      startButton.disabled = false;
      show([K.el("p", { "class": "muted" }, "Checking " + targetName() + "…")]);
      fetch(form.getAttribute("data-api"), {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json",
                   "X-CSRFToken": K.csrfToken(form) },
        body: JSON.stringify(payload())
      }).then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (body) {
          if (mine !== sequence) return;  // a newer check is on its way
          if (r.ok && body.dry_run) {
            var summary = body.ok ? "Nothing stands in the way."
                                  : "A check failed: this migration would not start.";
            show([K.el("h3", null, "Pre-flight checks for " + targetName()), K.checkList(body.checks),
                  K.el("p", { "class": body.ok ? "muted" : "error", "data-checks-summary": "" }, summary)]);
            startButton.disabled = !body.ok;
          } else {
            var msgs = problems(body);
            if (!msgs.length) msgs = ["The checks could not run (HTTP " + r.status + ")."];
            show(msgs.map(function (m) { return K.el("p", { "class": "error" }, m); }));
          }
        });
      }).catch(function () {
        if (mine === sequence) show([K.el("p", { "class": "error" }, "The checks could not run: no answer from the server.")]);
      });
    }

    function soon() { clearTimeout(timer); timer = setTimeout(runChecks, 250); }

    form.addEventListener("change", function (e) {
      toggle();
      if (["domain", "target_host", "mode", "storage", "target_pool"].indexOf(e.target.name) >= 0) soon();
    });

    form.addEventListener("submit", function (e) {
      var by = e.submitter;
      if (by && by.name === "check") { e.preventDefault(); runChecks(); return; }
      if (!by || !by.hasAttribute("data-start")) return;
      e.preventDefault();
      var vm = domainName(), target = targetName();
      var question;
      if (value(form, "mode") === "cold") {
        question = "Start a COLD migration of " + vm + " to " + target + "?\n\n" + vm +
          " will be SHUT DOWN on " + sourceName() + " and is unavailable until it has been copied " +
          "and started on " + target + ".";
        if (value(form, "force_off") === "1") question += " If it does not shut down in time it is powered off.";
        if (value(form, "delete_source_volumes")) question += " The source disks are deleted after the copy is verified.";
        if (value(form, "eject_media")) question += " CD-ROM and floppy images the target cannot see are ejected for the move.";
      } else {
        question = "Start a live migration of " + vm + " to " + target + "?\n\nIt keeps running and " +
          "pauses only for the final switch-over.";
      }
      if (!window.confirm(question)) return;
      var confirmed = K.el("input", { type: "hidden", name: "confirmed", value: "1" });
      form.appendChild(confirmed);
      form.submit();
    });

    toggle();
    if (value(form, "target_host") && !slot.children.length) soon();
  }

  function load(panel) {
    if (panel.dataset.loaded) return;
    panel.dataset.loaded = "1";
    var target = panel.querySelector("[data-form-slot]");
    fetch(panel.getAttribute("data-load-form"), { credentials: "same-origin" })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.text(); })
      .then(function (html) {
        // The fragment is our own server-rendered, escaped template, parsed
        // inertly (scripts in it would not run).
        var form = new DOMParser().parseFromString(html, "text/html").querySelector("form");
        if (!form) throw new Error("no form");
        target.replaceChildren(document.adoptNode(form));
        init(form);
      })
      .catch(function () { delete panel.dataset.loaded; });  // the link to the full form stays
  }

  document.querySelectorAll("[data-load-form]").forEach(function (panel) {
    panel.addEventListener("toggle", function () { if (panel.open) load(panel); });
    if (panel.open) load(panel);
  });
  document.querySelectorAll("form[data-migrate-form]").forEach(init);
})();
