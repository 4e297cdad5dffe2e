/* kvmweb: what every live page shares. The server formats every figure, label
   and colour (core/formatting.py, migrations_app/display.py); the scripts
   only put its text in place, through textContent, or its fragments, parsed
   inertly. */
(function () {
  "use strict";
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

  /* The nodes of an HTML fragment the server rendered (escaped by its
     templates), parsed inertly: scripts in it would not run. */
  function fragment(html) {
    var body = new DOMParser().parseFromString(html || "", "text/html").body;
    return adopt(body.childNodes);
  }

  /* Nodes of another document, moved into this one (a copy of the list first:
     moving a node takes it out of the live list). */
  function adopt(nodes) {
    return Array.prototype.slice.call(nodes).map(function (node) { return document.adoptNode(node); });
  }

  window.kvmweb = { el: el, csrfToken: csrfToken, socket: socket, fragment: fragment, adopt: adopt };
})();
