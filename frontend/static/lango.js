// Lango's progressive enhancement: every page works without this file.
// - [data-confirm] forms ask before submitting (revoke a key, suspend a tenant …);
// - [data-copy] buttons copy the nearest [data-copy-source];
// - [data-stream] elements follow a server-sent event stream and update [data-field] children.
(function () {
  "use strict";

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  }, true);

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    var scope = button.closest("[data-secret], .copy-row") || document;
    var source = scope.querySelector("[data-copy-source]");
    if (!source) return;
    var text = source.value !== undefined && source.tagName === "INPUT" ? source.value : source.textContent.trim();
    var done = function () { button.textContent = "Copied"; setTimeout(function () { button.textContent = "Copy"; }, 2000); };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { selectText(source); });
    } else {
      selectText(source);
      try { document.execCommand("copy"); done(); } catch (e) { /* the text stays selected */ }
    }
  });

  function selectText(node) {
    var range = document.createRange();
    range.selectNodeContents(node);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  // Live updates: <div data-stream="/dashboard/payments/stk_…/stream"> with children
  // [data-field="status"] etc. Each event's JSON fields fill the matching children; a
  // [data-status] attribute follows "status" so the badge colour changes too.
  function follow(element) {
    if (!window.EventSource) return;
    var source = new EventSource(element.getAttribute("data-stream"));
    source.onmessage = function (message) {
      var data;
      try { data = JSON.parse(message.data); } catch (e) { return; }
      element.querySelectorAll("[data-field]").forEach(function (node) {
        var name = node.getAttribute("data-field");
        if (data[name] === undefined || data[name] === null) return;
        node.textContent = data[name];
        if (node.hasAttribute("data-status")) {
          node.setAttribute("data-status", data[name]);
          node.className = node.className.replace(/badge-\S+/, "badge-" + data[name]);
        }
      });
      if (data.final) {
        element.setAttribute("data-final", "true");
        source.close();
      }
    };
    source.onerror = function () {
      if (element.getAttribute("data-final") === "true") source.close();
    };
  }

  window.Lango = { follow: follow };
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-stream]").forEach(follow);
  });
})();
