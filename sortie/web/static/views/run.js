// The run page: live header and timeline, live logs, live metric charts, files, actions.
// Everything live comes by server push (three event streams: the record, the log, the
// metrics); each resumes after a reconnect (the browser sends the last event id).
(function () {
  "use strict";
  const S = window.Sortie;
  const $ = (id) => document.getElementById(id);
  const data = JSON.parse($("run-data").textContent);
  const runId = data.live.run_id;
  const runPath = `/runs/${encodeURIComponent(runId)}`;
  const filePath = (p) => p.split("/").map(encodeURIComponent).join("/");
  const IMAGE = /\.(png|jpe?g|gif|webp)$/i;
  let live = data.live;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") node.textContent = v;
      else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c);
    return node;
  }

  // A stream of this page that ends (the log, the metrics of an ended run): like
  // Sortie.live, but it leaves the header's live dot to the record's stream.
  function follow(path, handlers) {
    const source = new EventSource(S.url(path));
    for (const [name, fn] of Object.entries(handlers)) {
      source.addEventListener(name, (ev) => fn(JSON.parse(ev.data), ev));
    }
    window.addEventListener("beforeunload", () => source.close());
    return source;
  }

  // --- tabs -----------------------------------------------------------------------------
  const tabs = ["overview", "logs", "metrics", "files"];
  let shown = null;
  function showTab() {
    const wanted = location.hash.slice(1);
    const name = tabs.includes(wanted) ? wanted : "overview";
    shown = name;
    for (const t of tabs) {
      $(`tab-${t}`).hidden = t !== name;
      document.querySelector(`#run-tabs a[data-tab="${t}"]`).classList.toggle("active", t === name);
    }
    if (name === "metrics") drawMetrics();
    if (name === "files") loadSnapshot();
    if (name === "logs") scrollLog();
  }
  window.addEventListener("hashchange", showTab);

  // --- the header and the timeline --------------------------------------------------------
  function drawRun(f) {
    live = f;
    const badge = $("run-state");
    badge.textContent = f.state;
    badge.className = `state ${f.state}`;
    $("run-attempt").textContent = f.attempt;
    $("run-started").textContent = S.iso(f.started_at);
    $("run-ended").textContent = S.iso(f.ended_at);
    const agents = $("run-agents");
    agents.replaceChildren(...(f.agents.length ? f.agents.flatMap((a, i) => [
      ...(i ? [", "] : []), el("span", { class: "mono", title: a.host || "", text: a.agent })])
      : [el("span", { class: "muted", text: "none yet" })]));
    const err = $("run-error");
    err.hidden = !f.error;
    if (f.error) err.replaceChildren(el("span", { class: "kind", text: f.error.kind }), ` ${f.error.message}`);
    // a run handed to Slurm or Spark: its job there, and its wait in that queue while Starting
    $("run-engine-job-row").hidden = !f.engine_job;
    $("run-engine-job").textContent = f.engine_job || "";
    $("run-engine-wait").hidden = !f.engine_wait;
    $("run-engine-wait").textContent = f.engine_wait || "";
    const waiting = $("run-waiting");
    waiting.hidden = !f.waiting;
    waiting.textContent = f.waiting ? `waiting: ${f.waiting}` : "";
    const cancel = $("cancel");
    if (cancel) cancel.hidden = f.terminal;
    tickDuration();
    drawTimeline(f);
    drawArtifacts(f);
    if (f.terminal) metricsEnded();
  }

  function tickDuration() {
    if (!live.started_at) { $("run-duration").textContent = ""; return; }
    const end = live.ended_at || Date.now() / 1000;
    $("run-duration").textContent = S.duration(end - live.started_at);
  }
  setInterval(tickDuration, 1000);

  function since(seconds) { // "+0.3s" between quick steps, "+3m 05s" between slow ones
    return seconds < 10 ? `${Math.max(0, seconds).toFixed(1)}s` : S.duration(seconds);
  }

  function size(n) {
    if (n < 1024) return `${n} B`;
    const units = ["KB", "MB", "GB", "TB"];
    let v = n / 1024, u = 0;
    while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
    return `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
  }

  function drawTimeline(f) {
    const rows = [];
    let previous = null;
    for (const h of f.history) {
      const newAttempt = !previous || previous.attempt !== h.attempt;
      rows.push(el("tr", { class: newAttempt && previous ? "attempt-start" : "" },
        el("td", { text: newAttempt ? String(h.attempt) : "" }),
        el("td", {}, el("span", { class: `state ${h.state}`, text: h.state })),
        el("td", { class: "mono", text: S.iso(h.at) }),
        el("td", { class: "muted", text: previous ? `+${since(h.at - previous.at)}` : "" }),
        el("td", { text: h.reason || "" })));
      previous = h;
    }
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "5", class: "muted", text: "no state changes yet" })));
    $("timeline").replaceChildren(...rows);
  }

  const children = new Map(data.children.map((c) => [c.run_id, c]));
  function drawChildren() {
    const rows = [...children.values()].sort((a, b) => a.created_at - b.created_at).map((c) =>
      el("tr", {},
        el("td", {}, el("a", { class: "mono", href: S.url(`/runs/${encodeURIComponent(c.run_id)}`), text: c.run_id })),
        el("td", {}, el("span", { class: `state ${c.state}`, text: c.state })),
        el("td", { class: "mono", text: S.iso(c.created_at) })));
    if (rows.length) $("children").replaceChildren(...rows);
  }

  let artifactsShown = null;
  function drawArtifacts(f) {
    const key = `${f.terminal}:${f.artifacts.map((a) => a.path).join("\n")}`;
    if (key === artifactsShown) return;
    artifactsShown = key;
    if (!f.artifacts.length) {
      const text = f.terminal ? "none" : "uploaded when the run ends";
      $("artifacts").tBodies[0].replaceChildren(el("tr", {}, el("td", { colspan: "2", class: "muted", text })));
      return;
    }
    $("artifacts").tBodies[0].replaceChildren(...f.artifacts.map((a) => el("tr", {},
      el("td", {}, el("a", { class: "mono", href: S.url(`${runPath}/artifacts/${filePath(a.path)}?download`), text: a.path })),
      el("td", { class: "num", text: size(a.size) }))));
    drawImages();
  }

  // --- actions ----------------------------------------------------------------------------
  function say(message, isError, link) {
    const box = $("action-message");
    box.hidden = false;
    box.className = `action-message ${isError ? "error" : ""}`;
    box.replaceChildren(message, ...(link ? [" ", link] : []));
  }

  function button(id, fn) {
    const b = $(id);
    if (!b) return;
    b.addEventListener("click", async () => {
      b.disabled = true;
      try { await fn(); } catch (e) { say(e.message, true); } finally { b.disabled = false; }
    });
  }

  button("cancel", async () => {
    if (!window.confirm(`Cancel run ${runId}?`)) return;
    const reply = await S.post(`${runPath}/cancel`);
    say(`Cancel asked: the run is ${reply.state}.`, false);
  });

  button("resubmit", async () => {
    if (data.resubmit_refusal) { say(data.resubmit_refusal, true); return; }
    const reply = await S.post(`${runPath}/resubmit`);
    const link = el("a", { class: "mono", id: "resubmitted", href: S.url(`/runs/${encodeURIComponent(reply.run_id)}`), text: reply.run_id });
    say("Submitted again as", false, link);
  });

  button("copy-command", async () => {
    const text = $("cli-command").textContent;
    try {
      await navigator.clipboard.writeText(text);
    } catch (e) { // no clipboard (a page served over plain http elsewhere than loopback)
      const range = document.createRange();
      range.selectNodeContents($("cli-command"));
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      document.execCommand("copy");
    }
    say("Copied:", false, el("code", { text }));
  });

  // --- logs -------------------------------------------------------------------------------
  const log = $("log");
  const lines = []; // [rank, stream, text]
  const MAX_SHOWN = 20000;
  let logSource = null;
  let rank = "all";

  function lineNode(l) {
    const node = el("span", { class: l[1] === "stderr" ? "err" : (l[1] === "system" ? "sys" : "") });
    if (data.node_count > 1 && rank === "all") node.append(el("span", { class: "rank", text: `[${l[0]}] ` }));
    node.append(l[1] === "system" ? `[sortie] ${l[2]}\n` : `${l[2]}\n`);
    return node;
  }

  function matches(l) {
    const f = $("log-filter").value;
    return !f || l[2].toLowerCase().includes(f.toLowerCase());
  }

  function countLines() {
    $("log-count").textContent = `${log.childElementCount} of ${lines.length} lines`;
  }

  function scrollLog() {
    if ($("log-follow").checked) log.scrollTop = log.scrollHeight;
  }

  function redrawLog() {
    const shownLines = lines.filter(matches).slice(-MAX_SHOWN);
    log.replaceChildren(...shownLines.map(lineNode));
    countLines();
    scrollLog();
  }

  function addLines(reply) {
    const frag = document.createDocumentFragment();
    for (const l of reply.lines) {
      lines.push(l);
      if (matches(l)) frag.append(lineNode(l));
    }
    log.append(frag);
    while (log.childElementCount > MAX_SHOWN) log.firstChild.remove();
    countLines();
    scrollLog();
  }

  function followLog() {
    if (logSource) logSource.close();
    lines.length = 0;
    log.replaceChildren();
    $("log-status").textContent = "following…";
    const q = rank === "all" ? "" : `?rank=${rank}`;
    logSource = follow(`${runPath}/logs/stream${q}`, {
      lines: addLines,
      end: () => { logSource.close(); $("log-status").textContent = "end of output"; },
      failed: (r) => { logSource.close(); $("log-status").textContent = r.message; },
    });
    $("log-download").href = S.url(`${runPath}/logs.txt${q}`);
  }

  $("log-filter").addEventListener("input", redrawLog);
  if ($("log-rank")) $("log-rank").addEventListener("change", (e) => { rank = e.target.value; followLog(); });
  log.addEventListener("scroll", () => {
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
    $("log-follow").checked = atBottom;
  });
  $("log-follow").addEventListener("change", scrollLog);

  // --- metrics ----------------------------------------------------------------------------
  const scalars = new Map(); // name -> [{step, value}]
  const tables = new Map(); // name -> Map(column -> values)
  const values = new Map(); // name -> last non-numeric value
  const charts = new Map(); // name -> {box, plot}
  let metricSource = null;
  let dirty = false;

  function addPoints(reply) {
    for (const [name, value, step, column] of reply.points) {
      if (column != null) {
        if (!tables.has(name)) tables.set(name, new Map());
        const cols = tables.get(name);
        if (!cols.has(column)) cols.set(column, []);
        cols.get(column).push(value);
      } else if (typeof value === "number" || value === null) {
        if (!scalars.has(name)) scalars.set(name, []);
        scalars.get(name).push({ step, value });
      } else {
        values.set(name, value);
      }
    }
    dirty = true;
    if (shown === "metrics") scheduleDraw();
  }

  let drawTimer = null;
  function scheduleDraw() {
    if (drawTimer) return;
    drawTimer = setTimeout(() => { drawTimer = null; drawMetrics(); }, 250);
  }

  function drawMetrics() {
    if (!dirty && charts.size) return;
    dirty = false;
    const single = [];
    for (const [name, points] of scalars) {
      if (points.length < 2) { single.push([name, points[0].value]); continue; }
      drawChart(name, points);
    }
    const rows = [...single, ...values].filter(([name, v]) => !(typeof v === "string" && IMAGE.test(v)));
    $("metric-values-card").hidden = !rows.length;
    $("metric-values").replaceChildren(...rows.map(([name, v]) => el("tr", {},
      el("td", { class: "mono", text: name }), el("td", { class: "mono", text: v === null ? "NaN" : S.number(v) }))));
    drawTables();
    drawImages();
    $("metrics-empty").hidden = scalars.size + tables.size + values.size > 0;
  }

  function drawChart(name, points) {
    const stepped = points.every((p) => p.step != null);
    const pairs = points.map((p, i) => [stepped ? p.step : i + 1, p.value]);
    if (stepped) pairs.sort((a, b) => a[0] - b[0]);
    const x = pairs.map((p) => p[0]);
    const y = pairs.map((p) => p[1]);
    let c = charts.get(name);
    if (!c) {
      const box = el("div", { class: "chart", "data-metric": name });
      $("charts").append(box);
      c = { box, plot: null, stepped };
      charts.set(name, c);
    }
    if (c.plot && c.stepped === stepped) {
      c.plot.setData([x, y]); // keeps the chart (and the user's zoom) in place
    } else {
      if (c.plot) c.plot.destroy();
      c.plot = S.chart(c.box, name, [{ label: name, x, y }], stepped ? "step" : "log order");
      c.stepped = stepped;
    }
    c.box.dataset.points = JSON.stringify(y);
    c.box.dataset.x = JSON.stringify(x);
  }

  function drawTables() {
    const boxes = [];
    for (const [name, cols] of tables) {
      const names = [...cols.keys()];
      const rowsCount = Math.max(...names.map((n) => cols.get(n).length));
      const head = el("tr", {}, ...names.map((n) => el("th", { text: n })));
      const body = [];
      for (let i = 0; i < rowsCount; i++) {
        body.push(el("tr", {}, ...names.map((n) => {
          const v = cols.get(n)[i];
          return el("td", { class: "mono", text: v === undefined ? "" : (v === null ? "NaN" : S.number(v)) });
        })));
      }
      boxes.push(el("div", { class: "metric-table", "data-metric": name }, el("h2", { text: name }),
        el("table", { class: "grid" }, el("thead", {}, head), el("tbody", {}, ...body))));
    }
    $("metric-tables").replaceChildren(...boxes);
  }

  function drawImages() {
    const figures = [];
    for (const [name, v] of values) {
      if (typeof v !== "string" || !IMAGE.test(v)) continue;
      const stored = live.artifacts.some((a) => a.path === v);
      figures.push(el("figure", { "data-metric": name },
        stored ? el("img", { src: S.url(`${runPath}/artifacts/${filePath(v)}`), alt: name, loading: "lazy" })
          : el("div", { class: "muted", text: "uploaded when the run ends" }),
        el("figcaption", { text: `${name} · ${v}` })));
    }
    $("metric-images").replaceChildren(...figures);
  }

  let metricsClosing = null;
  function metricsEnded() { // the run ended: its last points are in; stop following soon
    if (!metricSource || metricsClosing) return;
    metricsClosing = setTimeout(() => metricSource.close(), 5000);
  }

  function followMetrics() {
    metricSource = follow(`${runPath}/metrics/stream`, {
      points: addPoints,
      end: () => metricSource.close(),
      failed: () => metricSource.close(),
    });
  }

  // --- the snapshot's files ---------------------------------------------------------------
  let snapshotLoaded = false;
  async function loadSnapshot() {
    if (snapshotLoaded) return;
    snapshotLoaded = true;
    const body = $("snapshot-files").tBodies[0];
    try {
      const snap = await S.getJSON(`${runPath}/snapshot`);
      body.replaceChildren(...snap.files.map((f) => {
        const link = el("a", { class: "mono", href: `#files`, "data-path": f.path, text: f.path });
        link.addEventListener("click", (e) => { e.preventDefault(); openFile(f.path); });
        return el("tr", {}, el("td", {}, link), el("td", { class: "num", text: size(f.size) }));
      }));
      if (snap.files.some((f) => f.path === snap.script)) openFile(snap.script);
    } catch (e) {
      body.replaceChildren(el("tr", {}, el("td", { colspan: "2", class: "error", text: e.message })));
    }
  }

  async function openFile(path) {
    const view = $("file-view");
    const download = S.url(`${runPath}/snapshot/${filePath(path)}?download`);
    $("viewer-title").replaceChildren(el("span", { class: "mono", text: path }), " ",
      el("a", { href: download, class: "small", text: "download" }));
    try {
      const f = await S.getJSON(`${runPath}/snapshot/${filePath(path)}`);
      if (f.binary) {
        view.replaceChildren(el("span", { class: "muted", text: `a binary file (${f.size} bytes): ` }),
          el("a", { href: download, text: "download it" }));
      } else {
        view.replaceChildren(f.text, ...(f.truncated ? [el("span", { class: "muted", text: "\n… (the rest: download)" })] : []));
      }
    } catch (e) {
      view.replaceChildren(el("span", { class: "error", text: e.message }));
    }
  }

  // --- start ------------------------------------------------------------------------------
  drawRun(live);
  drawChildren();
  showTab();
  S.live(`${runPath}/events`, {
    run: drawRun,
    child: (c) => { children.set(c.run_id, c); drawChildren(); },
  });
  followLog();
  followMetrics();
})();
