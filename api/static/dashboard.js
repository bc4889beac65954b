// Hotline's only script. While the page's refreshing part says it is live (data-refresh), it
// fetches the page again every few seconds and swaps that part in, so the dashboard follows calls
// without a reload. Same origin only; nothing is loaded from elsewhere.
(function () {
  "use strict";
  var PERIOD_MS = 2000;
  function tick() {
    var current = document.getElementById("refresh");
    if (!current || !current.hasAttribute("data-refresh")) {
      return;
    }
    fetch(window.location.href, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (response.redirected || !response.ok) {
          throw new Error("refresh refused: " + response.status);
        }
        return response.text();
      })
      .then(function (html) {
        var next = new DOMParser().parseFromString(html, "text/html").getElementById("refresh");
        if (next) {
          current.replaceWith(next);
        }
      })
      .catch(function () { /* keep the page as it is and try again */ })
      .finally(function () { window.setTimeout(tick, PERIOD_MS); });
  }
  window.setTimeout(tick, PERIOD_MS);
})();
