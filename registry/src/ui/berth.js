// berth's web UI: small enhancements only; every page works without this.
// Adds a copy button after each pull command, and live filtering.
"use strict";
document.querySelectorAll("code.pull").forEach(function (code) {
  var button = document.createElement("button");
  button.type = "button";
  button.className = "copy";
  button.textContent = "Copy";
  button.setAttribute("aria-label", "Copy: " + code.textContent);
  button.addEventListener("click", function () {
    navigator.clipboard.writeText(code.textContent).then(function () {
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = "Copy"; }, 1500);
    });
  });
  code.insertAdjacentText("afterend", " ");
  code.parentNode.insertBefore(button, code.nextSibling.nextSibling);
});
// A search field with data-filter="<table id>" hides the table's rows
// that do not contain what is typed (the form still searches on the
// server when submitted).
document.querySelectorAll("input[data-filter]").forEach(function (input) {
  var table = document.getElementById(input.getAttribute("data-filter"));
  if (!table) { return; }
  var rows = Array.prototype.slice.call(table.tBodies[0].rows);
  var texts = rows.map(function (row) { return row.textContent.toLowerCase(); });
  input.addEventListener("input", function () {
    var needle = input.value.trim().toLowerCase();
    rows.forEach(function (row, i) {
      row.hidden = needle !== "" && texts[i].indexOf(needle) < 0;
    });
  });
});
