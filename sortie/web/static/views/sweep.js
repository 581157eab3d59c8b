// A sweep's page: its header, trials table, parameter-vs-objective scatter and the trials'
// primary-metric curves. Drawn from #sweep-data (what /api/sweeps/ID returns), kept live by
// /sweeps/ID/events: a trial's row is redrawn as its record changes, and what depends on many
// trials (the scatter, the best, the curves) is read again at most once a second.
(function () {
  "use strict";
  const S = window.Sortie;
  const $ = (id) => document.getElementById(id);
  const boot = JSON.parse($("sweep-data").textContent);
  let detail = boot.detail;
  const sweepId = $("sweep").dataset.runId;
  const sweepPath = `/sweeps/${encodeURIComponent(sweepId)}`;
  const rows = new Map(detail.trials.map((t) => [t.run_id, t]));
  const curves = new Map(); // run id -> values (interval n: values[n - 1])

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") node.textContent = v; else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c);
    return node;
  }
  const runLink = (id) => el("a", { href: S.url(`/runs/${encodeURIComponent(id)}`), text: id });
  const value = (v) => typeof v === "string" ? `"${v}"` : S.number(v);

  // --- the header -------------------------------------------------------------------------
  function drawHead(s) {
    const state = $("sweep-state");
    state.textContent = s.state;
    state.className = `state ${s.state}`;
    $("sweep-issued").textContent = `${s.issued} / ${s.max_total_trials}`;
    $("sweep-ended").textContent = S.iso(s.ended_at);
    const because = $("sweep-ended-because");
    because.hidden = !s.ended_because;
    because.textContent = s.ended_because ? `ended: ${s.ended_because}` : "";
    const best = $("sweep-best");
    if (s.best_run_id) best.replaceChildren(runLink(s.best_run_id), ` ${S.number(s.best_objective)}`);
    else best.replaceChildren(el("span", { class: "muted", text: "none yet" }));
    const cancel = $("cancel");
    if (cancel) cancel.hidden = s.terminal;
    detail.sweep = s;
  }

  // --- the trials table -------------------------------------------------------------------
  function params(t) {
    const td = el("td", { class: "params" });
    for (const [k, v] of Object.entries(t.params)) {
      td.append(el("span", { class: "metric" }, el("span", { class: "name", text: k }),
        el("span", { class: "value", text: value(v) })));
    }
    return td;
  }

  function stop(t) {
    const td = el("td", { class: "stop" });
    if (t.error && t.state !== "Completed") {
      td.append(el("span", { class: "kind", text: t.error.kind }), t.error.message);
    }
    return td;
  }

  function drawTrials() {
    const all = [...rows.values()].sort((a, b) => a.index - b.index);
    $("trials-count").textContent = all.length ? `${all.length}` : "";
    if (!all.length) {
      $("trials").tBodies[0].replaceChildren(el("tr", {}, el("td", { colspan: "7", class: "muted", text: "no trials yet" })));
      return;
    }
    const bestId = detail.sweep.best_run_id;
    $("trials").tBodies[0].replaceChildren(...all.map((t) => {
      const tr = el("tr", { "data-run": t.run_id, "data-state": t.state, class: t.run_id === bestId ? "best" : "" },
        el("td", { class: "num", text: String(t.index) }),
        el("td", { class: "run" }, runLink(t.run_id)),
        el("td", {}, el("span", { class: `state ${t.state}`, text: t.state })),
        params(t),
        el("td", { class: "num objective", text: t.objective == null ? "" : S.number(t.objective) }),
        el("td", { class: "num", text: String(t.intervals) }),
        stop(t));
      return tr;
    }));
  }

  // --- the scatter ------------------------------------------------------------------------
  let scatterPlot = null;
  function drawScatter() {
    const select = $("scatter-param");
    const names = detail.scatter.map((p) => p.name);
    if ([...select.options].map((o) => o.value).join("\n") !== names.join("\n")) {
      const chosen = select.value;
      select.replaceChildren(...names.map((n) => el("option", { value: n, text: n })));
      if (names.includes(chosen)) select.value = chosen;
    }
    const p = detail.scatter.find((q) => q.name === select.value) || detail.scatter[0];
    const box = $("scatter");
    if (scatterPlot) { scatterPlot.destroy(); scatterPlot = null; }
    box.replaceChildren();
    $("scatter-empty").hidden = Boolean(p && p.x.length);
    if (!p || !p.x.length) return;
    const order = p.x.map((_, i) => i).sort((a, b) => p.x[a] - p.x[b]);
    const xs = order.map((i) => p.x[i]);
    const ys = order.map((i) => p.y[i]);
    box.dataset.param = p.name;
    box.dataset.x = JSON.stringify(xs);
    box.dataset.y = JSON.stringify(ys);
    const cats = p.categories;
    const xAxis = { label: p.name };
    const xScale = { time: false };
    if (cats) {
      xAxis.splits = () => cats.map((_, i) => i);
      xAxis.values = (u, splits) => splits.map((v) => cats[v] != null ? cats[v] : "");
      xScale.range = () => [-0.5, cats.length - 0.5];
    }
    scatterPlot = new uPlot({
      title: `${detail.spec.primary_metric} by ${p.name}`,
      width: Math.max(320, box.clientWidth - 16), height: 280,
      scales: { x: xScale },
      axes: [xAxis, { label: detail.spec.primary_metric }],
      series: [{ label: p.name }, {
        label: detail.spec.primary_metric, stroke: S.palette[0], fill: S.palette[0],
        paths: () => null, points: { show: true, size: 8, fill: S.palette[0] },
      }],
      legend: { show: false },
    }, [xs, ys], box);
  }

  // --- the curves -------------------------------------------------------------------------
  function drawCurves() {
    const box = $("curves");
    box.replaceChildren();
    const series = detail.curve_runs.filter((id) => (curves.get(id) || []).length).map((id) => {
      const ys = curves.get(id);
      return { label: id, x: ys.map((_, i) => i + 1), y: ys };
    });
    $("curves-empty").hidden = series.length > 0;
    box.dataset.runs = JSON.stringify(series.map((s) => s.label));
    if (series.length) S.chart(box, `${detail.spec.primary_metric} by interval`, series, "interval");
  }

  async function loadCurves() {
    const stale = detail.curve_runs.filter((id) => {
      const t = rows.get(id);
      return !curves.has(id) || (t && curves.get(id).length !== t.intervals);
    });
    if (!stale.length) { drawCurves(); return; }
    const reply = await S.getJSON(`/api/sweeps/${encodeURIComponent(sweepId)}/curves?runs=${stale.map(encodeURIComponent).join(",")}`);
    for (const [id, ys] of Object.entries(reply.curves)) curves.set(id, ys);
    drawCurves();
  }

  // --- live -------------------------------------------------------------------------------
  async function reload() {
    try {
      detail = await S.getJSON(`/api/sweeps/${encodeURIComponent(sweepId)}`);
      rows.clear();
      for (const t of detail.trials) rows.set(t.run_id, t);
      drawHead(detail.sweep);
      drawTrials();
      drawScatter();
      await loadCurves();
    } catch (err) {
      say(err.message, true);
    }
  }

  let timer = null;
  function soon() { // many trials change at once: read the whole again once they settle
    if (timer) return;
    timer = setTimeout(() => { timer = null; reload(); }, 1000);
  }

  // --- actions ----------------------------------------------------------------------------
  function say(message, isError) {
    const box = $("action-message");
    box.hidden = false;
    box.className = `action-message ${isError ? "error" : ""}`;
    box.textContent = message;
  }

  const cancel = $("cancel");
  if (cancel) {
    cancel.addEventListener("click", async () => {
      if (!window.confirm(`Cancel sweep ${sweepId} and its running trials?`)) return;
      cancel.disabled = true;
      try {
        const reply = await S.post(`${sweepPath}/cancel`);
        say(`Cancel asked: the sweep is ${reply.state}.`, false);
      } catch (e) { say(e.message, true); } finally { cancel.disabled = false; }
    });
  }

  $("scatter-param").addEventListener("change", drawScatter);

  // --- start ------------------------------------------------------------------------------
  drawHead(detail.sweep);
  drawTrials();
  drawScatter();
  loadCurves().catch((err) => say(err.message, true));
  let opened = 0;
  const source = S.live(`${sweepPath}/events`, {
    sweep: (s) => { drawHead(s); soon(); },
    trial: (t) => { rows.set(t.run_id, t); drawTrials(); soon(); },
  });
  source.addEventListener("open", () => { if (opened++ > 0) reload(); });
})();
