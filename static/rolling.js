/* Rolling maintenance pages: ask before the buttons that change things
   (their question is in data-question, written by the server), and keep the
   page of a running one current by loading it again every few seconds. A
   reload waits while a question is open: confirm() holds this script. */
(function () {
  "use strict";
  document.querySelectorAll("button[data-question]").forEach(function (button) {
    button.form.addEventListener("submit", function (event) {
      if (event.submitter === button && !window.confirm(button.getAttribute("data-question"))) event.preventDefault();
    });
  });
  var page = document.querySelector("[data-reload-seconds]");
  if (page) {
    window.setTimeout(function () { window.location.reload(); }, 1000 * Number(page.getAttribute("data-reload-seconds")));
  }
})();
