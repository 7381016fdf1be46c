// The schedule form: shows the fields of the chosen frequency and a live preview of the
// next runs (computed by the server from the same schedule Prefect will run).
(function () {
  "use strict";
  var form = document.querySelector("form[data-preview]");
  if (!form) return;
  var list = document.getElementById("sf-preview");
  var words = document.getElementById("sf-words");
  var error = document.getElementById("sf-error");
  var timer = null;

  function showFields() {
    var f = form.frequency.value;
    document.getElementById("sf-days").hidden = f !== "weekly";
    document.getElementById("sf-month").hidden = f !== "monthly";
  }

  function fmt(iso, tz) {
    var opts = { dateStyle: "full", timeStyle: "short" };
    if (tz) opts.timeZone = tz;
    try { return new Intl.DateTimeFormat(document.documentElement.lang, opts).format(new Date(iso)); }
    catch (e) { return iso; }
  }

  function render(data) {
    error.hidden = true;
    words.textContent = data.description || "";
    list.innerHTML = "";
    var tz = form.timezone.value;
    var mine = Intl.DateTimeFormat().resolvedOptions().timeZone;
    data.notes.forEach(function (row) {
      var li = document.createElement("li");
      li.textContent = fmt(row.at, tz) + " (" + tz + ")";
      if (mine && mine !== tz) li.textContent += " · " + list.getAttribute("data-yours") + ": " + fmt(row.at, mine);
      if (row.note) {
        var em = document.createElement("em");
        em.className = "note";
        em.textContent = " — " + list.getAttribute(row.note === "dst_gap" ? "data-gap" : "data-short");
        li.appendChild(em);
      }
      list.appendChild(li);
    });
  }

  function refresh() {
    var body = new FormData(form);
    body.delete("file");  // the upload form: the preview needs only the schedule fields
    fetch(form.getAttribute("data-preview"), {
      method: "POST", body: body, credentials: "same-origin",
      headers: { "Accept": "application/json", "X-CSRF-Token": form.csrf_token.value },
    }).then(function (r) {
      return r.json().then(function (data) { return { ok: r.ok, data: data }; });
    }).then(function (res) {
      if (res.ok) { render(res.data); return; }
      list.innerHTML = "";
      words.textContent = "";
      error.textContent = res.data.detail;
      error.hidden = false;
    }).catch(function () {});
  }

  function changed() {
    showFields();
    clearTimeout(timer);
    timer = setTimeout(refresh, 150);
  }

  // On the upload page, filling in a schedule field means "schedule it": tick the opt-in
  // box so that uploading and scheduling stays a three-click path.
  var optIn = document.getElementById("sf-enable");
  function optInFrom(ev) {
    if (optIn && ev.target !== optIn && ev.target.closest && ev.target.closest("details")) {
      optIn.checked = true;
    }
  }

  form.addEventListener("change", function (ev) { optInFrom(ev); changed(); });
  form.addEventListener("input", function (ev) { optInFrom(ev); changed(); });
  showFields();
  refresh();
})();
