// The compute page: targets, clusters, attached machines (live), and their forms.
// Draws the ComputeSnapshot embedded in the page, then each one /compute/stream pushes.
(function () {
  "use strict";
  const S = window.Sortie;
  const esc = S.escape;
  const root = document.getElementById("compute-page");
  const canAct = root && root.dataset.canAct === "yes";

  const state = (s) => `<span class="state ${esc(s)}">${esc(s)}</span>`;
  const when = (isoText) => (isoText ? esc(isoText.replace("T", " ").replace(/\.\d+Z$/, "Z")) : "");

  function show(el, on) { if (el) el.hidden = !on; }

  // --- the targets table ------------------------------------------------------------------
  const KIND = { local: "local", cluster: "cluster", vm: "attached machine", agents: "agents" };

  function drawTargets(rows) {
    const body = document.querySelector("#targets tbody");
    body.innerHTML = rows.length ? rows.map((t) => `<tr data-name="${esc(t.name)}">
        <td><b>${t.kind === "cluster" || t.kind === "vm" ? `<a href="#c-${esc(t.name)}">${esc(t.name)}</a>` : esc(t.name)}</b></td><td>${esc(KIND[t.kind] || t.kind)}${t.engine ? ` · <span class="engine">${esc(t.engine)}</span>` : ""}</td>
        <td>${esc(t.detail)}</td><td>${state(t.state)}</td><td>${t.agents}</td>
        <td>${t.nodes ? esc(t.nodes) : '<span class="muted">–</span>'}</td>
        <td class="error small">${t.error ? esc(t.error) : ""}</td></tr>`).join("")
      : '<tr><td colspan="7" class="muted">No compute target.</td></tr>';
  }

  // --- cards: one per cluster or machine, kept across updates (their forms too) -------------
  function cards(container, items, build, fill, empty) {
    const seen = new Set();
    for (const item of items) {
      seen.add(item.name);
      let card = container.querySelector(`:scope > [data-name="${CSS.escape(item.name)}"]`);
      if (!card) {
        card = build(item);
        card.dataset.name = item.name;
        card.id = `c-${item.name}`; // /compute#c-NAME: a link to it from other pages
        container.appendChild(card);
      }
      fill(card, item);
    }
    for (const card of container.querySelectorAll(":scope > [data-name]")) {
      if (!seen.has(card.dataset.name)) card.remove();
    }
    let note = container.querySelector(":scope > p.muted");
    if (!items.length && !note) {
      note = document.createElement("p");
      note.className = "muted";
      note.textContent = empty;
      container.appendChild(note);
    }
    if (items.length && note) note.remove();
  }

  function clusterCard(c) {
    const card = document.createElement("article");
    card.className = "card compute-card cluster";
    card.innerHTML = `<header><h3>${esc(c.name)}</h3><span class="card-state"></span>
        <span class="muted card-what"></span></header><div class="card-body"></div>`;
    if (canAct) card.appendChild(clusterActions(c));
    return card;
  }

  function counts(n) {
    return ["current", "target", "idle", "busy", "preempted"].map((k) =>
      `<div class="stat" data-count="${k}"><b>${n[k]}</b><span>${k}</span></div>`).join("");
  }

  function fillCluster(card, c) {
    const shape = c.shape;
    card.querySelector(".card-state").innerHTML = state(c.provisioning_state);
    card.querySelector(".card-what").textContent =
      `${c.provider === "process" ? "process" : "SSH pool"} · ${c.vm_size} (${S.number(shape.cpus)} CPU, ` +
      `${S.number(shape.memory_mb / 1024)} GB${shape.gpus ? `, ${shape.gpus} ${shape.gpu_type || "GPU"}` : ""}) · ${c.vm_priority}`;
    const nodes = c.node_list.length ? `<table class="grid compact"><thead><tr><th>Node</th><th>State</th>
        <th>Changed</th><th>Message</th></tr></thead><tbody>${c.node_list.map((n) => `<tr>
        <td class="mono">${esc(n.node_id)}</td><td>${state(n.state)}</td><td>${when(n.changed_at)}</td>
        <td>${esc(n.message || "")}</td></tr>`).join("")}</tbody></table>` : "";
    const decisions = c.decisions.slice(-8).reverse().map((d) => `<li><span class="muted">${when(d.at)}</span>
        <b class="decision ${esc(d.action)}">${esc(d.action.replace("_", " "))}</b> ${esc(d.reason)}</li>`).join("");
    const errors = c.provisioning_errors.slice(-5).reverse().map((e) => `<li><span class="muted">${when(e.at)}</span>
        <b>${esc(e.code)}</b> ${esc(e.message)}</li>`).join("");
    card.querySelector(".card-body").innerHTML = `<div class="stats">${counts(c.nodes)}
        <div class="limits">min <b data-limit="min">${c.min_nodes}</b> · max <b data-limit="max">${c.max_nodes}</b>
        · scale down after ${S.duration(c.idle_seconds_before_scaledown)} idle</div></div>
        ${errors ? `<h4>Errors</h4><ul class="events errors">${errors}</ul>` : ""}
        ${nodes}
        <h4>Autoscaler decisions</h4>${decisions ? `<ul class="events">${decisions}</ul>` : '<p class="muted small">None yet.</p>'}`;
  }

  function clusterActions(c) {
    const box = document.createElement("div");
    box.className = "card-actions";
    box.innerHTML = `<form class="update inline-form" novalidate>
        <label>min <input name="min_nodes" type="number" min="0" value="${c.min_nodes}"></label>
        <label>max <input name="max_nodes" type="number" min="1" value="${c.max_nodes}"></label>
        <label>idle s <input name="idle_seconds_before_scaledown" type="number" min="0" step="any" value="${c.idle_seconds_before_scaledown}"></label>
        <button type="submit" class="secondary">Update limits</button></form>
      <span class="spacer"></span>
      <label class="choice small"><input type="checkbox" name="force"> force (fail queued runs, cancel active)</label>
      <button type="button" class="danger delete">Delete</button>
      <span class="form-error error" role="alert"></span>`;
    const err = box.querySelector(".form-error");
    box.querySelector("form.update").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const f = ev.target;
      act(err, `/compute/${encodeURIComponent(c.name)}/update`, {
        min_nodes: intOrNull(f.min_nodes.value), max_nodes: intOrNull(f.max_nodes.value),
        idle_seconds_before_scaledown: numOrNull(f.idle_seconds_before_scaledown.value),
      }, `Updated ${c.name}`);
    });
    box.querySelector("button.delete").addEventListener("click", () => {
      if (!window.confirm(`Delete cluster ${c.name}? Its nodes are stopped.`)) return;
      act(err, `/compute/${encodeURIComponent(c.name)}/delete`,
        { force: box.querySelector("input[name=force]").checked }, `Deleting ${c.name}`);
    });
    return box;
  }

  function machineCard(v) {
    const card = document.createElement("article");
    card.className = "card compute-card machine";
    card.innerHTML = `<header><h3>${esc(v.name)}</h3><span class="card-state"></span>
        <span class="muted card-what"></span></header><div class="card-body"></div>`;
    if (canAct) {
      const box = document.createElement("div");
      box.className = "card-actions";
      box.innerHTML = `<span class="spacer"></span>
        <label class="choice small"><input type="checkbox" name="force"> force (forget it even if its agent cannot be stopped)</label>
        <button type="button" class="danger detach">Detach</button>
        <span class="form-error error" role="alert"></span>`;
      const err = box.querySelector(".form-error");
      box.querySelector("button.detach").addEventListener("click", () => {
        if (!window.confirm(`Detach ${v.name}? Its agent is stopped and what Sortie installed there is removed.`)) return;
        act(err, `/compute/${encodeURIComponent(v.name)}/detach`,
          { force: box.querySelector("input[name=force]").checked }, `Detaching ${v.name}`);
      });
      card.appendChild(box);
    }
    return card;
  }

  function fillMachine(card, v) {
    card.querySelector(".card-state").innerHTML = state(v.provisioning_state);
    // the engine it hands its runs to, as the targets table says it (compute_data.py)
    const engine = engines.get(v.name);
    card.querySelector(".card-what").textContent = (engine ? `${engine} · ` : "") +
      `${v.username}@${v.address}:${v.ssh_port} (${v.auth}) · link ${v.link}`;
    const errors = v.provisioning_errors.slice(-3).reverse().map((e) => `<li><span class="muted">${when(e.at)}</span>
        <b>${esc(e.code)}</b> ${esc(e.message)}</li>`).join("");
    const env = Object.entries(v.agent_env || {}).map(([k, x]) => `${esc(k)}=${esc(x)}`).join(" ");
    card.querySelector(".card-body").innerHTML = `
      ${errors ? `<ul class="events errors">${errors}</ul>` : ""}
      ${env ? `<p class="small"><span class="muted">agent environment</span> <span class="mono">${env}</span></p>` : ""}
      ${v.progress.length ? `<pre class="log progress">${v.progress.slice(-8).map(esc).join("\n")}</pre>` : ""}`;
  }

  // --- drawing a snapshot -------------------------------------------------------------------
  // A snapshot read before the last one drawn is stale: the read after an action can answer
  // after the stream has already pushed a newer one (a cluster deleted at once would be drawn
  // as Deleting again, and the feed sends nothing more while nothing changes).
  let drawnAt = 0;
  let engines = new Map(); // machine name -> "slurm · partition debug" (its targets row's)

  function draw(snap) {
    if (snap.at < drawnAt) return;
    drawnAt = snap.at;
    const banner = document.getElementById("compute-banner");
    banner.textContent = snap.error || "";
    show(banner, !!snap.error);
    drawTargets(snap.targets);
    engines = new Map(snap.targets.filter((t) => t.engine).map((t) => [t.name, t.engine]));
    cards(document.getElementById("clusters"), snap.clusters, clusterCard, fillCluster, "No cluster yet.");
    cards(document.getElementById("machines"), snap.machines, machineCard, fillMachine, "No machine attached.");
  }

  // --- actions ------------------------------------------------------------------------------
  const intOrNull = (v) => (v === "" ? null : Number.parseInt(v, 10));
  const numOrNull = (v) => (v === "" ? null : Number(v));

  async function act(errEl, path, body, done) {
    errEl.textContent = "";
    errEl.classList.remove("ok");
    try {
      const reply = await S.post(path, body);
      errEl.textContent = done;
      errEl.classList.add("ok");
      refresh();
      return reply;
    } catch (e) {
      errEl.textContent = e.message;
      return null;
    }
  }

  async function refresh() {
    try { draw(await S.getJSON("/api/compute")); } catch (e) { /* the stream brings the next */ }
  }

  function panels() {
    for (const b of document.querySelectorAll("[data-open]")) {
      b.addEventListener("click", () => {
        const panel = document.getElementById(b.dataset.open);
        for (const p of document.querySelectorAll(".panel")) if (p !== panel) p.hidden = true;
        panel.hidden = !panel.hidden;
        if (!panel.hidden) panel.querySelector("input").focus();
      });
    }
    for (const b of document.querySelectorAll("[data-close]")) {
      b.addEventListener("click", () => { document.getElementById(b.dataset.close).hidden = true; });
    }
  }

  function createForm() {
    const form = document.getElementById("create-form");
    if (!form) return;
    const err = form.querySelector(".form-error");
    const f = form.elements;
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const name = f.name.value.trim();
      const reply = await act(err, "/compute", {
        name, vm_size: f.vm_size.value,
        min_nodes: intOrNull(f.min_nodes.value) ?? 0, max_nodes: intOrNull(f.max_nodes.value) ?? 0,
        idle_seconds_before_scaledown: numOrNull(f.idle_seconds_before_scaledown.value) ?? 120,
        vm_priority: f.vm_priority.value,
      }, `Created ${name}`);
      if (reply) f.name.value = "";
    });
  }

  // Attaching: check the form (nothing sent on), fetch the host key the scheduler sees, show
  // its fingerprint, and attach with it pinned once the person confirms. Secrets go in the
  // POST bodies only, and the form is cleared when the attach is sent.
  function attachForm() {
    const form = document.getElementById("attach-form");
    if (!form) return;
    const err = form.querySelector(".form-error");
    const f = form.elements;
    const go = form.querySelector(".attach-go");
    const box = form.querySelector(".hostkey");
    let confirmed = null; // {address, ssh_port, fingerprint} shown and accepted with the button

    const reset = () => { confirmed = null; show(box, false); go.textContent = "Check host key"; go.disabled = false; };
    for (const name of ["address", "ssh_port"]) f[name].addEventListener("input", reset);
    const syncAuth = () => {
      const key = form.querySelector("input[name=auth]:checked").value === "key";
      show(form.querySelector(".auth-key"), key);
      show(form.querySelector(".auth-password"), !key);
    };
    for (const r of form.querySelectorAll("input[name=auth]")) r.addEventListener("change", syncAuth);
    const syncType = () => {
      show(form.querySelector(".engine-slurm"), f.type.value === "slurm");
      show(form.querySelector(".engine-spark"), f.type.value === "spark");
    };
    f.type.addEventListener("change", syncType);
    // the chosen type's settings only (an empty one: the engine's default)
    const engine = () => {
      const text = (name) => f[name].value.trim() || null;
      if (f.type.value === "slurm") return { partition: text("partition"), account: text("account"), qos: text("qos") };
      if (f.type.value === "spark") {
        return { master: text("master"), conf: f.conf.value, submit: text("submit"),
          ui_port: f.ui_port.value === "" ? null : Number(f.ui_port.value) };
      }
      return {};
    };

    async function fields() {
      const key = form.querySelector("input[name=auth]:checked").value === "key";
      const file = f.private_key_file.files[0];
      return {
        name: f.name.value.trim(), address: f.address.value.trim(),
        ssh_port: intOrNull(f.ssh_port.value) ?? 22, username: f.username.value.trim(),
        private_key: key && file ? await file.text() : null,
        passphrase: key ? f.passphrase.value || null : null,
        password: key ? null : f.password.value || null,
        type: f.type.value, ...engine(),
      };
    }

    async function scan(body) {
      const reply = await S.post("/compute/host-key", { address: body.address, ssh_port: body.ssh_port });
      box.querySelector(".hostkey-text").textContent = reply.message;
      box.querySelector(".hostkey-fp").textContent = `${reply.algorithm} ${reply.fingerprint}`;
      box.className = `hostkey ${reply.verdict}`;
      show(box, true);
      if (reply.verdict === "known" || reply.verdict === "unknown") {
        confirmed = { address: body.address, ssh_port: body.ssh_port, fingerprint: reply.fingerprint };
        go.textContent = reply.verdict === "known" ? "Attach" : "Confirm fingerprint and attach";
      } else {
        go.disabled = true; // a changed or revoked key: nothing to confirm here
      }
    }

    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      err.textContent = "";
      err.classList.remove("ok");
      go.disabled = true;
      try {
        const body = await fields();
        await S.post("/compute/attach", { ...body, check_only: true });
        if (!confirmed) { await scan(body); return; }
        await S.post("/compute/attach", { ...body, host_key_fingerprint: confirmed.fingerprint });
        form.reset();
        reset();
        syncAuth();
        syncType();
        err.textContent = `Attaching ${body.name}: its progress shows below`;
        err.classList.add("ok");
        refresh();
      } catch (e) {
        err.textContent = e.message;
      } finally {
        if (!box.classList.contains("changed") && !box.classList.contains("revoked")) go.disabled = false;
      }
    });
  }

  draw(JSON.parse(document.getElementById("compute-data").textContent));
  panels();
  createForm();
  attachForm();
  S.live("/compute/stream", { compute: draw });
})();
