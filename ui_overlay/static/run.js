// The run page: follows the output as it arrives, updates the status, cancels in place.
(function () {
  "use strict";
  var box = document.getElementById("output");
  if (!box) return;
  var src = box.getAttribute("data-src");
  var cursor = "";
  var follow = true;
  var done = false;
  var hint = document.getElementById("output-follow");
  var cancelForm = document.getElementById("cancel-form");
  var statusEl = document.getElementById("run-status");

  box.addEventListener("scroll", function () {
    // Auto-scroll only while the reader is at the bottom; scrolling up pauses it.
    follow = box.scrollHeight - box.scrollTop - box.clientHeight < 24;
    if (hint) hint.hidden = follow || done;
  });

  function addLines(lines) {
    if (!lines.length) return;
    var frag = document.createDocumentFragment();
    lines.forEach(function (ln) {
      var span = document.createElement("span");
      span.className = "line " + ln.stream;
      span.textContent = ln.text;
      if (ln.stream === "stderr") span.title = box.getAttribute("data-stderr");
      frag.appendChild(span);
    });
    box.appendChild(frag);
    if (follow) box.scrollTop = box.scrollHeight;
  }

  function setText(id, value) {
    var el = document.getElementById(id);
    if (el && el.textContent !== value) el.textContent = value;
  }

  function showRun(run, badgeHtml) {
    if (statusEl && statusEl.getAttribute("data-status") !== run.status) {
      statusEl.setAttribute("data-status", run.status);
      statusEl.innerHTML = badgeHtml;
    }
    setText("run-exit", run.exit_code === null ? "" : String(run.exit_code));
    if (run.started_label) setText("run-started", run.started_label);
    if (run.duration_seconds !== null) setText("run-duration", run.duration_label || "");
  }

  function poll() {
    var url = src + (cursor ? "?after=" + encodeURIComponent(cursor) : "");
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(function (data) {
        addLines(data.lines);
        cursor = data.next;
        if (data.run) showRun(data.run, data.badge);
        if (data.complete) {
          done = true;
          if (cancelForm) {
            // Focus on the vanishing Cancel button would fall back to the page's start.
            var hadFocus = cancelForm.contains(document.activeElement);
            cancelForm.hidden = true;
            if (hadFocus && statusEl) { statusEl.tabIndex = -1; statusEl.focus(); }
          }
          if (hint) hint.hidden = true;
          if (!box.children.length) box.textContent = box.getAttribute("data-empty");
          return;
        }
        setTimeout(poll, data.lines.length ? 150 : 400);
      })
      .catch(function () { setTimeout(poll, 2000); });
  }

  if (cancelForm) {
    var cancelling = false;
    cancelForm.addEventListener("submit", function (ev) {
      ev.preventDefault();
      // A flag, not btn.disabled: disabling the focused button would drop keyboard focus.
      if (cancelling) return;
      cancelling = true;
      fetch(cancelForm.action, {
        method: "POST", credentials: "same-origin",
        headers: { "Accept": "application/json", "X-CSRF-Token": cancelForm.csrf_token.value },
      }).finally(function () { cancelling = false; });
    });
  }
  poll();
})();
