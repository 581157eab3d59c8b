// A pipeline's page: its header, its graph (the steps as boxes in layers, left to right, with
// an edge for each PipelineData that flows between two steps and a dashed one for run_after),
// its steps table and its actions. Drawn from #pipeline-data (what /api/pipelines/ID returns),
// kept live by /pipelines/ID/events: the header and a step's run state are redrawn as their
// records change, and the whole is read again at most once a second.
(function () {
  "use strict";
  const S = window.Sortie;
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const BOX = { w: 180, h: 46, gapX: 80, gapY: 22, pad: 14 };
  const boot = JSON.parse($("pipeline-data").textContent);
  let detail = boot.detail;
  const pipelineId = $("pipeline").dataset.runId;
  const pipelinePath = `/pipelines/${encodeURIComponent(pipelineId)}`;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") node.textContent = v; else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c);
    return node;
  }
  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") node.textContent = v; else node.setAttribute(k, String(v));
    }
    for (const c of children) node.append(c);
    return node;
  }
  const runLink = (id, cls) => el("a", { href: S.url(`/runs/${encodeURIComponent(id)}`), class: cls || "mono", text: id });

  // --- the header -------------------------------------------------------------------------
  function drawHead(p) {
    const state = $("pipeline-state");
    state.textContent = p.state;
    state.className = `state ${p.state}`;
    const c = p.steps;
    const parts = [`${c.completed + c.reused} / ${c.total} done`];
    for (const name of ["reused", "failed", "skipped", "canceled", "running", "waiting"]) {
      if (c[name]) parts.push(`${c[name]} ${name}`);
    }
    $("pipeline-steps").textContent = parts.join(", ");
    $("pipeline-ended").textContent = S.iso(p.ended_at);
    $("pipeline-duration").textContent = p.duration_s == null ? "" : S.duration(p.duration_s);
    const error = $("pipeline-error");
    error.hidden = !p.error;
    error.textContent = p.error || "";
    const cancel = $("cancel");
    if (cancel) cancel.hidden = p.terminal;
    detail.pipeline = p;
  }

  // --- the graph --------------------------------------------------------------------------
  function place(graph) {
    const perLayer = new Map();
    for (const n of graph.nodes) perLayer.set(n.layer, (perLayer.get(n.layer) || 0) + 1);
    const at = new Map();
    for (const n of graph.nodes) {
      const shift = (graph.width - perLayer.get(n.layer)) * (BOX.h + BOX.gapY) / 2;
      at.set(n.name, { x: BOX.pad + n.layer * (BOX.w + BOX.gapX), y: BOX.pad + shift + n.slot * (BOX.h + BOX.gapY) });
    }
    return at;
  }

  function edge(e, at) {
    const a = at.get(e.from), b = at.get(e.to);
    if (!a || !b) return null;
    const x1 = a.x + BOX.w, y1 = a.y + BOX.h / 2, x2 = b.x - 4, y2 = b.y + BOX.h / 2;
    const mid = (x1 + x2) / 2;
    const g = svg("g", { class: `edge${e.run_after && !e.data.length ? " after" : ""}`, "data-from": e.from, "data-to": e.to });
    g.append(svg("path", { d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`, "marker-end": "url(#arrow)" }));
    // the label where the edge leaves its step (an edge that skips layers runs behind the
    // boxes between, so its middle is no place for words)
    const label = [...e.data, ...(e.run_after ? ["run_after"] : [])].join(", ");
    const near = x2 - x1 > BOX.gapX * 1.5;
    g.append(svg("text", { x: near ? x1 + BOX.gapX / 2 : mid, y: (near ? y1 : (y1 + y2) / 2) - 5,
      "text-anchor": "middle", text: label }));
    return g;
  }

  function node(n, at, rows) {
    const { x, y } = at.get(n.name);
    const row = rows.get(n.name) || {};
    const g = svg("a", { href: `#step-${n.name}`, class: `node ${n.state}`, "data-step": n.name, "data-state": n.state });
    g.append(svg("title", { text: `${n.name}: ${n.state}${row.reason ? ` (${row.reason})` : ""}` }));
    g.append(svg("rect", { x, y, width: BOX.w, height: BOX.h, rx: 7 }));
    g.append(svg("text", { x: x + 10, y: y + 19, class: "name", text: n.name.length > 22 ? `${n.name.slice(0, 21)}…` : n.name }));
    g.append(svg("text", { x: x + 10, y: y + 36, class: "state", text: row.target ? `${n.state} · ${row.target}` : n.state }));
    return g;
  }

  function drawGraph() {
    const graph = detail.graph;
    const box = $("graph");
    const width = BOX.pad * 2 + graph.layers * BOX.w + Math.max(0, graph.layers - 1) * BOX.gapX;
    const height = BOX.pad * 2 + graph.width * BOX.h + Math.max(0, graph.width - 1) * BOX.gapY;
    box.setAttribute("width", width);
    box.setAttribute("height", height);
    box.setAttribute("viewBox", `0 0 ${width} ${height}`);
    const at = place(graph);
    const rows = new Map(detail.steps.map((s) => [s.name, s]));
    const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
      svg("path", { d: "M0,0 L10,5 L0,10 z" }));
    box.replaceChildren(svg("defs", {}, marker),
      ...graph.edges.map((e) => edge(e, at)).filter(Boolean),
      ...graph.nodes.map((n) => node(n, at, rows)));
  }

  // --- the steps table --------------------------------------------------------------------
  function runCell(s) {
    const td = el("td", { class: "run" });
    if (s.reused_from) {
      td.append("reused ", runLink(s.reused_from, "mono reused-from"));
      if (s.reused_pipeline && s.reused_pipeline !== pipelineId) {
        td.append(" of ", el("a", { href: S.url(`/pipelines/${encodeURIComponent(s.reused_pipeline)}`), class: "mono", text: s.reused_pipeline }));
      }
    } else if (s.run_id) {
      td.append(runLink(s.run_id));
      if (s.run_state) td.append(" ", el("span", { class: `state ${s.run_state}`, text: s.run_state }));
    }
    return td;
  }

  function dataCell(s) {
    const td = el("td", { class: "data" });
    if (s.inputs.length) td.append(el("div", { class: "in", text: `reads ${s.inputs.join(", ")}` }));
    if (s.outputs.length) td.append(el("div", { class: "out", text: `writes ${s.outputs.join(", ")}` }));
    if (s.run_after.length) td.append(el("div", { class: "after", text: `after ${s.run_after.join(", ")}` }));
    return td;
  }

  function whyCell(s) {
    const td = el("td", { class: "why" });
    if (s.state === "reused") td.append(el("span", { class: "muted", text: "key unchanged" }));
    else if (s.why_ran) td.textContent = s.why_ran;
    if (!s.allow_reuse && !s.why_ran) td.append(el("span", { class: "badge", text: "allow_reuse off" }));
    return td;
  }

  function drawSteps() {
    $("steps").tBodies[0].replaceChildren(...detail.steps.map((s) => el("tr",
      { id: `step-${s.name}`, "data-step": s.name, "data-state": s.state },
      el("td", { class: "mono name", text: s.name }),
      el("td", {}, el("span", { class: `step-state ${s.state}`, text: s.state })),
      runCell(s),
      el("td", { text: s.target }),
      dataCell(s),
      whyCell(s),
      el("td", { class: "reason", text: s.reason || s.error || "" }))));
  }

  // --- live -------------------------------------------------------------------------------
  function drawAll() { drawHead(detail.pipeline); drawGraph(); drawSteps(); }

  async function reload() {
    try {
      detail = await S.getJSON(`/api/pipelines/${encodeURIComponent(pipelineId)}`);
      drawAll();
    } catch (err) {
      say(err.message, true);
    }
  }

  let timer = null;
  function soon() { // many steps change at once: read the whole again once they settle
    if (timer) return;
    timer = setTimeout(() => { timer = null; reload(); }, 1000);
  }

  function onStep(run) {
    const row = detail.steps.find((s) => s.run_id === run.run_id && !s.reused_from);
    if (row) {
      Object.assign(row, { run_state: run.run_state, started_at: run.started_at, ended_at: run.ended_at });
      drawSteps();
    }
    soon();
  }

  // --- actions ----------------------------------------------------------------------------
  function say(message, isError, ...extra) {
    const box = $("action-message");
    box.hidden = false;
    box.className = `action-message ${isError ? "error" : ""}`;
    box.replaceChildren(message, ...extra);
  }

  const cancel = $("cancel");
  if (cancel) {
    cancel.addEventListener("click", async () => {
      if (!window.confirm(`Cancel pipeline ${pipelineId} and its running steps?`)) return;
      cancel.disabled = true;
      try {
        const reply = await S.post(`${pipelinePath}/cancel`);
        say(`Cancel asked: the pipeline is ${reply.state}.`, false);
      } catch (e) { say(e.message, true); } finally { cancel.disabled = false; }
    });
  }

  const rerun = $("rerun");
  if (rerun) {
    rerun.addEventListener("click", async () => {
      rerun.disabled = true;
      try {
        const reply = await S.post(`${pipelinePath}/rerun`);
        const a = el("a", { id: "rerun-link", class: "mono", href: S.url(`/pipelines/${encodeURIComponent(reply.run_id)}`), text: reply.run_id });
        say("Submitted again (unchanged steps are reused): ", false, a);
      } catch (e) { say(e.message, true); } finally { rerun.disabled = false; }
    });
  }

  // --- start ------------------------------------------------------------------------------
  drawAll();
  let opened = 0;
  const source = S.live(`${pipelinePath}/events`, {
    pipeline: (p) => { drawHead(p); soon(); },
    step: onStep,
  });
  source.addEventListener("open", () => { if (opened++ > 0) reload(); });
})();
