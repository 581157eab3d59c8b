// The runs view: draws the rows the server embedded (#runs-data), ticks the durations of runs
// that are running, and applies the live changes of /api/runs/events (filtered by the server
// with this page's filters): a shown run is redrawn in place; a new run that matches is added
// at the top of the first page (a child under its parent).
(function () {
  "use strict";
  const S = window.Sortie;
  const data = JSON.parse(document.getElementById("runs-data").textContent);
  const table = document.getElementById("runs");
  const tbody = table.querySelector("tbody");
  const skew = Number(table.dataset.now) * 1000 - Date.now(); // server clock minus ours
  const shown = new Map(); // run id -> {run, tr}
  const now = () => (Date.now() + skew) / 1000;

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text != null) node.textContent = text;
    return node;
  }

  function link(href, text, cls) {
    const a = el("a", cls, text);
    a.href = S.url(href);
    return a;
  }

  function duration(run) {
    if (!run.started_at) return "";
    return S.duration((run.ended_at || now()) - run.started_at);
  }

  function metrics(run) {
    const td = el("td", "metrics");
    for (const [name, value] of Object.entries(run.metrics || {})) {
      const chip = el("span", "metric");
      chip.append(el("span", "name", name), el("span", "value", S.number(value)));
      td.append(chip);
    }
    return td;
  }

  function draw(run) {
    const tr = el("tr");
    tr.dataset.run = run.run_id;
    tr.dataset.state = run.state;
    if (run.parent_id && shown.has(run.parent_id)) tr.classList.add("child");
    const state = el("td");
    state.append(el("span", `state ${run.state}`, run.state));
    const id = el("td", "run-id mono");
    id.append(link(`/runs/${encodeURIComponent(run.run_id)}`, run.run_id));
    if (run.sweep) id.append(" ", link(`/sweeps/${encodeURIComponent(run.run_id)}`, "sweep", "badge sweep"));
    if (run.trial != null) id.append(" ", el("span", "badge trial", `trial ${run.trial}`));
    if (run.pipeline) id.append(" ", link(`/pipelines/${encodeURIComponent(run.run_id)}`, "pipeline", "badge pipeline"));
    if (run.step != null) id.append(" ", el("span", "badge step", `step ${run.step}`));
    const exp = el("td");
    exp.append(link(`/runs?experiment=${encodeURIComponent(run.experiment)}`, run.experiment, "plain"));
    const started = el("td", "time", S.iso(run.started_at));
    started.title = `created ${S.iso(run.created_at)}`;
    const commit = el("td", "mono commit", run.commit ? run.commit + (run.dirty ? "*" : "") : "");
    if (run.dirty) commit.title = "uncommitted changes";
    tr.append(state, id, exp, el("td", null, run.target), el("td", "mono agent", run.agent_id || ""),
      started, el("td", "num duration", duration(run)), metrics(run), commit);
    return tr;
  }

  function add(run, where) {
    const tr = draw(run);
    shown.set(run.run_id, { run, tr });
    where(tr);
  }

  function lastOfFamily(parentId) {
    let last = shown.get(parentId).tr;
    while (last.nextElementSibling && last.nextElementSibling.classList.contains("child")) {
      last = last.nextElementSibling;
    }
    return last;
  }

  function onRun(run) {
    const known = shown.get(run.run_id);
    if (known) {
      const tr = draw(run);
      tr.className = known.tr.className;
      known.tr.replaceWith(tr);
      shown.set(run.run_id, { run, tr });
      return;
    }
    if (!run.match || !data.first) return;
    if (run.parent_id && shown.has(run.parent_id)) {
      add(run, (tr) => lastOfFamily(run.parent_id).after(tr));
    } else {
      add(run, (tr) => tbody.prepend(tr));
    }
    data.total += 1;
    document.getElementById("runs-total").textContent = S.number(data.total);
    empty();
  }

  function empty() {
    document.getElementById("runs-empty").hidden = shown.size > 0 || Boolean(data.error);
  }

  function drawAll(rows) {
    tbody.replaceChildren();
    shown.clear();
    for (const run of rows) add(run, (tr) => tbody.append(tr));
    empty();
  }

  // after a reconnect (the dashboard or the broker came back) changes may have been missed:
  // the page's rows are read again
  async function reload() {
    try {
      const fresh = await S.getJSON("/api/runs" + window.location.search);
      data.total = fresh.total;
      document.getElementById("runs-total").textContent = S.number(data.total);
      drawAll(fresh.rows);
    } catch (err) {
      // the scheduler is away: keep what is shown; the next reconnect tries again
    }
  }

  drawAll(data.rows);
  setInterval(() => {
    for (const { run, tr } of shown.values()) {
      if (run.started_at && !run.ended_at) tr.querySelector(".duration").textContent = duration(run);
    }
  }, 1000);
  if (!data.error) {
    const source = S.live("/api/runs/events" + window.location.search, { run: onRun });
    let opened = 0;
    source.addEventListener("open", () => { if (opened++ > 0) reload(); });
  }
})();
