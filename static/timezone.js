/* Tell the server the browser's time zone (cookie kvmweb_tz, core/timezones.py),
   so that the pages that follow show dates in it. */
(function () {
  "use strict";
  var zone;
  try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone; } catch (e) { return; }
  // IANA names (Europe/Berlin) are safe in a cookie as they are; the server reads them unquoted.
  if (!zone || !/^[A-Za-z0-9_+\/-]+$/.test(zone)) return;
  var current = (document.cookie.match(/(?:^|; )kvmweb_tz=([^;]*)/) || [])[1];
  if (current === zone) return;
  document.cookie = "kvmweb_tz=" + zone + "; path=/; max-age=31536000; samesite=lax" +
    (location.protocol === "https:" ? "; secure" : "");
})();
