// The queue view: queued runs in placement order, redrawn from the shared queue feed
// (/queue/stream); waiting times tick every second between updates.
(function () {
  "use strict";
  const S = window.Sortie;
  const table = document.getElementById("queue");
  const body = table.querySelector("tbody");
  const problem = document.getElementById("queue-problem");
  let skew = 0;
  let queued = [];

  function asks(r) {
    const res = r.resources;
    const parts = [`${S.number(res.cpus)} CPU`];
    if (res.memory_mb) parts.push(`${(res.memory_mb / 1024).toFixed(1)} GiB`);
    if (res.gpus) parts.push(`${res.gpus} GPU${res.gpu_type ? " " + S.escape(res.gpu_type) : ""}`);
    if (r.node_count > 1) parts.push(`× ${r.node_count} nodes`);
    return parts.join(" · ");
  }

  function waiting(r) {
    return S.duration(Math.max(0, Date.now() / 1000 + skew - r.queued_at));
  }

  function reasons(r) {
    const counted = Object.entries(r.reasons || {}).sort((a, b) => b[1] - a[1]);
    if (!counted.length) return "";
    const chips = counted.map(([why, n]) =>
      `<span class="reason" title="${n} agent${n === 1 ? "" : "s"}"><b>${n}</b>${S.escape(why)}</span>`);
    return `<div class="reasons">${chips.join("")}</div>`;
  }

  function row(r) {
    const attempt = r.attempt > 1 ? ` · attempt ${r.attempt}` : "";
    return `<tr data-run="${S.escape(r.run_id)}">
      <td class="pos">${r.position}</td>
      <td class="run"><a href="${S.url("/runs/" + encodeURIComponent(r.run_id))}">${S.escape(r.run_id)}</a><span class="sub">${S.escape(r.experiment)}${attempt}</span></td>
      <td>${S.escape(r.target)}</td>
      <td>${r.priority}</td>
      <td class="nowrap">${asks(r)}</td>
      <td class="nowrap wait" title="queued ${S.iso(r.queued_at)}">${waiting(r)}</td>
      <td class="why"><span class="summary">${S.escape(r.summary.replace(/^queued: /, ""))}</span>${reasons(r)}</td>
    </tr>`;
  }

  function draw(total) {
    body.innerHTML = queued.length
      ? queued.map(row).join("")
      : `<tr class="empty"><td colspan="7" class="muted">Nothing is queued: every run has been placed.</td></tr>`;
    const more = total > queued.length ? ` (the first ${queued.length} shown)` : "";
    document.getElementById("queue-count").textContent = `${total} queued${more}`;
  }

  function tick() {
    for (const r of queued) {
      const cell = body.querySelector(`tr[data-run="${CSS.escape(r.run_id)}"] td.wait`);
      if (cell) cell.textContent = waiting(r);
    }
  }

  S.live("/queue/stream", {
    queue(data) {
      skew = data.now - Date.now() / 1000;
      queued = data.runs;
      problem.hidden = true;
      draw(data.total);
    },
    problem(data) {
      problem.textContent = data.message;
      problem.hidden = false;
    },
  });
  setInterval(tick, 1000);
})();
