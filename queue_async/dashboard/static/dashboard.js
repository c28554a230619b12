// queue_async dashboard: live regions by short polling with ETags, and confirmations.
// An element [data-live="URL"][data-every="ms"] names the page's live endpoint; it answers
// {region: html} for each [data-region] to replace, or 304 when nothing changed. Polling stops
// while the tab is hidden, so a dashboard nobody looks at costs the server nothing.
(function () {
  "use strict";

  document.addEventListener("submit", function (event) {
    var button = event.submitter;
    var message = (button && button.dataset.confirm) || event.target.dataset.confirm;
    if (message && !window.confirm(message)) {
      event.preventDefault();
    }
  });

  var live = document.querySelector("[data-live]");
  if (!live) {
    return;
  }
  var url = live.dataset.live;
  var every = parseInt(live.dataset.every, 10) || 3000;
  var etag = null;
  var busy = false;

  function poll() {
    if (document.hidden || busy) {
      return;
    }
    busy = true;
    var headers = etag ? { "If-None-Match": etag } : {};
    fetch(url, { headers: headers, credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (response.status !== 200) {
          return null;
        }
        etag = response.headers.get("ETag");
        return response.json();
      })
      .then(function (regions) {
        if (!regions) {
          return;
        }
        Object.keys(regions).forEach(function (name) {
          var region = document.querySelector('[data-region="' + name + '"]');
          if (region) {
            region.innerHTML = regions[name];
          }
        });
        document.body.dataset.updated = String(Date.now());
      })
      .catch(function () {
        // The server is away for a moment: the next tick tries again.
      })
      .finally(function () {
        busy = false;
      });
  }

  window.setInterval(poll, every);
  document.addEventListener("visibilitychange", poll);
})();
