// mnguard console: the little the pages need beyond HTML. No inline script
// anywhere (the Content-Security-Policy forbids it); everything works
// without this file except live updates and confirmations.
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  // Live blocks: the server sends the block's new HTML (rendered and
  // escaped by the collector) whenever it changes.
  document.querySelectorAll("[data-live]").forEach(function (el) {
    if (!window.EventSource) {
      return;
    }
    var src = new EventSource(el.getAttribute("data-live"));
    src.addEventListener("status", function (e) {
      el.innerHTML = e.data;
      el.setAttribute("data-updated", String(Date.now()));
    });
    src.addEventListener("done", function () {
      src.close();
    });
  });

  // Forms that change something for good ask first.
  document.querySelectorAll("form.confirm[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (e) {
      if (!window.confirm(form.getAttribute("data-confirm"))) {
        e.preventDefault();
      }
    });
  });
});
