// cardbridge console: polls the live numbers and turns counters into rates.
// No framework and nothing from the network but this server.
"use strict";
(function () {
  const every = 2000;
  const keep = 60; // samples in the sparkline: two minutes
  const history = [];
  let prev = null;

  const set = (id, text) => { const el = document.getElementById(id); if (el) el.textContent = text; };
  const rate = (a, b, dt) => (dt > 0 && b >= a ? ((b - a) / dt) : 0);
  const fmtRate = (r) => (r >= 10 ? r.toFixed(0) : r.toFixed(1));
  const fmtAge = (s) => (s < 60 ? Math.round(s) + "s" : s < 3600 ? Math.floor(s / 60) + "m" + Math.round(s % 60) + "s" : Math.floor(s / 3600) + "h" + Math.floor((s % 3600) / 60) + "m");

  function draw() {
    const line = document.getElementById("spark-line");
    if (!line || history.length < 2) return;
    const max = Math.max(1, ...history);
    const step = 300 / (keep - 1);
    const start = keep - history.length;
    line.setAttribute("points", history.map((v, i) => ((start + i) * step).toFixed(1) + "," + (38 - (v / max) * 36).toFixed(1)).join(" "));
  }

  async function poll() {
    try {
      // From the origin, not the page's URL: an operator who typed
      // user:token@ into the address bar has credentials in the page URL,
      // which fetch refuses; the browser's auth cache still sends them.
      const res = await fetch(new URL("/console/api/live", window.location.origin), { cache: "no-store", credentials: "same-origin" });
      if (!res.ok) throw new Error("HTTP " + res.status);
      const live = await res.json();
      const t = Date.parse(live.time) / 1000;
      if (prev) {
        const dt = t - prev.t;
        const out = rate(prev.live.outcomesPublished, live.outcomesPublished, dt);
        set("rate-in", fmtRate(rate(prev.live.requestsReceived, live.requestsReceived, dt)));
        set("rate-out", fmtRate(out));
        history.push(out);
        if (history.length > keep) history.shift();
        draw();
      }
      prev = { t: t, live: live };
      set("pending", String(live.pending));
      set("ack-pending", String(live.ackPending));
      set("outbox", String(live.outboxBacklog));
      set("outbox-age", fmtAge(live.outboxOldestSeconds));
      set("in-flight", String(live.inFlight));
      const errs = live.errors && live.errors.length ? " Could not read: " + live.errors.join(", ") + "." : "";
      set("live-status", "Updated " + new Date(live.time).toLocaleTimeString() + " by " + live.instance + "." + errs);
    } catch (e) {
      set("live-status", "Live numbers unavailable: " + e.message);
    }
  }

  poll();
  setInterval(poll, every);
})();
