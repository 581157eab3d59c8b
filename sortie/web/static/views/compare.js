// The compare view: the picked runs (?runs=a,b,c) side by side. A search adds runs by id
// prefix or experiment; charts overlay each metric with a series per run; the table marks the
// rows where the runs differ.
(function () {
  "use strict";
  const S = window.Sortie;
  const root = document.getElementById("compare");
  const max = Number(root.dataset.max);
  const search = document.getElementById("compare-search");
  const found = document.getElementById("compare-found");
  const problem = document.getElementById("compare-problem");
  const table = document.getElementById("compare-table");
  let picked = root.dataset.runs ? root.dataset.runs.split(",") : [];
  let runs = []; // as the server last described them
  let shown = []; // the found list's run ids, in order
  let active = -1;

  const colour = (i) => S.palette[i % S.palette.length];
  const runLink = (id) => `<a href="${S.url("/runs/" + encodeURIComponent(id))}">${S.escape(id)}</a>`;

  function say(message) {
    problem.textContent = message || "";
    problem.hidden = !message;
  }

  function setPicked(ids) {
    picked = ids;
    const query = ids.length ? `?runs=${ids.map(encodeURIComponent).join(",")}` : "";
    history.replaceState(null, "", S.url("/compare") + query);
    load();
  }

  function drawChips() {
    // a run's colour is its place among the runs found (a missing one has none)
    const place = new Map(runs.map((r, i) => [r.run_id, i]));
    document.getElementById("compare-picked").innerHTML = picked.map((id) => {
      const swatch = place.has(id) ? colour(place.get(id)) : "#d0d3d9";
      return `<span class="chip" data-run="${S.escape(id)}"><span class="swatch" style="background:${swatch}"></span>${S.escape(id)}<button title="remove" aria-label="remove ${S.escape(id)}">×</button></span>`;
    }).join("");
  }

  function drawCharts(charts) {
    const box = document.getElementById("compare-charts");
    box.innerHTML = "";
    document.getElementById("compare-no-metrics").hidden = charts.length > 0;
    for (const c of charts) {
      const el = document.createElement("div");
      el.className = "chart";
      el.dataset.metric = c.name;
      box.appendChild(el);
      S.chart(el, c.name, c.series, "step");
    }
  }

  function drawTable(data) {
    table.querySelector("thead").innerHTML = `<tr><th>setting</th>${data.runs.map((r, i) =>
      `<th class="run"><span class="swatch" style="background:${colour(i)}"></span> ${runLink(r.run_id)}<span class="state ${S.escape(r.state)}">${S.escape(r.state)}</span></th>`).join("")}</tr>`;
    const out = [];
    let group = null;
    for (const row of data.rows) {
      if (row.group !== group) {
        group = row.group;
        out.push(`<tr class="group"><td colspan="${data.runs.length + 1}">${S.escape(group)}</td></tr>`);
      }
      const cells = row.values.map((v) => v === null
        ? `<td class="value absent">—</td>`
        : `<td class="value">${S.escape(v)}</td>`);
      out.push(`<tr class="${row.differs ? "differs" : "same"}"><td class="name">${S.escape(row.name)}</td>${cells.join("")}</tr>`);
    }
    table.querySelector("tbody").innerHTML = out.join("");
  }

  async function load() {
    drawChips();
    document.getElementById("compare-empty").hidden = picked.length > 0;
    document.getElementById("compare-body").hidden = picked.length === 0;
    if (!picked.length) { say(""); return; }
    try {
      const data = await S.getJSON(`/api/compare?runs=${picked.map(encodeURIComponent).join(",")}`);
      runs = data.runs;
      drawChips();
      say(data.missing.length ? `No such run: ${data.missing.join(", ")}` : "");
      drawCharts(data.charts);
      drawTable(data);
    } catch (err) {
      say(err.message);
    }
  }

  function add(id) {
    search.value = "";
    found.hidden = true;
    if (picked.includes(id)) return;
    if (picked.length >= max) { say(`Compare at most ${max} runs at once: remove one first.`); return; }
    setPicked([...picked, id]);
  }

  function drawFound(list) {
    shown = list.map((r) => r.run_id);
    active = shown.length ? 0 : -1;
    found.innerHTML = list.length
      ? list.map((r, i) => `<li data-run="${S.escape(r.run_id)}" class="${i === 0 ? "active" : ""}"><span class="id">${S.escape(r.run_id)}</span><span class="state ${S.escape(r.state)}">${S.escape(r.state)}</span><span class="muted">${S.escape(r.experiment)}</span></li>`).join("")
      : `<li class="none">No run matches.</li>`;
    found.hidden = false;
  }

  let timer = null;
  search.addEventListener("input", () => {
    clearTimeout(timer);
    const q = search.value.trim();
    if (!q) { found.hidden = true; return; }
    timer = setTimeout(async () => {
      try {
        drawFound((await S.getJSON(`/api/compare/find?q=${encodeURIComponent(q)}`)).runs);
      } catch (err) {
        say(err.message);
      }
    }, 200);
  });
  search.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") {
      ev.preventDefault();
      if (active >= 0 && !found.hidden) add(shown[active]);
      else if (search.value.trim()) add(search.value.trim());
    } else if (ev.key === "Escape") {
      found.hidden = true;
    } else if ((ev.key === "ArrowDown" || ev.key === "ArrowUp") && shown.length) {
      ev.preventDefault();
      active = (active + (ev.key === "ArrowDown" ? 1 : shown.length - 1)) % shown.length;
      found.querySelectorAll("li").forEach((li, i) => li.classList.toggle("active", i === active));
    }
  });
  found.addEventListener("click", (ev) => {
    const li = ev.target.closest("li[data-run]");
    if (li) add(li.dataset.run);
  });
  document.addEventListener("click", (ev) => {
    if (!ev.target.closest(".search")) found.hidden = true;
  });
  document.getElementById("compare-picked").addEventListener("click", (ev) => {
    const chip = ev.target.closest("button") && ev.target.closest(".chip");
    if (chip) setPicked(picked.filter((id) => id !== chip.dataset.run));
  });
  document.getElementById("compare-only-diff").addEventListener("change", (ev) => {
    table.classList.toggle("only-diff", ev.target.checked);
  });

  if (picked.length > max) say(`Compare at most ${max} runs at once: remove some from the list.`);
  load();
})();
