// Live updates of the fleet dashboard: apply the server's patches (each the
// new outer HTML of an element, rendered and escaped by the server) in
// place. Without this script the page is complete as rendered.
"use strict";
(function () {
  var live = document.getElementById("live");
  if (!live || !window.EventSource) return;
  function say(text, on) { live.textContent = text; live.className = on ? "live on" : "live off"; }
  var es = new EventSource("/dashboard/events");
  es.addEventListener("open", function () { say("live", true); });
  es.addEventListener("patch", function (e) {
    JSON.parse(e.data).patches.forEach(function (p) {
      var el = document.getElementById(p.id);
      if (el) el.outerHTML = p.html;
    });
    say("live · updated " + new Date().toLocaleTimeString(), true);
  });
  es.addEventListener("logout", function () { es.close(); location.assign("/dashboard/login"); });
  es.addEventListener("error", function () {
    if (es.readyState === EventSource.CLOSED) {
      say("disconnected; reloading soon", false);
      setTimeout(function () { location.reload(); }, 15000);
    } else {
      say("reconnecting…", false);
    }
  });
})();
