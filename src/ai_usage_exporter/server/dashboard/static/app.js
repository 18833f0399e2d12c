// The dashboard: polls the sidecar's JSON API and draws it. No build step, no CDN.
"use strict";

(function () {
  const TOKEN_KEY = "ai-usage-exporter.read-token";
  const POLL_MS = 2000;
  // window -> [seconds, timeseries step, step seconds, words]; steps the timeseries API offers.
  const WINDOWS = {
    "15m": [900, "1m", 60, "15 minutes"],
    "1h": [3600, "1m", 60, "hour"],
    "24h": [86400, "1h", 3600, "24 hours"],
    "7d": [7 * 86400, "1h", 3600, "7 days"],
    "30d": [30 * 86400, "1d", 86400, "30 days"],
  };
  // A token kind's label from its field: "cache_write_1h_tokens" -> "cache write 1h".
  // The kinds themselves come from the API's totals, so a kind the server adds shows up.
  const tokenLabel = (field) => field.replace(/_tokens$/, "").replace(/_/g, " ");
  const COLORS = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#db2777",
    "#0891b2", "#65a30d", "#9333ea", "#ea580c", "#64748b"];

  const $ = (id) => document.getElementById(id);
  const authRequired = document.body.dataset.auth === "required";
  let token = sessionStorage.getItem(TOKEN_KEY);
  let windowName = "1h";
  // "instance" (this sidecar's rows) or "fleet" (every sidecar sharing its database).
  // The server's default is "instance", so only the fleet is asked for by name.
  let scope = "instance";
  const scoped = (params) => (scope === "fleet" ? { ...params, scope } : params);
  let timer = null;
  let generation = 0;
  let lastWindow = null; // [from, to, step seconds] of the charts on screen
  const charts = {};

  // ------------------------------------------------------------ numbers

  const intFmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  const compactFmt = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });
  const pctFmt = new Intl.NumberFormat(undefined, { style: "percent", maximumFractionDigits: 2 });
  const usdCents = new Intl.NumberFormat(undefined, { style: "currency", currency: "USD", minimumFractionDigits: 2, maximumFractionDigits: 2 });
  const usdSmall = new Intl.NumberFormat(undefined, { style: "currency", currency: "USD", minimumFractionDigits: 2, maximumFractionDigits: 6 });
  const msFmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });

  // Dollars to the cent from one dollar up; below, to the millionth, so small
  // per-request costs stay readable instead of rounding to $0.00.
  function money(x) {
    if (x === null || x === undefined) return "–";
    const a = Math.abs(x);
    if (a === 0 || a >= 1) return usdCents.format(x);
    if (a < 0.000001) return (x < 0 ? "> -" : "< ") + usdSmall.format(0.000001);
    return usdSmall.format(x);
  }
  const count = (x) => (x === null || x === undefined ? "–" : intFmt.format(x));
  const ms = (x) => (x === null || x === undefined ? "–" : msFmt.format(x) + " ms");
  const pct = (x) => (x === null || x === undefined ? "–" : pctFmt.format(x));

  function ago(seconds) {
    if (seconds === null || seconds === undefined) return "none yet";
    if (seconds < 60) return intFmt.format(Math.floor(seconds)) + " s ago";
    if (seconds < 3600) return intFmt.format(Math.floor(seconds / 60)) + " min ago";
    if (seconds < 86400) return intFmt.format(Math.floor(seconds / 3600)) + " h ago";
    return intFmt.format(Math.floor(seconds / 86400)) + " d ago";
  }

  function duration(seconds) {
    if (seconds < 60) return intFmt.format(Math.floor(seconds)) + " s";
    if (seconds < 3600) return intFmt.format(Math.floor(seconds / 60)) + " min";
    if (seconds < 86400) return intFmt.format(Math.floor(seconds / 3600)) + " h";
    return intFmt.format(Math.floor(seconds / 86400)) + " d";
  }

  function isoSeconds(epoch) {
    return new Date(epoch * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");
  }

  // ------------------------------------------------------------ HTTP

  class SignedOut extends Error {}

  async function api(path) {
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    const r = await fetch(path, { headers, cache: "no-store" });
    if (r.status === 401) throw new SignedOut("the token was not accepted");
    if (!r.ok) {
      let message = r.status + " " + r.statusText;
      try { message = (await r.json()).error.message || message; } catch (_) { /* not JSON */ }
      throw new Error(path.split("?")[0] + ": " + message);
    }
    return r;
  }

  // ------------------------------------------------------------ sign-in

  function showSignIn(message) {
    stop();
    $("content").hidden = true;
    $("signin-panel").hidden = false;
    $("signout").hidden = true;
    $("windows").hidden = true;
    $("scopes").hidden = true;
    $("signin-error").textContent = message || "";
    $("live-text").textContent = "signed out";
    $("live-dot").className = "dot";
    $("token").focus();
  }

  $("signin").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = $("token").value.trim();
    $("token").value = "";
    if (!value) return;
    token = value;
    sessionStorage.setItem(TOKEN_KEY, value);
    start();
  });

  $("signout").addEventListener("click", () => {
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    showSignIn("");
  });

  // ------------------------------------------------------------ DOM helpers

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }

  function setValue(id, text, raw) {
    const e = $(id);
    e.textContent = text;
    if (raw !== undefined) e.dataset.value = String(raw);
  }

  // ------------------------------------------------------------ rendering

  function renderStatus(s) {
    const set = (id, text, ok) => {
      const b = $(id);
      b.querySelector(".v").textContent = text;
      b.classList.toggle("bad", ok === false);
      b.classList.toggle("good", ok === true);
    };
    set("h-process", "up " + duration(s.uptime_seconds), true);
    set("h-ledger", s.ledger.writable ? s.ledger.kind + ", writable" : "not writable: " + (s.ledger.error || s.writer_error), s.ledger.writable);
    set("h-writer", s.writer_error ? "failing: " + s.writer_error : "no errors", !s.writer_error);
    set("h-last", ago(s.seconds_since_last_event), undefined);
    $("h-last").dataset.value = String(s.last_event_at);
    $("version").textContent = "ai-usage-exporter " + s.version;
  }

  function renderTotals(view) {
    const t = view.totals;
    setValue("t-requests", count(t.requests), t.requests);
    setValue("t-requests-sub", "unpriced " + count(t.unpriced_requests), t.unpriced_requests);
    setValue("t-error-rate", pct(t.error_rate), t.error_rate);
    setValue("t-errors", count(t.errors) + (t.errors === 1 ? " error" : " errors"), t.errors);
    setValue("t-tokens", count(t.tokens.total_tokens), t.tokens.total_tokens);
    setValue("t-tokens-sub", "in " + count(t.tokens.input_tokens) + " · out " + count(t.tokens.output_tokens));
    setValue("t-cost", money(t.cost_usd.total), t.cost_usd.total);
    setValue("t-cost-sub", "in " + money(t.cost_usd.input) + " · out " + money(t.cost_usd.output));
    setValue("t-avg-cost", money(t.average_cost_usd), t.average_cost_usd);
    setValue("t-avg-duration", ms(t.average_duration_ms), t.average_duration_ms);
    const types = $("token-types");
    types.replaceChildren();
    for (const [field, n] of Object.entries(t.tokens)) {
      if (field === "total_tokens") continue;
      const chip = el("span", null, "chip");
      chip.dataset.type = field;
      chip.dataset.value = String(n || 0);
      chip.append(el("span", tokenLabel(field), "k"), el("span", count(n || 0), "v"));
      types.append(chip);
    }
    $("empty").hidden = t.requests > 0;
  }

  function table(panelId, rows, columns, emptyText) {
    const tbl = $(panelId).querySelector("table");
    tbl.replaceChildren();
    const head = el("tr");
    for (const c of columns) head.append(el("th", c[0], c[2] ? "num" : ""));
    const thead = el("thead");
    thead.append(head);
    const tbody = el("tbody");
    if (!rows || rows.length === 0) {
      const tr = el("tr");
      const td = el("td", emptyText, "none");
      td.colSpan = columns.length;
      tr.append(td);
      tbody.append(tr);
    } else {
      for (const row of rows) {
        const tr = el("tr");
        for (const c of columns) {
          const td = el("td", c[1](row), c[2] ? "num" : "");
          if (!c[2]) td.title = td.textContent; // names may be cut short with an ellipsis
          tr.append(td);
        }
        tbody.append(tr);
      }
    }
    tbl.append(thead, tbody);
  }

  const label = (v) => (v === "" || v === null || v === undefined ? "(none)" : v);
  const SUMS = [
    ["Requests", (r) => count(r.requests), true],
    ["Error rate", (r) => pct(r.error_rate), true],
    ["Tokens", (r) => count(r.tokens.total_tokens), true],
    ["Cost", (r) => (r.requests && r.unpriced_requests === r.requests ? "unpriced" : money(r.cost_usd.total)), true],
    ["Avg cost", (r) => (r.requests && r.unpriced_requests === r.requests ? "unpriced" : money(r.average_cost_usd)), true],
    ["Avg duration", (r) => ms(r.average_duration_ms), true],
  ];

  function renderBreakdowns(view) {
    const none = "no calls yet";
    table("b-service", view.by_service, [["Service", (r) => label(r.service)], ...SUMS], none);
    table("b-model", view.by_model, [["Model", (r) => label(r.provider) + " / " + label(r.model)], ...SUMS], none);
    table("b-agent", view.by_agent, [["Agent", (r) => label(r.agent)], ...SUMS], none);
    table("b-tool", view.by_tool, [["Tool", (r) => label(r.tool)], ...SUMS], none);
    table("b-tenant", view.by_tenant, [["Tenant", (r) => label(r.tenant)], ...SUMS], none);
    // Only apps whose calls name a node (an agent graph's query-summary line) get the panel.
    const nodes = (view.by_node || []).filter((r) => r.node);
    $("b-node").hidden = nodes.length === 0;
    table("b-node", view.by_node, [["Node", (r) => label(r.node)], ...SUMS], none);
    table("b-key", view.by_key || [], [["Gateway key", (r) => label(r.key)], ...SUMS], none);
    table("b-unpriced", view.unpriced_models,
      // A model may be listed once per reason: unknown_model, or priced only approximately.
      [["Provider", (r) => r.provider], ["Model", (r) => r.model], ["Reason", (r) => (r.reason || "").replace(/_/g, " ")],
        ["Requests", (r) => count(r.requests), true]],
      "every model has a price");
    renderBudgets(view.budgets);
  }

  // Budgets come from the sidecar's config when set; their shape is read generically.
  function renderBudgets(budgets) {
    const panel = $("b-budgets");
    const rows = Array.isArray(budgets) ? budgets
      : budgets && typeof budgets === "object" ? Object.entries(budgets).map(([name, b]) => ({ name, ...(typeof b === "object" ? b : { value: b }) }))
        : [];
    panel.hidden = rows.length === 0;
    if (rows.length === 0) return;
    if (rows.every((r) => "limit" in r && "used" in r && "unit" in r)) {
      const amount = (r, v) => (v === null || v === undefined ? "–" : r.unit === "usd" ? money(v) : count(v) + " " + r.unit);
      table("b-budgets", rows, [
        ["Budget", (r) => r.budget || r.name || "–"],
        ["Applies to", (r) => [r.scope, r.key].filter((x) => x).join(" ") || "all"],
        ["Period", (r) => r.period || "–"],
        ["Used", (r) => amount(r, r.used), true],
        ["Limit", (r) => amount(r, r.limit), true],
        ["Used %", (r) => (r.limit ? pct(r.used / r.limit) : "–"), true],
        ["Remaining", (r) => amount(r, r.remaining), true],
        ["Runs out in", (r) => (r.hours_to_exhaustion === null || r.hours_to_exhaustion === undefined ? "not at this rate" : duration(r.hours_to_exhaustion * 3600)), true],
      ], "");
      return;
    }
    const keys = [...new Set(rows.flatMap((r) => Object.keys(r)))];
    table("b-budgets", rows, keys.map((k) => [k.replace(/_/g, " "), (r) => cell(k, r[k]), typeof rows[0][k] === "number"]), "");
  }

  // What the providers billed against what was recorded, per closed day and provider,
  // from the stored bills (`reconcile:` in the config; the route is absent without it).
  const CAPTURE_EVERY_MS = 60000;
  let captureAt = 0;
  async function refreshCapture() {
    if (Date.now() - captureAt < CAPTURE_EVERY_MS) return;
    captureAt = Date.now();
    const panel = $("b-capture");
    let body;
    try {
      body = await (await api("/api/reports/reconcile?days=30")).json();
    } catch (err) {
      if (err instanceof SignedOut) throw err;
      panel.hidden = true; // not readable now; the next refresh tries again
      captureAt = 0;
      return;
    }
    if (!body.configured) {
      panel.hidden = true; // no `reconcile:` section: no bills are fetched
      return;
    }
    const days = new Map();
    for (const r of body.rows || []) {
      const key = r.day + " " + r.provider;
      const d = days.get(key) || { day: r.day, provider: r.provider, billed: 0, recorded: 0, flags: new Set() };
      d.billed += r.billed_nusd;
      d.recorded += r.recorded_nusd;
      for (const f of r.flags) d.flags.add(f);
      days.set(key, d);
    }
    const rows = [...days.values()].sort((a, b) => (a.day < b.day ? 1 : a.day > b.day ? -1 : a.provider.localeCompare(b.provider)));
    panel.hidden = false;
    $("capture-scope").textContent = Object.entries(body.scope || {}).map(([p, s]) => p + ": " + s).join(" · ");
    table("b-capture", rows, [
      ["Day", (r) => r.day],
      ["Provider", (r) => r.provider],
      ["Billed", (r) => money(r.billed / 1e9), true],
      ["Recorded", (r) => money(r.recorded / 1e9), true],
      ["Captured", (r) => (r.billed ? pct(r.recorded / r.billed) : "–"), true],
      ["Flags", (r) => [...r.flags].map((f) => f.replace(/_/g, " ")).join(", ") || "ok"],
    ], "no bill fetched yet");
  }

  function cell(key, v) {
    if (v === null || v === undefined) return "–";
    if (typeof v === "number") {
      if (/usd|cost|dollar/.test(key)) return money(v);
      if (/_ms$/.test(key)) return ms(v);
      if (/rate|ratio|fraction/.test(key)) return pct(v);
      return Number.isInteger(v) ? count(v) : msFmt.format(v);
    }
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  }

  // ------------------------------------------------------------ exports

  const EXPORTS = ["daily", "services", "models", "agents", "tenants", "keys", "queries"];

  function exportButtons(container, report, range) {
    container.replaceChildren();
    for (const fmt of ["csv", "json"]) {
      const b = el("button", fmt.toUpperCase(), "export");
      b.type = "button";
      b.dataset.report = report;
      b.dataset.format = fmt;
      b.title = "Download the " + report + " report as " + fmt.toUpperCase();
      b.addEventListener("click", () => download(report, fmt, range()));
      container.append(b);
    }
  }

  // `range` is [since, until], or null for all time (the report API's default is 30 days).
  async function download(report, fmt, range) {
    const q = new URLSearchParams(scoped({ format: fmt, limit: "10000" }));
    q.set("since", range ? range[0] : "0");
    if (range) q.set("until", range[1]);
    try {
      const r = await api("/api/reports/" + report + "?" + q.toString());
      const blob = await r.blob();
      const a = document.createElement("a");
      a.href = URL.createObjectURL(blob);
      const span = range ? "-" + range[0].replace(/[:]/g, "") + "-" + range[1].replace(/[:]/g, "") : "-all-time";
      a.download = "ai-usage-" + report + span + "." + fmt;
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    } catch (err) {
      handleError(err);
    }
  }

  // The window widened to whole buckets of the charts' step (whole days for the daily
  // report), so the report API sums the same buckets the charts show: minute buckets
  // are kept for days only, and a daily report needs whole days.
  function exportRange(report) {
    if (!lastWindow) return null;
    const step = report === "daily" ? 86400 : lastWindow[2];
    const since = Math.floor(lastWindow[0] / step) * step;
    const until = Math.ceil(lastWindow[1] / step) * step;
    return [isoSeconds(since), isoSeconds(until)];
  }

  function setupExports() {
    for (const panel of document.querySelectorAll(".table-panel[data-report]")) {
      exportButtons(panel.querySelector(".exports"), panel.dataset.report, () => null);
    }
    const box = $("window-exports");
    box.replaceChildren();
    for (const report of EXPORTS) {
      const group = el("span", null, "export-group");
      group.append(el("span", report, "k"));
      const buttons = el("span");
      exportButtons(buttons, report, () => exportRange(report));
      group.append(buttons);
      box.append(group);
    }
  }

  // ------------------------------------------------------------ charts

  function axisValues(unit) {
    return (u, splits) => splits.map((v) => {
      if (v === null) return "";
      if (unit === "usd") return Math.abs(v) >= 1000 ? "$" + compactFmt.format(v) : money(v);
      if (unit === "ms") return compactFmt.format(v);
      return compactFmt.format(v);
    });
  }

  const UNIT_LABEL = { usd: "USD per step", tokens: "tokens per step", requests: "requests per step", ms: "ms" };

  function drawChart(id, unit, timestamps, series, stepLabel) {
    const fig = $(id);
    const plot = fig.querySelector(".plot");
    const emptyNote = fig.querySelector(".chart-empty");
    let total = 0;
    for (const s of series) for (const v of s.values) if (v !== null) total += v;
    fig.dataset.total = String(total);
    fig.dataset.series = String(series.length);
    fig.dataset.points = String(timestamps.length);
    const hasData = series.length > 0 && series.some((s) => s.values.some((v) => v !== null && v !== 0));
    emptyNote.hidden = hasData;
    if (!hasData) {
      emptyNote.textContent = "No calls in the last " + WINDOWS[windowName][3] + ". Pick a longer window, or post a call.";
    }
    const yLabel = (UNIT_LABEL[unit] || unit).replace("step", stepLabel);
    // uPlot draws axis labels on the canvas; the figure names them for assistive tech.
    fig.dataset.axes = "time (local)|" + yLabel;
    fig.setAttribute("aria-label", fig.querySelector("figcaption").textContent + ", " + yLabel + " over time");
    const width = Math.max(240, plot.clientWidth || 300);
    const height = width < 420 ? 200 : 240;
    const data = [timestamps, ...series.map((s) => s.values.map((v) => (v === undefined ? null : v)))];
    const shape = series.map((s) => s.key).join("|") + "|" + unit + "|" + yLabel;
    const old = charts[id];
    if (old && old.shape === shape) {
      old.u.setData(data);
      return;
    }
    if (old) old.u.destroy();
    const opts = {
      width,
      height,
      legend: { show: true },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
      axes: [
        { label: "time (local)", labelSize: 20, stroke: "#475569", grid: { stroke: "#e2e8f0" } },
        { label: yLabel, labelSize: 20, size: 64, stroke: "#475569", grid: { stroke: "#e2e8f0" }, values: axisValues(unit) },
      ],
      series: [
        { label: "time" },
        ...series.map((s, i) => ({
          label: s.key,
          stroke: s.color || COLORS[i % COLORS.length],
          width: 2,
          fill: s.fill || undefined,
          spanGaps: unit === "ms",
          // A lone busy bucket draws no line; a dot marks every bucket with calls.
          points: { show: true, space: 0, size: 7, fill: s.color || COLORS[i % COLORS.length], filter: busy },
          value: (u, v) => (v === null || v === undefined ? "–" : unit === "usd" ? money(v) : unit === "ms" ? ms(v) : count(v)),
        })),
      ],
    };
    plot.replaceChildren();
    charts[id] = { u: new uPlot(opts, data, plot), shape, plot };
  }

  function busy(u, seriesIdx) {
    const out = [];
    u.data[seriesIdx].forEach((v, i) => { if (v) out.push(i); });
    return out;
  }

  function resizeCharts() {
    for (const c of Object.values(charts)) {
      const width = Math.max(240, c.plot.clientWidth);
      c.u.setSize({ width, height: width < 420 ? 200 : 240 });
    }
  }
  new ResizeObserver(() => window.requestAnimationFrame(resizeCharts)).observe(document.querySelector(".charts"));

  async function series(params) {
    const r = await api("/api/metrics/timeseries?" + new URLSearchParams(scoped(params)).toString());
    return r.json();
  }

  async function refreshCharts(gen) {
    const [span, step] = WINDOWS[windowName];
    const to = Math.ceil(Date.now() / 1000);
    const from = to - span;
    lastWindow = [from, to, WINDOWS[windowName][2]];
    const shown = exportRange("services");
    $("export-range").textContent = shown[0] + " to " + shown[1];
    const base = { step, from: String(from), to: String(to) };
    const [cost, tokens, requests, errors, dur] = await Promise.all([
      series({ ...base, metric: "cost", by: "model" }),
      series({ ...base, metric: "tokens", by: "type" }),
      series({ ...base, metric: "requests" }),
      series({ ...base, metric: "errors" }),
      series({ ...base, metric: "duration", stat: "p95" }),
    ]);
    if (gen !== generation) return; // the window changed meanwhile; its own refresh draws
    const stepLabel = step === "1m" ? "minute" : step === "1h" ? "hour" : "day";
    drawChart("chart-cost", "usd", cost.timestamps, cost.series, stepLabel);
    // Token types with no tokens in the window would only crowd the legend.
    const named = tokens.series.map((s) => ({ ...s, key: tokenLabel((s.labels && s.labels.type) || s.key) }));
    const used = named.filter((s) => s.values.some((v) => v));
    drawChart("chart-tokens", "tokens", tokens.timestamps, used.length ? used : named.slice(0, 2), stepLabel);
    const req = requests.series[0] || { key: "total", values: requests.timestamps.map(() => 0) };
    const err = errors.series[0] || { key: "total", values: errors.timestamps.map(() => 0) };
    drawChart("chart-requests", "requests", requests.timestamps, [
      { key: "requests", values: req.values, color: "#2563eb" },
      { key: "errors", values: err.values, color: "#dc2626" },
    ], stepLabel);
    const d = dur.series[0] || { key: "p95", values: dur.timestamps.map(() => null) };
    drawChart("chart-duration", "ms", dur.timestamps, [{ key: "p95 duration", values: d.values, color: "#7c3aed" }], stepLabel);
  }

  // ------------------------------------------------------------ refresh loop

  function handleError(err) {
    if (err instanceof SignedOut) {
      token = null;
      sessionStorage.removeItem(TOKEN_KEY);
      showSignIn("That token was not accepted. Enter the sidecar's read token.");
      return;
    }
    const box = $("load-error");
    box.hidden = false;
    box.textContent = "Could not refresh: " + err.message;
    $("live-dot").className = "dot bad";
    $("live-text").textContent = "refresh failed, retrying";
  }

  async function refresh(gen) {
    try {
      const [status, view] = await Promise.all([
        api("/api/status").then((r) => r.json()),
        api("/api/metrics?" + new URLSearchParams(scoped({ limit: "20" })).toString()).then((r) => r.json()),
        refreshCharts(gen),
        refreshCapture(),
      ]);
      if (gen !== generation) return;
      renderStatus(status);
      renderTotals(view);
      renderBreakdowns(view);
      $("load-error").hidden = true;
      $("live-dot").className = "dot good";
      $("live-text").textContent = "live · updated " + new Date().toLocaleTimeString();
      document.body.dataset.refreshed = String(Date.now());
    } catch (err) {
      if (gen === generation) handleError(err);
    }
    if (gen === generation && timer !== null) timer = setTimeout(() => refresh(gen), POLL_MS);
  }

  function stop() {
    generation += 1;
    if (timer !== null) clearTimeout(timer);
    timer = null;
  }

  function start() {
    stop();
    $("signin-panel").hidden = true;
    $("content").hidden = false;
    $("windows").hidden = false;
    $("scopes").hidden = false;
    $("signout").hidden = !authRequired;
    timer = 0;
    refresh(generation);
  }

  // Polling a hidden tab only costs the sidecar; catch up when it is shown again.
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) stop();
    else if (!authRequired || token) start();
  });

  for (const b of document.querySelectorAll("#windows button")) {
    b.addEventListener("click", () => {
      windowName = b.dataset.window;
      for (const o of document.querySelectorAll("#windows button")) o.classList.toggle("active", o === b);
      $("window-label").textContent = WINDOWS[windowName][3];
      if (timer !== null || !authRequired || token) start();
    });
  }

  for (const b of document.querySelectorAll("#scopes button")) {
    b.addEventListener("click", () => {
      scope = b.dataset.scope;
      for (const o of document.querySelectorAll("#scopes button")) o.classList.toggle("active", o === b);
      if (timer !== null || !authRequired || token) start();
    });
  }

  function curlExample() {
    const auth = authRequired ? " -H 'authorization: Bearer $WRITE_TOKEN'" : "";
    return "curl -s " + window.location.origin + "/api/usage" + auth + " \\\n" +
      "  -H 'content-type: application/json' -d '{\n" +
      '  "provider": "openai", "model": "gpt-4o-mini", "service": "support-bot",\n' +
      '  "input_tokens": 1000, "output_tokens": 500, "duration_ms": 1840\n' +
      "}'";
  }

  $("curl-example").textContent = curlExample();
  setupExports();
  if (authRequired && !token) showSignIn("");
  else start();
})();
