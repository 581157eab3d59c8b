// The pipelines list: draws the rows the server embedded (#pipelines-data), ticks the durations
// of pipelines that go on, and applies the live changes of /api/pipelines/events (filtered by
// the server with this page's filters): a shown pipeline is redrawn in place; a new one that
// matches is added at the top of the first page.
(function () {
  "use strict";
  const S = window.Sortie;
  const data = JSON.parse(document.getElementById("pipelines-data").textContent);
  const table = document.getElementById("pipelines");
  const tbody = table.querySelector("tbody");
  const skew = Number(table.dataset.now) * 1000 - Date.now(); // server clock minus ours
  const now = () => (Date.now() + skew) / 1000;
  const shown = new Map(); // run id -> {pipe, tr}

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

  // "3 / 5 done, 1 reused, 1 failed, 1 skipped": the states that matter, of the total
  function steps(pipe) {
    const c = pipe.steps;
    const td = el("td", "steps");
    td.append(el("span", "done", `${c.completed + c.reused} / ${c.total} done`));
    for (const name of ["reused", "failed", "skipped", "canceled", "running"]) {
      if (c[name]) td.append(" ", el("span", `count ${name}`, `${c[name]} ${name}`));
    }
    return td;
  }

  function duration(pipe) {
    if (pipe.duration_s != null) return S.duration(pipe.duration_s);
    return pipe.terminal ? "" : S.duration(now() - pipe.started_at);
  }

  function draw(pipe) {
    const tr = el("tr");
    tr.dataset.run = pipe.run_id;
    tr.dataset.state = pipe.state;
    const state = el("td");
    state.append(el("span", `state ${pipe.state}`, pipe.state));
    const id = el("td", "run-id mono");
    id.append(link(`/pipelines/${encodeURIComponent(pipe.run_id)}`, pipe.run_id));
    const exp = el("td");
    exp.append(link(`/pipelines?experiment=${encodeURIComponent(pipe.experiment)}`, pipe.experiment, "plain"));
    const started = el("td", "time", S.iso(pipe.started_at));
    tr.append(state, id, el("td", "name", pipe.name), exp, steps(pipe), started,
      el("td", "num duration", duration(pipe)));
    if (pipe.error) tr.title = pipe.error;
    return tr;
  }

  function empty() {
    document.getElementById("pipelines-empty").hidden = shown.size > 0 || Boolean(data.error);
  }

  function onPipeline(pipe) {
    const known = shown.get(pipe.run_id);
    if (known) {
      const tr = draw(pipe);
      known.tr.replaceWith(tr);
      shown.set(pipe.run_id, { pipe, tr });
      return;
    }
    if (!pipe.match || !data.first) return;
    const tr = draw(pipe);
    shown.set(pipe.run_id, { pipe, tr });
    tbody.prepend(tr);
    data.total += 1;
    document.getElementById("pipelines-total").textContent = S.number(data.total);
    empty();
  }

  function drawAll(rows) {
    tbody.replaceChildren();
    shown.clear();
    for (const pipe of rows) {
      const tr = draw(pipe);
      shown.set(pipe.run_id, { pipe, tr });
      tbody.append(tr);
    }
    empty();
  }

  // after a reconnect changes may have been missed: the page's rows are read again
  async function reload() {
    try {
      const fresh = await S.getJSON("/api/pipelines" + window.location.search);
      data.total = fresh.total;
      document.getElementById("pipelines-total").textContent = S.number(data.total);
      drawAll(fresh.rows);
    } catch (err) {
      // the scheduler is away: keep what is shown; the next reconnect tries again
    }
  }

  drawAll(data.rows);
  setInterval(() => {
    for (const { pipe, tr } of shown.values()) {
      if (!pipe.terminal) tr.querySelector(".duration").textContent = duration(pipe);
    }
  }, 1000);
  if (!data.error) {
    const source = S.live("/api/pipelines/events" + window.location.search, { pipeline: onPipeline });
    let opened = 0;
    source.addEventListener("open", () => { if (opened++ > 0) reload(); });
  }
})();
