// "How it runs": the list an arguments line gives, shown as one types (split by the server,
// with the same Windows rules the run uses), and more rows for new secret variables.
(function () {
  "use strict";

  function render(box, data) {
    var list = box.querySelector("ol.args");
    var error = box.querySelector(".error");
    list.textContent = "";
    data.arguments.forEach(function (arg) {
      var li = document.createElement("li");
      var code = document.createElement("code");
      if (arg === "") {
        var em = document.createElement("em");
        em.textContent = list.getAttribute("data-empty");
        code.appendChild(em);
      } else {
        code.textContent = arg;
      }
      li.appendChild(code);
      list.appendChild(li);
    });
    if (!data.arguments.length) {
      var none = document.createElement("li");
      none.className = "muted";
      none.textContent = list.getAttribute("data-none");
      list.appendChild(none);
    }
    error.textContent = data.error || "";
    error.hidden = !data.error;
  }

  document.querySelectorAll("input[data-arguments-preview]").forEach(function (input) {
    var box = document.getElementById(input.getAttribute("data-arguments-preview"));
    var csrf = input.form.querySelector("input[name=csrf_token]").value;
    var timer = null;
    var asked = 0;
    input.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () {
        var mine = ++asked;
        var body = new FormData();
        body.append("arguments", input.value);
        fetch("/arguments/preview.json", {
          method: "POST", body: body, credentials: "same-origin",
          headers: { "Accept": "application/json", "X-CSRF-Token": csrf },
        }).then(function (r) { return r.ok ? r.json() : null; })
          .then(function (data) { if (data && mine === asked) render(box, data); })
          .catch(function () {});
      }, 150);
    });
  });

  var add = document.getElementById("add-secret");
  var rows = document.getElementById("new-secrets");
  if (add && rows) {
    add.hidden = false;
    add.addEventListener("click", function () {
      var last = rows.querySelector(".new-secret:last-child");
      var row = last.cloneNode(true);
      var n = rows.querySelectorAll(".new-secret").length + 1;
      row.querySelectorAll("input").forEach(function (el) {
        var id = el.id.replace(/-\d+$/, "-" + n);
        row.querySelector("label[for='" + el.id + "']").setAttribute("for", id);
        el.id = id;
        el.value = "";
      });
      rows.appendChild(row);
      row.querySelector("input").focus();
    });
  }
})();
