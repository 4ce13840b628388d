// Sandogh console: the one script. It keeps the numbers of a page live
// without a reload: every few seconds it asks the page's data-live URL
// for a small JSON document ({"rows":{KEY:{FIELD:value}}}, 304 when
// nothing changed) and writes each value into the element marked
// data-k="KEY:FIELD". Numbers are written in the page's digits; a cell
// marked data-pct="KEY" shows KEY's ready/total. Without the script every
// page still works: it is just not live. It also makes the report's
// print button print (no inline script: the console's CSP forbids it).
(function () {
  "use strict";
  var printers = document.querySelectorAll("[data-print]");
  for (var p = 0; p < printers.length; p++) {
    printers[p].addEventListener("click", function () { window.print(); });
  }
  var root = document.querySelector("[data-live]");
  if (!root || !window.fetch) return;
  var fa = document.documentElement.lang === "fa";
  var every = (Number(root.getAttribute("data-every")) || 10) * 1000;
  var etag = null;
  function digits(s) {
    return fa ? s.replace(/[0-9]/g, function (d) { return "۰۱۲۳۴۵۶۷۸۹"[d]; })
      .replace(/,/g, "٬").replace(/\./g, "٫").replace(/%/g, "٪") : s;
  }
  function num(n) {
    var s = String(n), out = "";
    for (var i = 0; i < s.length; i++) {
      if (i > 0 && (s.length - i) % 3 === 0) out += ",";
      out += s[i];
    }
    return digits(out);
  }
  function pct(r, t) {
    if (!t) return "–";
    var tenths = Math.round((r * 1000) / t);
    return digits(Math.floor(tenths / 10) + "." + (tenths % 10) + "%");
  }
  function apply(doc) {
    var rows = doc.rows || {};
    var cells = root.querySelectorAll("[data-k]");
    for (var i = 0; i < cells.length; i++) {
      var k = cells[i].getAttribute("data-k").split(":");
      var row = rows[k[0]];
      if (!row) continue;
      var v = row[k[1]];
      if (v === undefined) v = cells[i].hasAttribute("data-z") ? 0 : null;
      if (v === null) continue;
      var text = typeof v === "number" ? num(v) : String(v);
      if (cells[i].textContent !== text) cells[i].textContent = text;
    }
    var pcts = root.querySelectorAll("[data-pct]");
    for (var j = 0; j < pcts.length; j++) {
      var r = rows[pcts[j].getAttribute("data-pct")];
      if (r) pcts[j].textContent = pct(r.r || 0, r.t || 0);
    }
    var bars = root.querySelectorAll("[data-bar]");
    for (var b = 0; b < bars.length; b++) {
      var q = rows[bars[b].getAttribute("data-bar")];
      if (q && q.t) bars[b].style.width = Math.round((100 * (q.r || 0)) / q.t) + "%";
    }
    var stamp = document.getElementById("live-at");
    if (stamp && doc.at) stamp.textContent = doc.at;
  }
  function poll() {
    var h = { Accept: "application/json" };
    if (etag) h["If-None-Match"] = etag;
    fetch(root.getAttribute("data-live"), { headers: h, credentials: "same-origin" })
      .then(function (resp) {
        if (resp.status === 401) { window.location.reload(); return null; }
        if (resp.status !== 200) return null;
        etag = resp.headers.get("ETag");
        return resp.json();
      })
      .then(function (doc) { if (doc) apply(doc); })
      .catch(function () {})
      .then(function () { setTimeout(poll, every); });
  }
  setTimeout(poll, every);
})();
