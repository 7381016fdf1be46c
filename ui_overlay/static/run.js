// The run page: follows the output as it arrives, updates the status, cancels in place.
// Big outputs: only a window of lines (at most MAX_LINES) is in the page; "Load earlier" /
// "Load later" and the jumps (start, end, first error, search matches) fetch other windows
// by byte offset, so a 1 M-line output opens as fast as a short one and never slows the tab.
(function () {
  "use strict";
  var box = document.getElementById("output");
  if (!box) return;
  var src = box.getAttribute("data-src");
  var base = box.getAttribute("data-run");
  var MAX_LINES = 3000;
  var BEHIND = 2 * 1024 * 1024;  // bytes: further behind than this, live view skips ahead
  var cursor = "";        // where the next live poll reads from (end of the window)
  var atEnd = true;       // the window reaches the end of what has been written
  var done = false;       // the run is over and everything has been read
  var stored = true;      // false: lines come from Prefect's log (no offsets, no jumps)
  var follow = true;
  var busy = false;
  var generation = 0;     // a jump cancels what an older request would still add
  var pollTimer = null;   // the next live read, when one is due
  var query = "";
  var matches = [];
  var matchIndex = -1;
  var matchTotal = 0;
  var hint = document.getElementById("output-follow");
  var cancelForm = document.getElementById("cancel-form");
  var statusEl = document.getElementById("run-status");
  var outStatus = document.getElementById("output-status");
  var earlier = document.getElementById("load-earlier");
  var later = document.getElementById("load-later");
  var findForm = document.getElementById("find-form");
  var findQ = document.getElementById("find-q");
  var findNext = document.getElementById("find-next");
  var findPrev = document.getElementById("find-prev");
  var liveLine = null;    // the line the script is writing now (a progress bar), kept last

  function msg(name, values) {
    var text = box.getAttribute("data-msg-" + name) || "";
    Object.keys(values || {}).forEach(function (k) {
      text = text.split("%(" + k + ")s").join(String(values[k]));
    });
    return text;
  }

  function say(text) { if (outStatus) outStatus.textContent = text; }

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); });
  }

  box.addEventListener("scroll", function () {
    // Auto-scroll only while the reader is at the bottom; scrolling up pauses it.
    follow = atEnd && box.scrollHeight - box.scrollTop - box.clientHeight < 24;
    if (hint) hint.hidden = follow || done || !atEnd;
  });

  // -- rendering -------------------------------------------------------------------------
  function highlight(span, text) {
    var lower = text.toLowerCase(), q = query.toLowerCase(), from = 0, at;
    while ((at = lower.indexOf(q, from)) >= 0) {
      if (at > from) span.appendChild(document.createTextNode(text.slice(from, at)));
      var mark = document.createElement("mark");
      mark.textContent = text.slice(at, at + q.length);
      span.appendChild(mark);
      from = at + q.length;
    }
    if (from < text.length) span.appendChild(document.createTextNode(text.slice(from)));
  }

  function lineEl(ln) {
    var span = document.createElement("span");
    span.className = "line " + ln.stream;
    if (ln.at !== undefined) span.setAttribute("data-at", ln.at);
    if (query && ln.text.toLowerCase().indexOf(query.toLowerCase()) >= 0) {
      highlight(span, ln.text);
    } else {
      span.textContent = ln.text;
    }
    if (ln.stream === "stderr") span.title = box.getAttribute("data-stderr");
    return span;
  }

  function clearEmpty() {
    if (box.getAttribute("data-showing-empty")) {
      box.textContent = "";
      box.removeAttribute("data-showing-empty");
    }
  }

  function firstAt() {
    var first = box.querySelector(".line[data-at]");
    return first ? Number(first.getAttribute("data-at")) : null;
  }

  function updateLoadButtons() {
    if (!stored) { earlier.hidden = later.hidden = true; return; }
    var start = firstAt();
    earlier.hidden = !(start > 0);
    later.hidden = atEnd;
  }

  // A jump starts a new window: what older requests would add is dropped (generation), and
  // the next live read, if one is due, is called off: it would read from the old place and
  // put those lines into the new window. The jump starts the live reads again where it ends.
  // The line in progress, shown below the finished ones and rewritten in place as a terminal
  // does with "\r"; it becomes an ordinary line once the script ends it with a newline.
  function showLive(cur) {
    if (!cur || !atEnd || done) {
      if (liveLine && liveLine.parentNode) liveLine.parentNode.removeChild(liveLine);
      return;
    }
    if (!liveLine) {
      liveLine = document.createElement("span");
      liveLine.id = "output-live";
      liveLine.setAttribute("aria-hidden", "true");  // changes too often to be read out
    }
    liveLine.className = "line live " + cur.stream;
    if (liveLine.textContent !== cur.text) liveLine.textContent = cur.text;
    clearEmpty();
    box.appendChild(liveLine);
  }

  function reset() {
    generation += 1;
    if (pollTimer) { clearTimeout(pollTimer); pollTimer = null; }
    box.textContent = "";
    box.removeAttribute("data-showing-empty");
  }

  // Each line keeps the offset that follows it (data-next), so that trimming the bottom
  // of the window still leaves a correct cursor for "Load later".
  function render(lines, next) {
    var frag = document.createDocumentFragment();
    lines.forEach(function (ln, i) {
      var el = lineEl(ln);
      el.setAttribute("data-next", i + 1 < lines.length ? lines[i + 1].at : next);
      frag.appendChild(el);
    });
    return { frag: frag, count: lines.length };
  }

  // -- status ------------------------------------------------------------------------------
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

  function finished() {
    done = true;
    showLive(null);
    if (cancelForm && !cancelForm.hidden) {
      // Focus on the vanishing Cancel button would fall back to the page's start.
      var hadFocus = cancelForm.contains(document.activeElement);
      cancelForm.hidden = true;
      if (hadFocus && statusEl) { statusEl.tabIndex = -1; statusEl.focus(); }
    }
    if (hint) hint.hidden = true;
    if (!box.children.length) {
      box.textContent = box.getAttribute("data-empty");
      box.setAttribute("data-showing-empty", "1");
    }
  }

  // -- live following ----------------------------------------------------------------------
  function schedulePoll(delay) {  // one poll loop at a time, whatever jumps happened
    if (pollTimer) clearTimeout(pollTimer);
    pollTimer = setTimeout(function () { pollTimer = null; poll(); }, delay);
  }

  function poll() {
    if (!atEnd || done) return;
    var gen = generation;
    var url = src + (cursor ? "?after=" + encodeURIComponent(cursor) : "");
    getJSON(url).then(function (data) {
      if (gen !== generation) return;
      stored = data.stored !== false;
      if (data.run) showRun(data.run, data.badge);
      var live = data.run && (data.run.status === "running" || data.run.status === "queued");
      if (stored && live && data.size !== null && follow &&
          data.size - Number(data.next) > BEHIND) {
        // Far behind a flood of output: show the newest lines instead of every line.
        say(msg("skipped"));
        return jumpEnd(true).then(function () { schedulePoll(150); });
      }
      if (!follow && box.children.length + data.lines.length > MAX_LINES) {
        // The reader has scrolled up in a full window: keep their lines, offer "Load later".
        atEnd = false;
        if (hint) hint.hidden = true;
        updateLoadButtons();
        return;
      }
      var r = render(data.lines, data.next);
      if (liveLine && liveLine.parentNode) box.removeChild(liveLine);
      if (r.count) {
        clearEmpty();
        box.appendChild(r.frag);
        trimTop();
      }
      cursor = data.next;
      showLive(data.complete ? null : data.current);
      if (follow && (r.count || data.current)) box.scrollTop = box.scrollHeight;
      updateLoadButtons();
      if (data.complete) { finished(); return; }
      schedulePoll(data.lines.length ? 150 : 400);
    }).catch(function () { if (gen === generation) schedulePoll(2000); });
  }

  function trimTop() {
    var extra = box.children.length - MAX_LINES;
    if (extra <= 0) return;
    var removed = 0;
    for (var i = 0; i < extra; i++) {
      removed += box.firstChild.offsetHeight;
      box.removeChild(box.firstChild);
    }
    if (!follow) box.scrollTop = Math.max(0, box.scrollTop - removed);
  }

  // -- windows -------------------------------------------------------------------------------
  function loadWindow(params) {
    var gen = generation;
    box.setAttribute("aria-busy", "true");
    return getJSON(src + "?" + params).then(function (data) {
      box.removeAttribute("aria-busy");
      if (gen !== generation) return null;
      stored = data.stored !== false;
      if (data.run) showRun(data.run, data.badge);
      return data;
    }, function (err) { box.removeAttribute("aria-busy"); throw err; });
  }

  function loadEarlier() {
    var start = firstAt();
    if (!(start > 0) || busy) return Promise.resolve();
    busy = true;
    return loadWindow("before=" + start).then(function (data) {
      if (!data) return;
      var r = render(data.lines, String(start));
      var before = box.scrollHeight;
      box.insertBefore(r.frag, box.firstChild);
      box.scrollTop += box.scrollHeight - before;  // the reader keeps their place
      var extra = box.children.length - MAX_LINES;
      if (extra > 0) {
        for (var i = 0; i < extra; i++) box.removeChild(box.lastChild);
        cursor = box.lastChild.getAttribute("data-next");
        atEnd = false;
        follow = false;
      }
      updateLoadButtons();
    }).finally(function () { busy = false; });
  }

  function loadLater() {
    if (atEnd || busy) return Promise.resolve();
    busy = true;
    return loadWindow("after=" + encodeURIComponent(cursor)).then(function (data) {
      if (!data) return;
      var r = render(data.lines, data.next);
      box.appendChild(r.frag);
      trimTop();
      cursor = data.next;
      if (Number(data.next) >= data.size) {  // caught up with the end: follow again
        atEnd = true;
        if (data.complete) finished(); else schedulePoll(150);
      }
      updateLoadButtons();
    }).finally(function () { busy = false; });
  }

  function jumpStart() {
    reset();
    atEnd = false;
    follow = false;
    return loadWindow("after=0").then(function (data) {
      if (!data) return;
      var r = render(data.lines, data.next);
      box.appendChild(r.frag);
      cursor = data.next;
      box.scrollTop = 0;
      if (Number(data.next) >= data.size) {
        atEnd = true;
        if (data.complete) finished(); else schedulePoll(150);
      }
      updateLoadButtons();
    });
  }

  function jumpEnd(quiet) {
    reset();
    var gen = generation;
    return loadWindow("tail=1").then(function (data) {
      if (!data) return;
      var r = render(data.lines, data.next);
      box.appendChild(r.frag);
      cursor = data.next;
      atEnd = true;
      follow = true;
      box.scrollTop = box.scrollHeight;
      updateLoadButtons();
      if (data.complete) finished(); else if (!quiet) schedulePoll(150);
    }, function () {
      // The end could not be read (the server busy, a dropped connection): the live reads
      // go on from where they were and jump again, instead of stopping for good.
      if (gen === generation) schedulePoll(2000);
    });
  }

  // Show the line at byte offset `at` with a few lines of context above it, and focus it.
  function jumpTo(at) {
    var existing = box.querySelector('.line[data-at="' + at + '"]');
    var ready = existing ? Promise.resolve() : (function () {
      reset();
      atEnd = false;
      follow = false;
      return loadWindow("before=" + at + "&limit=20").then(function (above) {
        if (!above) return;
        box.appendChild(render(above.lines, String(at)).frag);
        return loadWindow("after=" + at).then(function (data) {
          if (!data) return;
          box.appendChild(render(data.lines, data.next).frag);
          cursor = data.next;
          if (Number(data.next) >= data.size) {
            atEnd = true;
            if (data.complete) finished(); else schedulePoll(150);
          }
          updateLoadButtons();
        });
      });
    })();
    return ready.then(function () {
      var el = box.querySelector('.line[data-at="' + at + '"]');
      if (!el) return;
      Array.prototype.forEach.call(box.querySelectorAll(".line.current"), function (c) {
        c.classList.remove("current");
        c.removeAttribute("tabindex");
      });
      el.classList.add("current");
      el.tabIndex = -1;
      box.scrollTop = el.offsetTop - box.offsetTop - box.clientHeight / 3;
      el.focus({ preventScroll: true });
    });
  }

  // -- search and first error ---------------------------------------------------------------
  function rehighlight() {
    Array.prototype.forEach.call(box.querySelectorAll(".line"), function (el) {
      var text = el.textContent;
      el.textContent = "";
      if (query && text.toLowerCase().indexOf(query.toLowerCase()) >= 0) highlight(el, text);
      else el.textContent = text;
    });
  }

  function showMatch(i) {
    if (!matches.length) return;
    matchIndex = (i + matches.length) % matches.length;
    var values = { n: matchIndex + 1, total: matchTotal, shown: matches.length };
    say(matches.length < matchTotal ? msg("many", values) : msg("matches", values));
    jumpTo(matches[matchIndex]);
  }

  function find(q) {
    query = q;
    rehighlight();
    matches = [];
    matchIndex = -1;
    findNext.disabled = findPrev.disabled = true;
    if (!q) { say(""); return Promise.resolve(); }
    say(msg("loading"));
    return getJSON(base + "/output/search.json?q=" + encodeURIComponent(q)).then(function (data) {
      matches = data.matches;
      matchTotal = data.total;
      if (!matches.length) { say(msg("none", { q: q })); return; }
      findNext.disabled = findPrev.disabled = matches.length < 2;
      showMatch(0);
    });
  }

  function firstError() {
    if (!stored) { say(msg("unavailable")); return; }
    getJSON(base + "/output/first-error.json").then(function (data) {
      if (data.at === null) { say(msg("no-error")); return; }
      say(msg("error"));
      jumpTo(data.at);
    });
  }

  findForm.addEventListener("submit", function (ev) {
    ev.preventDefault();
    if (!stored) { say(msg("unavailable")); return; }
    find(findQ.value.trim());
  });
  findNext.addEventListener("click", function () { showMatch(matchIndex + 1); });
  findPrev.addEventListener("click", function () { showMatch(matchIndex - 1); });
  document.getElementById("jump-error").addEventListener("click", firstError);
  document.getElementById("jump-start").addEventListener("click", function () {
    if (stored) jumpStart(); else say(msg("unavailable"));
  });
  document.getElementById("jump-end").addEventListener("click", function () {
    if (stored) jumpEnd(false); else say(msg("unavailable"));
  });
  // A click while a window is loading (a scroll, the live poll) waits for it instead of
  // being dropped: the reader asked for those lines.
  function whenIdle(load) {
    return function () {
      var waited = 0;
      (function attempt() {
        if (!busy) { load(); return; }
        if ((waited += 50) < 15000) setTimeout(attempt, 50);
      })();
    };
  }
  earlier.addEventListener("click", whenIdle(loadEarlier));
  later.addEventListener("click", whenIdle(loadLater));

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
  if (findQ.value.trim()) {  // came from a search on the runs page: show the first match
    setTimeout(function () { find(findQ.value.trim()); }, 300);
  }
})();
