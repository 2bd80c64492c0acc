// hcc-sentinel status page: refresh the content in place every data-refresh seconds (same origin
// only), unless the visitor is filling in an acknowledgement form.  Without JavaScript the page
// has a <noscript> meta refresh instead.
(function () {
  "use strict";
  var seconds = parseInt(document.body.getAttribute("data-refresh"), 10) || 30;
  function busy() {
    var open = document.querySelector("details.ack[open]");
    var active = document.activeElement;
    return !!open || (active && (active.tagName === "INPUT" || active.tagName === "TEXTAREA"));
  }
  function refresh() {
    if (busy()) { return; }
    fetch(window.location.pathname, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        if (busy()) { return; }
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("content");
        if (fresh) {
          document.getElementById("content").innerHTML = fresh.innerHTML;
          document.body.setAttribute("data-refreshed", String(Date.now()));
        }
      })
      .catch(function () { /* agent unreachable: keep the last view, try again later */ });
  }
  if (window.location.search.indexOf("msg=") >= 0 && window.history && window.history.replaceState) {
    window.history.replaceState(null, "", window.location.pathname);
  }
  window.setInterval(refresh, seconds * 1000);
})();
