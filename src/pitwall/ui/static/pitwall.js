/* pitwall UI: charts (uPlot), PromQL completion, query history, time picker, keyboard, waterfall, live tail.
   Pages are server-rendered; this file only adds behaviour. No globals besides `pitwall`. */
(function () {
  "use strict";

  const PALETTE = ["#4c8bf5", "#e8590c", "#2f9e44", "#ae3ec9", "#f08c00", "#0c8599", "#e03131", "#5c7cfa",
    "#66a80f", "#d6336c", "#1098ad", "#a61e4d", "#364fc7", "#087f5b", "#c2255c", "#5f3dc4"];
  /* log levels as Grafana colours them in the logs volume */
  const LEVEL_COLOURS = { critical: "#705da0", error: "#e02f44", warn: "#ff9900", info: "#56a64b", debug: "#3274d9",
    trace: "#6ed0e0", unknown: "#8e8e8e" };
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));
  const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

  function fmt(v) {
    if (v == null || Number.isNaN(v)) return "—";
    const a = Math.abs(v);
    if (a === 0) return "0";
    if (a >= 1e9) return (v / 1e9).toPrecision(3) + "G";
    if (a >= 1e6) return (v / 1e6).toPrecision(3) + "M";
    if (a >= 1e3) return (v / 1e3).toPrecision(3) + "k";
    if (a < 1e-3) return v.toExponential(2);
    return String(+v.toPrecision(4));
  }

  /* ---------------------------------------------------------------- one time format: 24-hour, zone shown */
  const useUTC = () => localStorage.getItem("pw-tz") === "utc";
  const pad = (n, w) => String(n).padStart(w || 2, "0");
  function zoneName() {
    if (useUTC()) return "UTC";
    const off = -new Date().getTimezoneOffset();
    return off === 0 ? "UTC" : "UTC" + (off > 0 ? "+" : "-") + pad(Math.floor(Math.abs(off) / 60)) + ":" + pad(Math.abs(off) % 60);
  }
  /* parts of a time in the chosen zone: [year, month, day, hour, minute, second, ms] */
  function parts(ms) {
    const d = new Date(ms);
    return useUTC()
      ? [d.getUTCFullYear(), d.getUTCMonth() + 1, d.getUTCDate(), d.getUTCHours(), d.getUTCMinutes(), d.getUTCSeconds(), d.getUTCMilliseconds()]
      : [d.getFullYear(), d.getMonth() + 1, d.getDate(), d.getHours(), d.getMinutes(), d.getSeconds(), d.getMilliseconds()];
  }
  /* "2024-05-01 13:04:05" (+ ".123" when withMs) in the chosen zone */
  function fmtTime(ms, withMs) {
    const [y, mo, d, h, mi, s, frac] = parts(ms);
    return `${y}-${pad(mo)}-${pad(d)} ${pad(h)}:${pad(mi)}:${pad(s)}` + (withMs ? "." + pad(frac, 3) : "");
  }
  /* axis labels for ticks `step` seconds apart: the date only where a tick starts a new day */
  function axisTimes(u, splits, ax, space, step) {
    let lastDay = "";
    return splits.map((t) => {
      const [y, mo, d, h, mi, s] = parts(t * 1000);
      const day = `${pad(mo)}-${pad(d)}`;
      let txt = step < 60 ? `${pad(h)}:${pad(mi)}:${pad(s)}` : `${pad(h)}:${pad(mi)}`;
      if (step >= 86400) txt = `${y}-${day}`;
      else if (day !== lastDay && lastDay !== "") txt = `${day} ${txt}`;
      lastDay = day;
      return txt;
    });
  }
  /* server-rendered <time data-ms> elements follow the chosen zone */
  function applyZone(root) {
    $$("time[data-ms]", root).forEach((el) => {
      el.textContent = fmtTime(+el.dataset.ms, el.dataset.precision === "ms") + (el.dataset.bare ? "" : " " + zoneName());
    });
    $$("[data-zone-name]", root).forEach((el) => { el.textContent = zoneName(); });
  }
  function setupZone() {
    const btn = $("[data-tz-toggle]");
    applyZone(document);
    if (!btn) return;
    btn.addEventListener("click", () => {
      localStorage.setItem("pw-tz", useUTC() ? "local" : "utc");
      applyZone(document);
      btn.setAttribute("aria-pressed", useUTC() ? "true" : "false");
      $$(".pw-chart[data-rendered]").forEach((el) => { if (el._pwData) renderChart(el, el._pwData); else if (el.dataset.kind === "scatter") renderScatter(el); });
    });
    btn.setAttribute("aria-pressed", useUTC() ? "true" : "false");
  }

  /* ---------------------------------------------------------------- theme */
  function setupTheme() {
    const btn = $("[data-theme-toggle]");
    if (!btn) return;
    btn.addEventListener("click", () => {
      const cur = document.documentElement.dataset.theme;
      const dark = cur === "dark" || (cur === "auto" && matchMedia("(prefers-color-scheme: dark)").matches);
      const next = dark ? "light" : "dark";
      document.documentElement.dataset.theme = next;
      localStorage.setItem("pw-theme", next);
      $$(".pw-chart[data-rendered]").forEach((el) => { if (el._pwData) renderChart(el, el._pwData); });
    });
  }

  /* ---------------------------------------------------------------- time picker and auto-submit */
  function setupTimePicker() {
    $$("[data-quick]").forEach((sel) => sel.addEventListener("change", () => {
      if (!sel.value) return;
      const form = sel.form;
      form.elements.from.value = "now-" + sel.value;
      form.elements.to.value = "now";
      sel.disabled = true; /* keep "quick" out of the URL */
      form.submit();
    }));
    $$("[data-autosubmit]").forEach((sel) => sel.addEventListener("change", () => {
      const q = sel.form.querySelector("[data-quick]");
      if (q) q.disabled = true;
      sel.form.submit();
    }));
    $$("form.timepicker").forEach((f) => f.addEventListener("submit", () => {
      const q = f.querySelector("[data-quick]");
      if (q) q.disabled = true;
    }));
  }

  /* ---------------------------------------------------------------- a chosen file into a text box */
  function setupFileInputs() {
    $$("[data-json-file]").forEach((input) => input.addEventListener("change", () => {
      const file = input.files && input.files[0];
      const target = $(input.dataset.jsonFile);
      if (!file || !target) return;
      file.text().then((text) => { target.value = text; });
    }));
  }

  /* ---------------------------------------------------------------- charts */
  function showChartError(el, err) {
    const sel = el.dataset.errorTarget;
    const target = sel ? $(sel) : null;
    const msg = (err && err.message) || "query failed";
    if (target) {
      target.hidden = false;
      target.textContent = "";
      const kind = document.createElement("span");
      kind.className = "kind";
      kind.textContent = (err.kind || "error") + " ";
      target.append(kind, msg);
      if (err.line && err.col) {
        target.dataset.line = err.line; target.dataset.col = err.col; target.dataset.for = el.dataset.editor || "";
        addCaret(target);
      }
      el.innerHTML = "";
    } else {
      el.innerHTML = "";
      const p = document.createElement("p");
      p.className = "errtext"; p.textContent = msg;
      el.append(p);
    }
    el.dataset.rendered = "error";
  }

  function renderChart(el, data) {
    el._pwData = data;
    el.innerHTML = "";
    const n = data.series.length;
    el.dataset.seriesCount = String(n);
    if (!n) {
      const p = document.createElement("p");
      p.className = "chart-msg"; p.textContent = "No data in this range.";
      el.append(p);
      el.dataset.rendered = "empty";
      return;
    }
    const stacked = el.dataset.stacked === "1";
    const bars = el.dataset.kind === "bars";
    const raw = data.series.map((s) => s.values);
    let ys = raw;
    if (stacked) {
      const acc = new Array(data.x.length).fill(0);
      ys = raw.map((vals) => vals.map((v, i) => (acc[i] += v == null ? 0 : v)));
    }
    const fg = css("--fg"), grid = css("--line");
    const width = Math.max(el.clientWidth || 600, 200);
    const height = +el.dataset.height || (el.classList.contains("big") ? 300 : 180);
    const series = [{ value: (u, v) => (v == null ? "—" : fmtTime(v * 1000) + " " + zoneName()) }];
    const table = el.classList.contains("big") || el.dataset.legend === "table";
    let cursorCells = [];
    const byLevel = el.dataset.colourBy === "level";
    const colours = data.series.map((s, i) => (byLevel && LEVEL_COLOURS[s.name]) || PALETTE[i % PALETTE.length]);
    el._pwColours = colours;
    data.series.forEach((s, i) => {
      const colour = colours[i];
      const cfg = {
        label: s.name, stroke: colour, width: 1.5, points: { show: false },
        value: (u, v, si, idx) => (idx == null ? "—" : fmt(raw[si - 1][idx])),
      };
      if (stacked) cfg.fill = colour + "55";
      if (bars) { cfg.paths = uPlot.paths.bars({ size: [0.8, 40] }); cfg.fill = colour + "aa"; }
      series.push(cfg);
    });
    const bands = [];
    if (stacked) for (let i = n; i > 1; i--) bands.push({ series: [i, i - 1], fill: colours[i - 1] + (bars ? "aa" : "55") });
    if (stacked && !bars) series.forEach((s, i) => { if (i > 1) delete s.fill; });
    const opts = {
      width, height, series, bands,
      scales: { x: { time: true } },
      legend: { live: true, show: !table && n <= 60 },
      axes: [
        { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid }, values: axisTimes },
        { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid }, size: 56, values: (u, vals) => vals.map(fmt) },
      ],
      cursor: { focus: { prox: 16 } },
      focus: { alpha: 0.35 },
      hooks: { setCursor: [(u) => {
        const idx = u.cursor.idx;
        cursorCells.forEach((td, i) => { td.textContent = idx == null ? "—" : fmt(raw[i][idx]); });
        const th = el.querySelector("[data-cursor-time]");
        if (th) th.textContent = idx == null ? "At cursor" : fmtTime(data.x[idx] * 1000);
      }] },
    };
    el._plot = new uPlot(opts, [data.x, ...ys], el);
    if (table) cursorCells = legendTable(el, el._plot, data, raw);
    el.dataset.rendered = "1";
  }

  /* min/max/mean/last of one series' points, gaps skipped */
  function seriesStats(vals) {
    let min = Infinity, max = -Infinity, sum = 0, n = 0, last = null;
    for (const v of vals) {
      if (v == null) continue;
      if (v < min) min = v;
      if (v > max) max = v;
      sum += v; n++; last = v;
    }
    return n ? [min, max, sum / n, last] : [null, null, null, null];
  }

  /* Grafana's table legend: one row per series with its statistics; click shows only that series (again:
     all), Ctrl/Cmd-click toggles it. Returns the "at cursor" cells the plot's cursor hook fills. */
  function legendTable(el, plot, data, raw) {
    const wrap = document.createElement("div");
    wrap.className = "legend-wrap";
    const t = document.createElement("table");
    t.className = "data legend-table";
    t.dataset.testid = "legend";
    t.innerHTML = "<thead><tr><th>Series</th><th class='num'>Min</th><th class='num'>Max</th><th class='num'>Mean</th>" +
      "<th class='num'>Last</th><th class='num' data-cursor-time>At cursor</th></tr></thead>";
    const body = document.createElement("tbody");
    const cells = [];
    data.series.forEach((s, i) => {
      const tr = document.createElement("tr");
      tr.tabIndex = 0;
      tr.title = "Click: only this series (again: all) · Ctrl/⌘-click: toggle it";
      const name = document.createElement("td");
      name.className = "mono";
      const sw = document.createElement("span");
      sw.className = "sw";
      sw.style.background = el._pwColours[i];
      name.append(sw, document.createTextNode(" " + s.name));
      tr.append(name);
      [...seriesStats(raw[i]), null].forEach((v) => {
        const td = document.createElement("td");
        td.className = "num mono";
        td.textContent = fmt(v);
        tr.append(td);
      });
      cells.push(tr.lastChild);
      const pick = (e) => toggleSeries(plot, body, i + 1, e.ctrlKey || e.metaKey);
      tr.addEventListener("click", pick);
      tr.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); pick(e); } });
      body.append(tr);
    });
    t.append(body);
    wrap.append(t);
    el.append(wrap);
    return cells;
  }

  function toggleSeries(plot, body, idx, additive) {
    const n = plot.series.length - 1;
    if (additive) plot.setSeries(idx, { show: !plot.series[idx].show });
    else {
      const alone = plot.series.every((s, i) => i === 0 || (i === idx) === s.show);
      for (let i = 1; i <= n; i++) plot.setSeries(i, { show: alone || i === idx });
    }
    Array.from(body.children).forEach((tr, i) => tr.classList.toggle("off", !plot.series[i + 1].show));
  }

  function renderScatter(el) {
    const pts = el._pwPoints || JSON.parse(el.dataset.points || "[]");
    el.innerHTML = "";
    if (!pts.length) {
      const p = document.createElement("p");
      p.className = "chart-msg"; p.textContent = "No traces in this range.";
      el.append(p);
      el.dataset.seriesCount = "0";
      el.dataset.rendered = "empty";
      return;
    }
    const x = pts.map((p) => p.t);
    const ok = pts.map((p) => (p.e ? null : p.d));
    const bad = pts.map((p) => (p.e ? p.d : null));
    const fg = css("--fg"), grid = css("--line");
    const mk = (label, colour) => ({
      label, stroke: colour, fill: colour, paths: () => null, points: { show: true, size: 7, fill: colour },
      value: (u, v) => (v == null ? "—" : fmt(v) + " ms"),
    });
    const opts = {
      width: Math.max(el.clientWidth || 600, 200), height: +el.dataset.height || 220,
      series: [{ value: (u, v) => (v == null ? "—" : fmtTime(v * 1000) + " " + zoneName()) },
        mk("ok", css("--bar") || "#4c8bf5"), mk("error", css("--err") || "#cf222e")],
      scales: { x: { time: true } },
      axes: [{ stroke: fg, grid: { stroke: grid }, values: axisTimes }, { stroke: fg, grid: { stroke: grid }, size: 60, label: "ms", values: (u, v) => v.map(fmt) }],
      cursor: { points: { size: 10 } },
    };
    const plot = new uPlot(opts, [x, ok, bad], el);
    plot.over.style.cursor = "pointer";
    plot.over.addEventListener("click", () => {
      const idx = plot.cursor.idx;
      if (idx != null && pts[idx]) location.href = el.dataset.link.replace("{id}", pts[idx].id);
    });
    el.dataset.seriesCount = String(pts.length);
    if (el.dataset.capped) {
      const p = document.createElement("p");
      p.className = "muted"; p.dataset.testid = "scatter-sampled";
      p.textContent = `More traces match than the ${pts.length} drawn: the newest of each tenth of the range.`;
      el.append(p);
    }
    el.dataset.rendered = "1";
  }

  async function loadScatter(el) {
    if (!el.dataset.src) { renderScatter(el); return; }
    try {
      const resp = await fetch(el.dataset.src, { headers: { Accept: "application/json" } });
      const body = await resp.json();
      if (!resp.ok || body.error) { showChartError(el, body.error || { message: resp.statusText }); return; }
      el._pwPoints = body.points;
      el.dataset.capped = body.capped ? "1" : "";
      renderScatter(el);
    } catch (e) {
      showChartError(el, { message: String(e) });
    }
  }

  async function loadChart(el) {
    if (el.dataset.kind === "scatter") { await loadScatter(el); return; }
    const src = el.dataset.src;
    if (!src) return;
    const width = Math.max(el.clientWidth || 600, 200);
    const points = Math.max(20, Math.round(width / (el.dataset.kind === "bars" ? 8 : 2)));
    el.setAttribute("aria-busy", "true");
    try {
      const resp = await fetch(src + (src.includes("?") ? "&" : "?") + "points=" + points, { headers: { Accept: "application/json" } });
      const body = await resp.json();
      if (!resp.ok || body.error) showChartError(el, body.error || { message: resp.statusText });
      else { renderChart(el, body); fillInspector(el, body); }
    } catch (e) {
      showChartError(el, { message: String(e) });
    } finally {
      el.removeAttribute("aria-busy");
    }
  }

  /* the explorer's query inspector: what each query cost and returned, and the API request behind it */
  function fillInspector(el, body) {
    const box = el.dataset.inspect ? $(el.dataset.inspect + " [data-inspect-body]") : null;
    if (!box || !body.inspect) return;
    const t = document.createElement("table");
    t.className = "data";
    t.innerHTML = "<thead><tr><th>Query</th><th class='num'>Time (ms)</th><th class='num'>Series</th>" +
      "<th class='num'>Points</th><th class='num' title='samples read from storage'>Samples read</th>" +
      "<th class='num'>Step (s)</th><th>Request</th></tr></thead>";
    const tb = document.createElement("tbody");
    body.inspect.forEach((q) => {
      const tr = document.createElement("tr");
      const api = "/api/v1/query_range?" + new URLSearchParams({ query: q.expr, start: q.start, end: q.end, step: q.step });
      const samples = q.samples == null ? "—" : String(q.samples);
      [q.expr, fmt(q.ms), String(q.series), String(q.points), samples, fmt(q.step)].forEach((v, i) => {
        const td = document.createElement("td");
        td.className = i ? "num mono" : "mono";
        td.textContent = v;
        tr.append(td);
      });
      const td = document.createElement("td");
      const a = document.createElement("a");
      a.href = api; a.textContent = "JSON"; a.title = api;
      td.append(a);
      tr.append(td);
      tb.append(tr);
    });
    t.append(tb);
    box.replaceChildren(t);
  }

  /* dashboards: the grid editor. Panels move within their row (drag, or the arrows) and take 1-12 of the row's
     columns and 3-60 grid rows of height; "Save layout" posts the arrangement for the server to write. */
  function setupArrange() {
    const btn = $("[data-arrange]"), form = $("[data-arrange-form]");
    if (!btn || !form) return;
    const rows = $$(".panels[data-row]");
    const width = (p) => +p.dataset.width || Math.max(1, Math.round(12 / p.parentElement.children.length));
    const paint = (p) => {
      p.style.gridColumn = "span " + width(p);
      const h = +p.dataset.height || 8;
      p.querySelector(".arrange-size").textContent = `${width(p)}/12 × ${h}`;
      p.style.minHeight = h * 30 + "px";
    };
    const tools = (p) => {
      const bar = document.createElement("div");
      bar.className = "arrange-tools";
      const mk = (label, title, fn) => {
        const b = document.createElement("button");
        b.type = "button"; b.textContent = label; b.title = title; b.setAttribute("aria-label", title + ": " + p.dataset.title);
        b.addEventListener("click", () => { fn(); paint(p); });
        bar.append(b);
      };
      mk("←", "Move left", () => { if (p.previousElementSibling) p.parentElement.insertBefore(p, p.previousElementSibling); });
      mk("→", "Move right", () => { if (p.nextElementSibling) p.parentElement.insertBefore(p.nextElementSibling, p); });
      mk("−", "Narrower", () => { p.dataset.width = String(Math.max(1, width(p) - 1)); });
      mk("+", "Wider", () => { p.dataset.width = String(Math.min(12, width(p) + 1)); });
      mk("↑", "Shorter", () => { p.dataset.height = String(Math.max(3, (+p.dataset.height || 8) - 1)); });
      mk("↓", "Taller", () => { p.dataset.height = String(Math.min(60, (+p.dataset.height || 8) + 1)); });
      const size = document.createElement("span");
      size.className = "arrange-size";
      bar.append(size);
      p.prepend(bar);
    };
    let dragged = null;
    btn.addEventListener("click", () => {
      const on = btn.getAttribute("aria-pressed") !== "true";
      if (!on) { location.reload(); return; }
      btn.setAttribute("aria-pressed", "true");
      form.hidden = false;
      document.body.classList.add("arranging");
      rows.forEach((row) => {
        row.classList.add("grid12");
        Array.from(row.children).forEach((p) => {
          tools(p); paint(p);
          p.draggable = true;
          p.addEventListener("dragstart", (e) => { dragged = p; e.dataTransfer.effectAllowed = "move"; });
          p.addEventListener("dragover", (e) => { if (dragged && dragged.parentElement === p.parentElement) e.preventDefault(); });
          p.addEventListener("drop", (e) => {
            e.preventDefault();
            if (!dragged || dragged === p || dragged.parentElement !== p.parentElement) return;
            const after = e.offsetX > p.clientWidth / 2;
            p.parentElement.insertBefore(dragged, after ? p.nextElementSibling : p);
          });
        });
      });
    });
    form.addEventListener("submit", () => {
      form.elements.layout.value = JSON.stringify(rows.map((row) => Array.from(row.children).map((p) => ({
        panel: +p.dataset.index, width: width(p), height: +p.dataset.height || null }))));
    });
  }

  /* service map: hovering a service lights its calls and callers, dims the rest */
  function setupServiceMap() {
    const svg = $("svg[data-map]");
    if (!svg) return;
    const light = (name) => {
      svg.classList.toggle("focus", !!name);
      $$("[data-from]", svg).forEach((e) => e.classList.toggle("hot", !!name && (e.dataset.from === name || e.dataset.to === name)));
      const near = new Set([name]);
      $$("[data-from].hot", svg).forEach((e) => { near.add(e.dataset.from); near.add(e.dataset.to); });
      $$("[data-node]", svg).forEach((n) => n.classList.toggle("hot", !!name && near.has(n.dataset.node)));
    };
    $$("[data-node]", svg).forEach((n) => {
      n.addEventListener("mouseenter", () => light(n.dataset.node));
      n.addEventListener("focus", () => light(n.dataset.node));
      n.addEventListener("mouseleave", () => light(""));
      n.addEventListener("blur", () => light(""));
    });
  }

  /* trace search: another tag filter (all must match, as Jaeger's tags) */
  function setupTagFilters() {
    const add = $("[data-add-tag]"), box = $("[data-tag-filters]");
    if (!add || !box) return;
    add.addEventListener("click", () => {
      const n = box.querySelectorAll("input[name=attr]").length + 1;
      const label = document.createElement("label");
      label.innerHTML = `Tag <input name="attr" size="20" placeholder="error=true" aria-label="Tag filter ${n}">`;
      box.insertBefore(label, add);
      label.querySelector("input").focus();
    });
  }

  /* more than one query in the explorer's chart */
  function setupQueries() {
    const add = $("[data-add-query]"), holder = $("[data-more-queries]");
    if (!add || !holder) return;
    add.addEventListener("click", () => {
      const n = holder.children.length + 2;
      const wrap = document.createElement("div");
      wrap.className = "editor-wrap more-query";
      wrap.innerHTML = `<label class="sr" for="expr-${n}">Query ${n}</label>` +
        `<textarea id="expr-${n}" name="expr" rows="1" spellcheck="false" autocomplete="off" data-complete="promql"></textarea>` +
        `<ul class="completions" role="listbox" hidden></ul>` +
        `<button type="button" class="remove-query" data-remove-query aria-label="Remove query ${n}">×</button>`;
      holder.append(wrap);
      setupCompletion(wrap);
      wrap.querySelector("textarea").focus();
    });
    holder.addEventListener("click", (e) => {
      const b = e.target.closest("[data-remove-query]");
      if (b) b.parentElement.remove();
    });
  }

  function mountCharts(root) {
    if (typeof uPlot === "undefined") return;
    $$(".pw-chart", root).forEach((el) => { if (!el.dataset.mounted) { el.dataset.mounted = "1"; loadChart(el); } });
  }

  /* ---------------------------------------------------------------- errors with positions */
  function addCaret(box) {
    const line = +box.dataset.line, col = +box.dataset.col;
    const editor = box.dataset.for ? document.getElementById(box.dataset.for) : null;
    if (!line || !col || !editor) return;
    const text = editor.value.split("\n")[line - 1] || "";
    $$(".caret", box).forEach((c) => c.remove());
    const caret = document.createElement("span");
    caret.className = "caret";
    caret.textContent = text + "\n" + " ".repeat(Math.max(col - 1, 0)) + "^";
    box.append(caret);
    box.style.cursor = "pointer";
    box.title = "Click to put the cursor at the error";
    box.onclick = () => {
      const lines = editor.value.split("\n");
      let off = 0;
      for (let i = 0; i < line - 1; i++) off += lines[i].length + 1;
      off += col - 1;
      editor.focus();
      editor.setSelectionRange(off, off);
    };
  }

  /* ---------------------------------------------------------------- query history */
  function historyKey(k) { return "pw-history-" + k; }
  function readHistory(k) { try { return JSON.parse(localStorage.getItem(historyKey(k)) || "[]"); } catch (e) { return []; } }
  function setupHistory() {
    $$("form[data-history]").forEach((form) => {
      const key = form.dataset.history;
      const ta = form.querySelector("textarea");
      form.addEventListener("submit", () => {
        const v = ta.value.trim();
        if (!v) return;
        const h = [v, ...readHistory(key).filter((x) => x !== v)].slice(0, 30);
        localStorage.setItem(historyKey(key), JSON.stringify(h));
      });
      const list = $(`[data-history-list="${key}"]`);
      if (!list) return;
      const items = readHistory(key);
      if (!items.length) { list.innerHTML = '<li class="muted">No queries yet.</li>'; return; }
      items.forEach((q) => {
        const li = document.createElement("li");
        const b = document.createElement("button");
        b.type = "button"; b.textContent = q;
        b.addEventListener("click", () => { ta.value = q; form.requestSubmit(); });
        li.append(b); list.append(li);
      });
    });
  }

  /* ---------------------------------------------------------------- PromQL completion */
  function completionContext(before) {
    const open = before.lastIndexOf("{"), close = before.lastIndexOf("}");
    if (open > close) {
      const inside = before.slice(open + 1);
      const metric = (before.slice(0, open).match(/([a-zA-Z_:][\w:]*)\s*$/) || [])[1] || "";
      const val = inside.match(/([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"([^"]*)$/);
      if (val) return { kind: "value", label: val[1], prefix: val[3], metric };
      const nm = inside.match(/(?:^|[,{\s])([a-zA-Z_]\w*)?$/);
      if (nm) return { kind: "label", prefix: nm[1] || "", metric };
      return null;
    }
    const word = before.match(/([a-zA-Z_:][\w:]*)$/);
    if (word) {
      if (/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*$/.test(before)) return { kind: "label", prefix: word[1], metric: "" };
      return { kind: "metric", prefix: word[1] };
    }
    return null;
  }

  function setupCompletion(root) {
    $$("textarea[data-complete]", root).forEach((ta) => {
      if (ta.dataset.completing) return;
      ta.dataset.completing = "1";
      const list = ta.parentElement.querySelector(".completions");
      let items = [], sel = -1, ctx = null, timer = 0, seq = 0;
      const form = ta.form;
      const close = () => { list.hidden = true; items = []; sel = -1; };
      const paint = () => {
        list.innerHTML = "";
        items.forEach((it, i) => {
          const li = document.createElement("li");
          li.textContent = it; li.setAttribute("role", "option");
          li.setAttribute("aria-selected", i === sel ? "true" : "false");
          li.addEventListener("mousedown", (e) => { e.preventDefault(); sel = i; accept(); });
          list.append(li);
        });
        list.hidden = items.length === 0;
        const cur = list.children[sel];
        if (cur) cur.scrollIntoView({ block: "nearest" });
      };
      const accept = () => {
        if (sel < 0 || !ctx) return;
        const pos = ta.selectionStart;
        const start = pos - ctx.prefix.length;
        let ins = items[sel];
        if (ctx.kind === "label") ins += '="';
        if (ctx.kind === "value") ins += '"';
        ta.setRangeText(ins, start, pos, "end");
        close();
        ta.dispatchEvent(new Event("input"));
      };
      const query = async () => {
        const before = ta.value.slice(0, ta.selectionStart);
        ctx = completionContext(before);
        if (!ctx || (ctx.kind === "metric" && ctx.prefix.length < 1)) { close(); return; }
        const f = form.elements;
        const params = new URLSearchParams({ kind: ctx.kind, prefix: ctx.prefix, from: f.from.value, to: f.to.value });
        if (ctx.metric) params.set("metric", ctx.metric);
        if (ctx.label) params.set("label", ctx.label);
        const my = ++seq;
        try {
          const r = await fetch("/ui/api/complete?" + params);
          const body = await r.json();
          if (my !== seq) return;
          items = (body.items || []).filter((x) => x !== ctx.prefix || ctx.kind === "value");
          sel = items.length ? 0 : -1;
          paint();
        } catch (e) { close(); }
      };
      ta.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(query, 120); });
      ta.addEventListener("blur", () => setTimeout(close, 150));
      ta.addEventListener("keydown", (e) => {
        if (!list.hidden && items.length) {
          if (e.key === "ArrowDown") { sel = (sel + 1) % items.length; paint(); e.preventDefault(); return; }
          if (e.key === "ArrowUp") { sel = (sel - 1 + items.length) % items.length; paint(); e.preventDefault(); return; }
          if ((e.key === "Enter" && !e.ctrlKey && !e.metaKey) || e.key === "Tab") { accept(); e.preventDefault(); return; }
          if (e.key === "Escape") { close(); e.preventDefault(); return; }
        }
        if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); form.requestSubmit(); }
      });
    });
  }

  /* ---------------------------------------------------------------- keyboard */
  function setupKeyboard() {
    let pendingG = 0;
    document.addEventListener("keydown", (e) => {
      const t = e.target;
      const typing = t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable);
      if ((e.ctrlKey || e.metaKey) && e.key === "Enter" && typing && t.form) { e.preventDefault(); t.form.requestSubmit(); return; }
      if (typing || e.ctrlKey || e.metaKey || e.altKey) return;
      if (e.key === "/") {
        const ed = $("main textarea, main form.search select, main form.search input");
        if (ed) { e.preventDefault(); ed.focus(); }
      } else if (e.key === "g") {
        pendingG = Date.now();
      } else if (pendingG && Date.now() - pendingG < 1500) {
        pendingG = 0;
        const a = $(`nav a[data-key="${e.key}"]`);
        if (a) { e.preventDefault(); location.href = a.href; }
      }
    });
  }

  /* ---------------------------------------------------------------- waterfall */
  function setupWaterfall() {
    const wf = $(".waterfall");
    if (!wf) return;
    const rows = $$(".span-row", wf);
    const byParent = new Map();
    rows.forEach((r) => {
      const p = r.dataset.parent;
      if (p !== "") { if (!byParent.has(p)) byParent.set(p, []); byParent.get(p).push(r); }
    });
    const setHidden = (idx, hidden) => {
      (byParent.get(idx) || []).forEach((child) => {
        child.hidden = hidden;
        const det = $(`.span-details[data-for="${child.dataset.index}"]`, wf);
        if (det && hidden) det.hidden = true;
        if (hidden || child.getAttribute("aria-expanded") !== "false") setHidden(child.dataset.index, hidden);
      });
    };
    wf.addEventListener("click", (e) => {
      const tw = e.target.closest("[data-collapse]");
      if (tw) {
        const row = tw.closest(".span-row");
        const expanded = row.getAttribute("aria-expanded") !== "false";
        row.setAttribute("aria-expanded", expanded ? "false" : "true");
        tw.textContent = expanded ? "▸" : "▾";
        tw.setAttribute("aria-label", expanded ? "Expand children" : "Collapse children");
        setHidden(row.dataset.index, expanded);
        return;
      }
      const sb = e.target.closest("[data-span-details]");
      if (sb) {
        const det = document.getElementById(sb.getAttribute("aria-controls"));
        if (det) { det.hidden = !det.hidden; sb.setAttribute("aria-expanded", String(!det.hidden)); }
      }
    });
  }

  /* ---------------------------------------------------------------- logs: label browser, live tail */
  function setupLogs() {
    const ta = $("#logql");
    if (!ta) return;
    document.addEventListener("click", (e) => {
      const b = e.target.closest("[data-insert-label]");
      if (!b) return;
      const pair = `${b.dataset.insertLabel}="${b.dataset.insertValue.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
      const v = ta.value.trim();
      const m = v.match(/^\{([^}]*)\}/);
      if (!m) ta.value = `{${pair}}` + (v ? " " + v : "");
      else if (!m[1].trim()) ta.value = `{${pair}}` + v.slice(m[0].length);
      else ta.value = `{${m[1]}, ${pair}}` + v.slice(m[0].length);
      ta.focus();
    });
    const btn = $("[data-live-tail]");
    if (!btn) return;
    let ws = null;
    btn.addEventListener("click", () => {
      if (ws) { ws.close(); ws = null; btn.setAttribute("aria-pressed", "false"); btn.textContent = "Live tail"; return; }
      const q = ta.value.trim();
      if (!q) { ta.focus(); return; }
      const box = $("#tail"), list = $("[data-tail-list]");
      if (box) box.hidden = false;
      const proto = location.protocol === "https:" ? "wss:" : "ws:";
      ws = new WebSocket(`${proto}//${location.host}/loki/api/v1/tail?` + new URLSearchParams({ query: q, limit: "50" }));
      btn.setAttribute("aria-pressed", "true"); btn.textContent = "Stop tail";
      ws.onmessage = (ev) => {
        let msg; try { msg = JSON.parse(ev.data); } catch (e) { return; }
        (msg.streams || []).forEach((s) => (s.values || []).forEach((v) => {
          const li = document.createElement("li");
          const ts = fmtTime(Number(BigInt(v[0]) / 1000000n), true);
          li.textContent = ts + "  " + v[1];
          if (/\b(error|fatal|critical)\b/i.test(v[1])) li.className = "lv-error";
          else if (/\bwarn(ing)?\b/i.test(v[1])) li.className = "lv-warn";
          if (list) { list.prepend(li); while (list.children.length > 500) list.lastChild.remove(); }
        }));
      };
      ws.onclose = () => { ws = null; btn.setAttribute("aria-pressed", "false"); btn.textContent = "Live tail"; };
    });
  }

  /* ---------------------------------------------------------------- logs: filter by a value, line views */
  const LOGQL_NAME = /[^A-Za-z0-9_]/g;
  const quoteLogQL = (v) => '"' + v.replace(/\\/g, "\\\\").replace(/"/g, '\\"') + '"';

  /* the query with `key op value` added: stream labels go into the selector, structured metadata becomes a
     label filter, parsed fields get their parser first (named as the json/logfmt parsers name them) */
  function withLogFilter(query, key, value, src, out) {
    const q = query.trim();
    const op = out ? "!=" : "=";
    if (src === "label") {
      const m = q.match(/^\{([^}]*)\}/);
      const pair = `${key}${op}${quoteLogQL(value)}`;
      if (!m) return `{${pair}}` + (q ? " " + q : "");
      return `{${m[1].trim() ? m[1].trim() + ", " : ""}${pair}}` + q.slice(m[0].length);
    }
    let name = key, pipeline = q;
    if (src === "json" || src === "logfmt") {
      name = key.replace(LOGQL_NAME, "_");
      if (!new RegExp("\\|\\s*" + src + "\\b").test(q)) pipeline += ` | ${src}`;
    }
    return `${pipeline} | ${name}${op}${quoteLogQL(value)}`;
  }

  function messageOf(line) {
    try {
      const o = JSON.parse(line);
      if (o && typeof o === "object") return String(o.msg ?? o.message ?? o.log ?? line);
    } catch (e) { /* not JSON */ }
    const m = line.match(/(?:^|\s)(?:msg|message)=("(?:[^"\\]|\\.)*"|\S+)/);
    return m ? (m[1].startsWith('"') ? JSON.parse(m[1]) : m[1]) : line;
  }

  function setupLogViews() {
    document.addEventListener("click", (e) => {
      const b = e.target.closest("[data-log-filter]");
      const ta = $("#logql");
      if (!b || !ta) return;
      ta.value = withLogFilter(ta.value, b.dataset.key, b.dataset.value, b.dataset.src, b.dataset.logFilter === "out");
      ta.form.requestSubmit();
    });
    const boxes = $$("[data-line-view]");
    const paint = () => {
      const pretty = boxes.some((c) => c.dataset.lineView === "pretty" && c.checked);
      const message = boxes.some((c) => c.dataset.lineView === "message" && c.checked);
      $$("ol.loglines .line[data-raw]").forEach((el) => {
        const raw = el.dataset.raw;
        let text = message ? messageOf(raw) : raw;
        if (pretty && !message) { try { text = JSON.stringify(JSON.parse(raw), null, 2); } catch (err) { /* keep */ } }
        el.textContent = text;
        el.classList.toggle("pretty", pretty && text !== raw);
      });
    };
    boxes.forEach((c) => {
      c.checked = localStorage.getItem("pw-lines-" + c.dataset.lineView) === "1";
      c.addEventListener("change", () => { localStorage.setItem("pw-lines-" + c.dataset.lineView, c.checked ? "1" : "0"); paint(); });
    });
    if (boxes.length) paint();
  }

  /* ---------------------------------------------------------------- auto-refresh */
  function setupRefresh() {
    const ms = +document.body.dataset.refreshMs;
    if (!ms) return;
    setInterval(async () => {
      const a = document.activeElement;
      if (a && (a.tagName === "TEXTAREA" || a.tagName === "INPUT") || $(".span-details:not([hidden])") || $("details[open] .fields")) return;
      try {
        const r = await fetch(location.href, { headers: { "HX-Request": "refresh" } });
        if (!r.ok) return;
        const doc = new DOMParser().parseFromString(await r.text(), "text/html");
        const fresh = doc.getElementById("main"), main = document.getElementById("main");
        if (!fresh || !main) return;
        main.innerHTML = fresh.innerHTML;
        if (window.htmx) window.htmx.process(main);
        mountCharts(main);
        $$(".qerror[data-line]", main).forEach(addCaret);
      } catch (e) { /* offline for a moment: try again next tick */ }
    }, Math.max(ms, 2000));
  }

  function init() {
    setupTheme();
    setupZone();
    setupTimePicker();
    setupFileInputs();
    setupHistory();
    setupCompletion();
    setupQueries();
    setupTagFilters();
    setupLogViews();
    setupServiceMap();
    setupArrange();
    setupKeyboard();
    setupWaterfall();
    setupLogs();
    setupRefresh();
    $$(".qerror[data-line]").forEach(addCaret);
    mountCharts(document);
    document.body.addEventListener("htmx:afterSwap", (e) => { mountCharts(e.target); applyZone(e.target); });
    /* a collapsed dashboard row drew its charts at a guessed width: redraw them at the real one when opened */
    $$("details.drow").forEach((d) => d.addEventListener("toggle", () => {
      if (d.open) $$(".pw-chart[data-rendered]", d).forEach((el) => { if (el._pwData) renderChart(el, el._pwData); });
    }));
  }

  window.pitwall = { mountCharts, fmt };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
