// Keyboard shortcuts for the comparison form: 1/a, 2/b, 3/t, 4/x. Ignored while typing a comment.
(function () {
  var form = document.getElementById("label-form");
  if (!form) return;
  var keys = {};
  form.querySelectorAll("button[data-key]").forEach(function (b) {
    b.dataset.key.split(" ").forEach(function (k) { keys[k] = b; });
  });
  document.addEventListener("keydown", function (ev) {
    if (ev.target && (ev.target.tagName === "TEXTAREA" || ev.target.tagName === "INPUT")) return;
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    var b = keys[ev.key.toLowerCase()];
    if (b) { ev.preventDefault(); b.click(); }
  });
})();
