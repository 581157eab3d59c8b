// The sweeps list: draws the rows the server embedded (#sweeps-data) and applies the live
// changes of /api/sweeps/events (filtered by the server with this page's filters): a shown
// sweep is redrawn in place; a new one that matches is added at the top of the first page.
(function () {
  "use strict";
  const S = window.Sortie;
  const data = JSON.parse(document.getElementById("sweeps-data").textContent);
  const tbody = document.querySelector("#sweeps tbody");
  const shown = new Map(); // run id -> tr

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

  function best(sweep) {
    const td = el("td", "best");
    if (!sweep.best_run_id) { td.append(el("span", "muted", "none yet")); return td; }
    td.append(link(`/runs/${encodeURIComponent(sweep.best_run_id)}`, sweep.best_run_id),
      el("span", "value", S.number(sweep.best_objective)));
    return td;
  }

  function draw(sweep) {
    const tr = el("tr");
    tr.dataset.run = sweep.run_id;
    tr.dataset.state = sweep.state;
    const state = el("td");
    state.append(el("span", `state ${sweep.state}`, sweep.state));
    const id = el("td", "run-id mono");
    id.append(link(`/sweeps/${encodeURIComponent(sweep.run_id)}`, sweep.run_id));
    const exp = el("td");
    exp.append(link(`/sweeps?experiment=${encodeURIComponent(sweep.experiment)}`, sweep.experiment, "plain"));
    const trials = el("td", "num trials", `${sweep.issued} / ${sweep.max_total_trials}`);
    if (sweep.ended_because) trials.title = `ended: ${sweep.ended_because}`;
    const started = el("td", "time", S.iso(sweep.started_at || sweep.created_at));
    tr.append(state, id, exp, trials, best(sweep),
      el("td", "mono", `${sweep.primary_metric} (${sweep.goal})`),
      el("td", null, sweep.sampling), el("td", null, sweep.policy), started);
    return tr;
  }

  function empty() {
    document.getElementById("sweeps-empty").hidden = shown.size > 0 || Boolean(data.error);
  }

  function onSweep(sweep) {
    const known = shown.get(sweep.run_id);
    if (known) {
      const tr = draw(sweep);
      known.replaceWith(tr);
      shown.set(sweep.run_id, tr);
      return;
    }
    if (!sweep.match || !data.first) return;
    const tr = draw(sweep);
    shown.set(sweep.run_id, tr);
    tbody.prepend(tr);
    data.total += 1;
    document.getElementById("sweeps-total").textContent = S.number(data.total);
    empty();
  }

  function drawAll(rows) {
    tbody.replaceChildren();
    shown.clear();
    for (const sweep of rows) {
      const tr = draw(sweep);
      shown.set(sweep.run_id, tr);
      tbody.append(tr);
    }
    empty();
  }

  // after a reconnect changes may have been missed: the page's rows are read again
  async function reload() {
    try {
      const fresh = await S.getJSON("/api/sweeps" + window.location.search);
      data.total = fresh.total;
      document.getElementById("sweeps-total").textContent = S.number(data.total);
      drawAll(fresh.rows);
    } catch (err) {
      // the scheduler is away: keep what is shown; the next reconnect tries again
    }
  }

  drawAll(data.rows);
  if (!data.error) {
    const source = S.live("/api/sweeps/events" + window.location.search, { sweep: onSweep });
    let opened = 0;
    source.addEventListener("open", () => { if (opened++ > 0) reload(); });
  }
})();
