// larkpost status page: live updates. The page works without this file;
// it adds the live "recent" rows, refreshes the traffic chart and asks
// before a delete. Data goes into the page as text only, never as HTML.
"use strict";

(function () {
  var MAX_ROWS = 50;

  function cell(tr, text, cls) {
    var td = document.createElement("td");
    td.textContent = text || "";
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }

  function when(t) {
    var d = new Date(t);
    if (isNaN(d)) return "";
    return d.toISOString().replace("T", " ").slice(0, 19);
  }

  function kindClass(k) {
    return /^(delivered|deferred|bounced|expired|reject)$/.test(k) ? "k-" + k : "k-other";
  }

  function addEvent(ev) {
    var table = document.getElementById("recent-table");
    if (!table) return;
    var body = table.tBodies[0];
    var tr = document.createElement("tr");
    tr.className = kindClass(ev.kind) + " new";
    cell(tr, when(ev.time));
    cell(tr, ev.kind + (ev.stage ? " (" + ev.stage + ")" : ""));
    var idCell = cell(tr, "");
    if (ev.id && /^[A-Za-z0-9]{1,64}$/.test(ev.id)) {
      var a = document.createElement("a");
      a.href = "/msg/" + ev.id;
      a.textContent = ev.id;
      idCell.appendChild(a);
    }
    cell(tr, ev.from, "addr");
    cell(tr, ev.to, "addr");
    cell(tr, ev.relay || ev.client);
    cell(tr, ev.status);
    cell(tr, ev.text, "text");
    body.insertBefore(tr, body.firstChild);
    while (body.rows.length > MAX_ROWS) body.deleteRow(body.rows.length - 1);
    var empty = document.getElementById("recent-empty");
    if (empty) empty.remove();
  }

  function live() {
    var badge = document.getElementById("live");
    if (!badge || !window.EventSource) return;
    var es = new EventSource("/events");
    es.onopen = function () {
      badge.textContent = "live";
      badge.className = "live on";
    };
    es.onerror = function () {
      badge.textContent = "reconnecting…";
      badge.className = "live";
    };
    es.onmessage = function (m) {
      try {
        addEvent(JSON.parse(m.data));
      } catch (e) {
        // a malformed event is dropped
      }
    };
  }

  // The chart is drawn by the server; fetch it again each minute.
  function refreshChart() {
    var box = document.getElementById("chart-box");
    if (!box) return;
    fetch("/chart.svg", { credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (!r.ok) throw new Error(r.status);
        return r.text();
      })
      .then(function (text) {
        var doc = new DOMParser().parseFromString(text, "image/svg+xml");
        var svg = doc.documentElement;
        if (svg.nodeName !== "svg") return;
        box.replaceChildren(document.importNode(svg, true));
      })
      .catch(function () {});
  }

  function confirmDeletes() {
    document.addEventListener("submit", function (e) {
      var b = e.submitter;
      if (b && b.value === "delete" && !window.confirm("Delete this message from the queue?")) {
        e.preventDefault();
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    live();
    confirmDeletes();
    if (document.getElementById("chart-box")) setInterval(refreshChart, 60000);
  });
})();
