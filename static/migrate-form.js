/* The migration form: loads in place where a page offers it (data-load-form),
   shows only the fields that apply, runs the pre-flight checks for the chosen
   target and asks for confirmation before starting, both rendered by the server.
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
        if (!chosen || !chosen.value || chosen.parentNode.disabled) {
          // The server's default for this host (the source's pool name, else
          // the most room), or the empty choice, which means the same.
          // Selected as an option, not by value: other hosts' groups have pools of the same name.
          var fallback = pool.querySelector("optgroup:not([disabled]) option[data-default]");
          if (fallback) fallback.selected = true;
          else pool.value = "";
        }
      }
    }

    function show(nodes) { slot.replaceChildren.apply(slot, nodes); }

    // The server renders the form again for what is chosen now: with the
    // check results (POST check=1), or, for a start, the sentence that says
    // what will happen (the confirmation page's). Both as in its templates.
    function ask(extra) {
      var body = new FormData(form);
      Object.keys(extra).forEach(function (k) { body.append(k, extra[k]); });
      var url = form.getAttribute("action") || location.pathname;
      return fetch(url + (url.indexOf("?") < 0 ? "?" : "&") + "fragment=1", {
        method: "POST", credentials: "same-origin", body: body, headers: { "X-CSRFToken": K.csrfToken(form) }
      }).then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.text();
      }).then(function (html) {
        return new DOMParser().parseFromString(html, "text/html");
      });
    }

    // What the server said is wrong with the form, as it shows it.
    function errors(doc) {
      var found = Array.prototype.map.call(doc.querySelectorAll(".form-errors li, .errorlist li"), function (li) {
        return K.el("p", { "class": "error" }, li.textContent);
      });
      // "Already being migrated": the link to that migration, as the server made it.
      var link = doc.querySelector("[data-refusal-link]");
      if (link) found.push(document.adoptNode(link));
      return found;
    }

    // The VM chosen in the dashboard's form: its own host is no target, and a
    // VM with local disks has them copied (the server marks both on the option).
    function followDomain() {
      var select = form.elements.domain;
      if (!select || select.tagName !== "SELECT") return;
      var option = select.options[select.selectedIndex];
      var host = option ? option.getAttribute("data-host") : null;
      var targets = form.elements.target_host;
      Array.prototype.forEach.call(targets.options, function (o) {
        if (!o.value) return;
        var own = o.getAttribute("data-name") === host;
        if (own) o.disabled = true;
        else if (o.hasAttribute("data-own")) o.disabled = false;
        o.toggleAttribute("data-own", own);
        if (own && o.selected) targets.value = "";
      });
      if (option && option.value) {
        var copy = option.getAttribute("data-local") === "1";
        var radio = form.querySelector('input[name=storage][value="' + (copy ? "copy" : "shared") + '"]');
        if (radio) radio.checked = true;
      }
    }

    function runChecks() {
      clearTimeout(timer);
      // "Migrate…" waits for the checks: it is enabled only once they pass.
      startButton.disabled = true;
      if (!value(form, "domain") || !value(form, "target_host")) { show([]); return; }
      var mine = ++sequence;
      show([K.el("p", { "class": "muted" }, "Checking " + targetName() + "…")]);
      ask({ check: "1" }).then(function (doc) {
        if (mine !== sequence) return;  // a newer check is on its way
        var checks = doc.querySelector("[data-checks]");
        var summary = checks && checks.querySelector("[data-checks-summary]");
        if (summary) {
          show([K.el("h3", null, "Pre-flight checks for " + targetName())].concat(K.adopt(checks.childNodes)));
          startButton.disabled = summary.getAttribute("data-ok") !== "true";
        } else {
          var found = errors(doc);
          show(found.length ? found : [K.el("p", { "class": "error" }, "The checks could not run.")]);
        }
      }).catch(function () {
        if (mine !== sequence) return;
        show([K.el("p", { "class": "error" }, "The checks could not run: no answer from the server.")]);
        startButton.disabled = false;  // the server checks again when asked to start
      });
    }

    function soon() { clearTimeout(timer); timer = setTimeout(runChecks, 250); }

    form.addEventListener("change", function (e) {
      if (e.target.name === "domain") followDomain();
      toggle();
      if (["domain", "target_host", "mode", "storage", "target_pool"].indexOf(e.target.name) >= 0) soon();
    });

    form.addEventListener("submit", function (e) {
      var by = e.submitter;
      if (by && by.name === "check") { e.preventDefault(); runChecks(); return; }
      if (!by || !by.hasAttribute("data-start")) return;
      e.preventDefault();
      ask({}).then(function (doc) {
        var question = doc.querySelector("[data-summary]");
        if (!question) { show(errors(doc)); startButton.disabled = true; return; }
        if (!window.confirm(question.textContent)) return;
        form.appendChild(K.el("input", { type: "hidden", name: "confirmed", value: "1" }));
        form.submit();
      }).catch(function () { form.submit(); });  // the confirmation page asks instead
    });

    followDomain();
    toggle();
    if (value(form, "target_host") && !slot.children.length) soon();
    else if (!value(form, "target_host")) startButton.disabled = true;  // nothing to check yet
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
