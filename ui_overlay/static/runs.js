// The runs page: rows of runs that are queued or running follow their status live (every
// 3 s, without a reload); a change is announced once, politely, to screen readers.
(function () {
  "use strict";
  var live = document.getElementById("runs-live");
  var FINAL = ["succeeded", "failed", "timed_out", "cancelled", "crashed"];

  function pendingRows() {
    return Array.prototype.filter.call(
      document.querySelectorAll("tr[data-run-id]"),
      function (tr) { return FINAL.indexOf(tr.getAttribute("data-status")) < 0; });
  }

  function update(tr, run) {
    if (tr.getAttribute("data-status") === run.status) return null;
    tr.setAttribute("data-status", run.status);
    tr.querySelector(".run-status").innerHTML = run.badge;
    tr.querySelector(".run-duration").textContent = run.duration || "";
    tr.querySelector(".run-exit").textContent = run.exit_code === null ? "" : String(run.exit_code);
    return run.script_name + ": " + run.status_label;
  }

  function poll() {
    var rows = pendingRows();
    if (!rows.length) return;  // nothing left to follow
    if (document.hidden) { setTimeout(poll, 3000); return; }
    var byId = {};
    rows.forEach(function (tr) { byId[tr.getAttribute("data-run-id")] = tr; });
    fetch("/runs/status.json?ids=" + encodeURIComponent(Object.keys(byId).join(",")),
          { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(function (data) {
        var said = [];
        data.runs.forEach(function (run) {
          var tr = byId[run.id];
          if (!tr) return;
          var news = update(tr, run);
          if (news) said.push(news);
          else if (!run.final) tr.querySelector(".run-duration").textContent = run.duration || "";
        });
        if (said.length && live) live.textContent = said.join(". ");
      })
      .catch(function () {})
      .finally(function () { setTimeout(poll, 3000); });
  }
  setTimeout(poll, 3000);

  // Shareable addresses: leave the filters that are not set out of the URL.
  var form = document.querySelector("form.filters");
  if (form) {
    form.addEventListener("submit", function () {
      Array.prototype.forEach.call(form.elements, function (el) {
        if (el.name && !el.value) el.disabled = true;
      });
      // Re-enable them if the page stays (e.g. the browser keeps it in its back cache).
      setTimeout(function () {
        Array.prototype.forEach.call(form.elements, function (el) { el.disabled = false; });
      }, 0);
    });
  }
})();
