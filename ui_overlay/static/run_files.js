// The run page's "Files this run created or changed": listed when the run ends, without a
// reload (the list is written before the run's final status, so one fetch is enough).
(function () {
  "use strict";
  var slot = document.getElementById("run-files-slot");
  var status = document.getElementById("run-status");
  var facts = document.getElementById("run-facts");
  if (!slot || !status || !facts || facts.getAttribute("data-final") === "true") return;
  var live = { queued: true, running: true };
  var observer = new MutationObserver(function () {
    if (live[status.getAttribute("data-status")]) return;
    observer.disconnect();
    fetch(slot.getAttribute("data-src"), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : ""; })
      .then(function (html) { if (html.trim()) slot.innerHTML = html; })
      .catch(function () { /* the list shows on the next visit */ });
  });
  observer.observe(status, { attributes: true, attributeFilter: ["data-status"] });
})();
