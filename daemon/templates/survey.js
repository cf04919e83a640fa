// The survey page's progressive enhancement (served by npsd from /assets/survey.js, same
// origin, under the page's CSP). Without it the form works as is; with it:
// - the "press Send to save it" line follows the score clicked;
// - the comment box counts down to its limit;
// - with survey.record_on_click, the score from the email link is recorded on load.
"use strict";
(function () {
  var form = document.getElementById("survey");
  if (!form) return;
  var pending = document.getElementById("pending");
  var fill = function (template, name, value) { return template.split("{" + name + "}").join(value); };
  var saved = false;
  form.addEventListener("change", function (event) {
    var target = event.target;
    if (target.name !== "score" || !pending) return;
    pending.textContent = fill(form.dataset.notSaved, "score", target.value);
    pending.classList.add("pending");
    pending.hidden = false;
  });
  var comment = document.getElementById("comment");
  var count = document.getElementById("count");
  if (comment && count) {
    var limit = parseInt(comment.getAttribute("maxlength"), 10);
    var show = function () {
      var left = limit - comment.value.length;
      count.textContent = fill(count.dataset.template, "count", left.toLocaleString(document.documentElement.lang));
      count.hidden = false;
    };
    comment.addEventListener("input", show);
    show();
  }
  var score = form.dataset.record;
  if (score !== undefined && score !== "" && !saved) {
    var body = new URLSearchParams({ score: score, source: "click" });
    fetch(form.getAttribute("action"), {
      method: "POST", body: body, credentials: "same-origin",
      headers: { "Accept": "application/json" }
    }).then(function (response) {
      if (!response.ok) return;
      saved = true;
      if (pending) {
        pending.textContent = fill(form.dataset.saved, "score", score);
        pending.classList.remove("pending");
        pending.hidden = false;
      }
    }).catch(function () { /* the form still works: press Send */ });
  }
})();
