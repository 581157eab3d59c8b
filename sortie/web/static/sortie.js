// Sortie's dashboard: the little every view shares. No framework; each view's own script
// (static/views/NAME.js) builds on window.Sortie.
(function () {
  "use strict";
  const meta = (name) => (document.querySelector(`meta[name="${name}"]`) || {}).content || "";
  const base = meta("sortie-base");

  // A URL of this dashboard (it may be served under a path prefix behind a proxy).
  function url(path) { return base + path; }

  // An action: POST with the page's CSRF token; resolves to the JSON reply, or throws an
  // Error whose message is the server's.
  async function post(path, body) {
    const res = await fetch(url(path), {
      method: "POST",
      headers: { "X-CSRF-Token": meta("csrf-token"), "Content-Type": "application/json",
                 "Accept": "application/json" },
      body: JSON.stringify(body || {}),
    });
    const reply = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(reply.message || `${res.status} ${res.statusText}`);
    return reply;
  }

  async function getJSON(path) {
    const res = await fetch(url(path), { headers: { "Accept": "application/json" } });
    const reply = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(reply.message || `${res.status} ${res.statusText}`);
    return reply;
  }

  // Server-sent events: handlers by event name. The browser reconnects by itself (sending the
  // last event id); the dot in the header shows whether the page is live.
  function live(path, handlers) {
    const source = new EventSource(url(path));
    const dot = document.getElementById("live");
    source.onopen = () => dot && dot.classList.add("on");
    source.onerror = () => dot && dot.classList.remove("on");
    for (const [name, fn] of Object.entries(handlers)) {
      source.addEventListener(name, (ev) => fn(JSON.parse(ev.data), ev));
    }
    window.addEventListener("beforeunload", () => source.close());
    return source;
  }

  function duration(seconds) {
    if (seconds == null || seconds < 0) return "";
    const s = Math.floor(seconds);
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ${String(Math.floor(s % 3600 / 60)).padStart(2, "0")}m`;
    return `${Math.floor(s / 86400)}d ${Math.floor(s % 86400 / 3600)}h`;
  }

  function iso(t) {
    if (!t) return "";
    return new Date(t * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
  }

  function number(v) {
    return typeof v === "number" && !Number.isInteger(v) ? String(Number(v.toPrecision(6))) : String(v);
  }

  // Series colours, in order (a page that labels series elsewhere uses the same ones).
  const palette = ["#2f6fde", "#d9480f", "#2b8a3e", "#862e9c", "#c2255c", "#0b7285", "#e67700",
                   "#5c940d", "#364fc7", "#a61e4d"];

  // A line chart of one or more series over a shared x (step or log order): uPlot.
  // series: [{label, x: [...], y: [...]}]; returns the uPlot instance.
  function chart(el, title, series, xLabel) {
    const xs = Array.from(new Set(series.flatMap((s) => s.x))).sort((a, b) => a - b);
    const index = new Map(xs.map((x, i) => [x, i]));
    const data = [xs];
    for (const s of series) {
      const ys = new Array(xs.length).fill(null);
      s.x.forEach((x, i) => { ys[index.get(x)] = s.y[i]; });
      data.push(ys);
    }
    const opts = {
      title, width: Math.max(320, el.clientWidth - 16), height: 240,
      scales: { x: { time: false } },
      axes: [{ label: xLabel || "step" }, {}],
      series: [{ label: xLabel || "step" }].concat(series.map((s, i) => ({
        label: s.label, stroke: palette[i % palette.length], width: 1.5, spanGaps: true,
        points: { show: s.x.length < 60 },
      }))),
    };
    return new uPlot(opts, data, el);
  }

  function escape(text) {
    return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }

  window.Sortie = { base, url, post, getJSON, live, duration, iso, number, chart, escape, palette };
})();
