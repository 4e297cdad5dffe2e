/* The tab's title carries the status of what the page follows (a migration, an
   evacuation): "Running · Migration #5: web01 · kvmweb", kept up to date as the
   page's live script changes the status in the heading. */
(function () {
  "use strict";
  var el = document.querySelector("h1 [data-bind=status]");
  if (!el) return;
  var base = document.title;
  var first = el.textContent.trim();
  if (first && base.indexOf(first + " · ") === 0) base = base.slice(first.length + 3);
  function show() {
    var status = el.textContent.trim();
    document.title = status ? status + " · " + base : base;
  }
  show();
  new MutationObserver(show).observe(el, { childList: true, characterData: true, subtree: true });
})();
