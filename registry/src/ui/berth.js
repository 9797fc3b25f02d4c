// berth's web UI: small enhancements only; every page works without this.
// Adds a copy button after each pull command.
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
