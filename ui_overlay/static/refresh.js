// Re-renders a region from the server every few seconds (dashboard rows) without a reload.
(function () {
  "use strict";
  document.querySelectorAll("[data-refresh]").forEach(function (el) {
    var url = el.getAttribute("data-refresh");
    var busy = false;
    setInterval(function () {
      if (busy || document.hidden) return;
      // Do not replace the rows while someone is using a control inside them.
      if (el.contains(document.activeElement)) return;
      busy = true;
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) { if (html !== null && html !== el.innerHTML) el.innerHTML = html; })
        .catch(function () {})
        .finally(function () { busy = false; });
    }, 3000);
  });
})();
