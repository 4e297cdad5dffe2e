/* kvmweb: what every live page shares. Formatting mirrors migrations_app/views.py
   (and Django's filesizeformat), so a figure looks the same before and after the
   socket first speaks. Text only ever goes in through textContent. */
(function () {
  "use strict";
  var NBSP = "\u00a0";
  var UNITS = [["KB", 1024], ["MB", Math.pow(1024, 2)], ["GB", Math.pow(1024, 3)],
               ["TB", Math.pow(1024, 4)], ["PB", Math.pow(1024, 5)]];

  function bytes(n) {
    n = Number(n);
    if (!isFinite(n)) return "—";
    var sign = n < 0 ? "-" : "";
    n = Math.abs(n);
    if (n < 1024) {
      var whole = Math.trunc(n);
      return sign + whole + NBSP + (whole === 1 ? "byte" : "bytes");
    }
    var unit = UNITS[0];
    for (var i = 0; i < UNITS.length; i++) if (n >= UNITS[i][1]) unit = UNITS[i];
    return sign + (Math.round((n / unit[1]) * 10) / 10).toFixed(1) + NBSP + unit[0];
  }

  function seconds(s) {
    s = Math.max(0, Math.round(Number(s)));
    var pad = function (x) { return (x < 10 ? "0" : "") + x; };
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + pad(s % 60) + " s";
    return Math.floor(s / 3600) + " h " + pad(Math.floor((s % 3600) / 60)) + " min";
  }

  function kindFor(key) {
    if (/_bps$/.test(key)) return "rate";
    if (/_ms$/.test(key)) return "ms";
    if (/(_seconds|elapsed|duration)$/.test(key)) return "seconds";
    if (/(_total|_processed|_remaining|_bytes|_transferred)$/.test(key)) return "bytes";
    return "plain";
  }

  function fmt(value, kind) {
    if (value === null || value === undefined || value === "") return "—";
    if (kind === "bool") return value ? "yes" : "no";
    if (typeof value !== "number") {
      if (typeof value === "object") return JSON.stringify(value);
      if (typeof value === "boolean") return value ? "True" : "False";
      return String(value);
    }
    switch (kind) {
      case "bytes": return bytes(value);
      case "rate": return bytes(value) + "/s";
      case "ms": return Math.round(value) + " ms";
      case "seconds": return seconds(value);
    }
    if (Number.isInteger(value)) return String(value);
    return value.toFixed(1).replace(/0+$/, "").replace(/\.$/, "");
  }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    if (attrs) for (var k in attrs) if (attrs[k] !== undefined && attrs[k] !== null) node.setAttribute(k, attrs[k]);
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function csrfToken(root) {
    var input = (root || document).querySelector("input[name=csrfmiddlewaretoken]");
    if (input) return input.value;
    var m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return m ? decodeURIComponent(m[1]) : "";
  }

  /* A WebSocket that comes back: 1 s, 2 s, 4 s… up to 30 s between tries, with
     jitter; the server sends the full state first on every connection. */
  function socket(path, handlers) {
    var delay = 1000, ws = null, stopped = false, timer = null;
    var url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
    function open() {
      timer = null;
      ws = new WebSocket(url);
      ws.onopen = function () { delay = 1000; if (handlers.open) handlers.open(); };
      ws.onmessage = function (e) {
        var msg;
        try { msg = JSON.parse(e.data); } catch (err) { return; }
        handlers.message(msg);
      };
      ws.onclose = function (e) {
        if (handlers.close) handlers.close(e);
        // 4403/4404: refused for good (logged out, no role, no such object).
        if (stopped || e.code === 4403 || e.code === 4404) return;
        timer = setTimeout(open, delay + Math.random() * 500);
        delay = Math.min(delay * 2, 30000);
      };
    }
    open();
    return {
      stop: function () { stopped = true; if (timer) clearTimeout(timer); if (ws) ws.close(); }
    };
  }

  var STATUS_COLOURS = { queued: "grey", checking: "blue", running: "blue", succeeded: "green",
                         failed: "red", cancelled: "orange" };
  var FINISHED = { succeeded: true, failed: true, cancelled: true };
  var CHECK_COLOURS = { pass: "green", warn: "orange", fail: "red" };

  function checkList(checks) {
    var ul = el("ul", { "class": "checklist" });
    if (!checks || !checks.length) ul.appendChild(el("li", { "class": "muted" }, "No checks recorded."));
    (checks || []).forEach(function (c) {
      var li = el("li", { "class": "check " + c.result });
      li.appendChild(el("span", { "class": "status " + (CHECK_COLOURS[c.result] || "grey") }, c.result));
      li.appendChild(document.createTextNode(" "));
      li.appendChild(el("strong", null, c.label || c.name));
      li.appendChild(document.createTextNode(" "));
      li.appendChild(el("span", { "class": "check-message" }, c.message));
      if (c.detail) {
        var d = el("details");
        d.appendChild(el("summary", null, "Details"));
        d.appendChild(el("pre", null, c.detail));
        li.appendChild(d);
      }
      ul.appendChild(li);
    });
    return ul;
  }

  window.kvmweb = { bytes: bytes, seconds: seconds, fmt: fmt, kindFor: kindFor, el: el,
                    csrfToken: csrfToken, socket: socket, checkList: checkList,
                    STATUS_COLOURS: STATUS_COLOURS, FINISHED: FINISHED };
})();
