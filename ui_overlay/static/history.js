// Loads the parts of a page that need Prefect (a script's run summary, the retention
// figures) after the page itself, so that the page never waits for them. Without
// JavaScript the placeholder's link opens them as a page of their own.
(function () {
  "use strict";
  Array.prototype.forEach.call(document.querySelectorAll("[data-fragment]"), function (el) {
    if (el.getAttribute("data-loaded")) return;
    el.setAttribute("data-loaded", "1");
    el.setAttribute("aria-busy", "true");
    fetch(el.getAttribute("data-fragment"), { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) { el.innerHTML = html; })
      .catch(function () {})
      .finally(function () { el.removeAttribute("aria-busy"); });
  });
})();
