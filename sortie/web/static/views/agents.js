// The agents view: one table, redrawn from the shared agents feed (/agents/stream); heartbeat
// ages tick every second between updates.
(function () {
  "use strict";
  const S = window.Sortie;
  const table = document.getElementById("agents");
  const body = table.querySelector("tbody");
  const canAct = table.dataset.canAct === "true";
  const problem = document.getElementById("agents-problem");
  let skew = 0; // server clock minus this browser's, in seconds
  let agents = [];

  const gib = (mb) => String(Number((mb / 1024).toFixed(mb >= 10240 ? 0 : 1)));
  const num = (v) => (Number.isInteger(v) ? String(v) : v.toFixed(1));

  function meter(used, total) {
    const pct = total > 0 ? Math.min(100, Math.round((100 * used) / total)) : 0;
    return `<span class="meter${pct >= 100 ? " full" : ""}"><span style="width:${pct}%"></span></span>`;
  }

  function capacityCell(used, total, free, fmt, unit) {
    if (!total) return `<span class="muted">—</span>`;
    return `${fmt(used)} / ${fmt(total)}${unit} used${meter(used, total)}<span class="sub">${fmt(free)}${unit} free</span>`;
  }

  function gpusCell(a) {
    const total = a.capacity.gpus || 0;
    if (!total) return `<span class="muted">—</span>`;
    const type = a.capacity.gpu_type ? ` ${S.escape(a.capacity.gpu_type)}` : "";
    const lines = (a.gpus || []).map((g) => {
      const util = g.utilization_pct == null ? "" : ` · ${g.utilization_pct}%`;
      const mem = g.memory_total_mb ? ` · ${gib(g.memory_used_mb)}/${gib(g.memory_total_mb)} GiB` : "";
      const run = g.run_id ? ` · ${S.escape(g.run_id)}` : "";
      return `<span class="gpu">#${g.index} ${S.escape(g.name)}${util}${mem}${run}</span>`;
    });
    return `${a.used.gpus} / ${total}${type} used${meter(a.used.gpus, total)}${lines.join("")}`;
  }

  function actions(a) {
    if (!canAct || a.status === "lost" || a.status === "stopped") return "";
    const out = [];
    if (a.status === "cordoned" || a.status === "draining") {
      out.push(`<button class="secondary" data-action="uncordon">Uncordon</button>`);
    } else {
      out.push(`<button class="secondary" data-action="cordon">Cordon</button>`);
    }
    if (a.status !== "draining") out.push(`<button class="secondary" data-action="drain">Drain</button>`);
    return out.join("");
  }

  function heartbeat(a) {
    const age = Math.max(0, Date.now() / 1000 + skew - a.last_seen);
    const stale = a.status !== "stopped" && age > 30;
    return `<span class="${stale ? "stale" : ""}" title="${S.iso(a.last_seen)}">${S.duration(age)} ago</span>`;
  }

  function row(a) {
    const tags = [a.priority === "lowpriority" ? "low priority" : "", `isolation ${a.isolation}`,
      a.container_engine || ""].filter(Boolean).map(S.escape).join(" · ");
    const runs = a.runs.length
      ? a.runs.map((id) => `<a href="${S.url("/runs/" + encodeURIComponent(id))}">${S.escape(id)}</a>`).join("")
      : `<span class="muted">none</span>`;
    return `<tr data-agent="${S.escape(a.agent_id)}">
      <td class="host"><span class="id">${S.escape(a.agent_id)}</span><span class="sub">${S.escape(a.hostname)} · ${tags}</span></td>
      <td><span class="state ${S.escape(a.status)}">${S.escape(a.status)}</span></td>
      <td class="age">${heartbeat(a)}</td>
      <td>${S.escape(a.target)}</td>
      <td class="cpus">${capacityCell(a.used.cpus, a.capacity.cpus, a.free.cpus, num, "")}</td>
      <td class="memory">${capacityCell(a.used.memory_mb, a.capacity.memory_mb, a.free.memory_mb, gib, " GiB")}</td>
      <td class="gpus">${gpusCell(a)}</td>
      <td class="runs">${runs}</td>
      ${canAct ? `<td class="actions">${actions(a)}</td>` : ""}
    </tr>`;
  }

  function draw() {
    body.innerHTML = agents.length
      ? agents.map(row).join("")
      : `<tr class="empty"><td colspan="9" class="muted">No agent has registered yet.</td></tr>`;
    document.getElementById("agents-count").textContent = `${agents.length} agent${agents.length === 1 ? "" : "s"}`;
  }

  function show(message, kind) {
    problem.textContent = message;
    problem.dataset.kind = kind;
    problem.hidden = false;
  }

  function tick() {
    for (const a of agents) {
      const cell = body.querySelector(`tr[data-agent="${CSS.escape(a.agent_id)}"] td.age`);
      if (cell) cell.innerHTML = heartbeat(a);
    }
  }

  body.addEventListener("click", async (ev) => {
    const button = ev.target.closest("button[data-action]");
    if (!button) return;
    const agent = button.closest("tr").dataset.agent;
    button.disabled = true;
    try {
      await S.post(`/agents/${encodeURIComponent(agent)}/${button.dataset.action}`);
      if (problem.dataset.kind === "action") problem.hidden = true;
    } catch (err) {
      show(err.message, "action");
      button.disabled = false;
    }
  });

  S.live("/agents/stream", {
    agents(data) {
      skew = data.now - Date.now() / 1000;
      agents = data.agents;
      if (problem.dataset.kind === "feed") problem.hidden = true;
      draw();
    },
    problem(data) { show(data.message, "feed"); },
  });
  setInterval(tick, 1000);
})();
