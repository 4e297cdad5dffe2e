/* Bars drawn from their data-percent: the Content-Security-Policy allows no
   style attributes in the page, but a script may set a width. */
(function () {
  "use strict";
  function draw() {
    var fills = document.querySelectorAll(".bar > span[data-percent]");
    for (var i = 0; i < fills.length; i++) {
      var percent = Math.max(0, Math.min(100, Number(fills[i].getAttribute("data-percent")) || 0));
      fills[i].style.width = percent + "%";
    }
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw);
  else draw();
})();
