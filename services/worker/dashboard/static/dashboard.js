// Koverage dashboard. Every value from the server is rendered as text
// (textContent / text nodes), never as HTML: previews are user text.
"use strict";

(function () {
  const state = { session: null, window: "15m", tenant: "", timer: null, view: "" };
  const charts = {};
  window.koverageCharts = charts; // read by the end-to-end tests

  // -- DOM helpers ----------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (name === "class") node.className = value;
      else if (name === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(name, value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  function setText(id, value) { document.getElementById(id).textContent = value; }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function ms(v) { return v === null || v === undefined ? "–" : Number(v).toFixed(1) + " ms"; }
  function pct(v) { return (100 * Number(v || 0)).toFixed(2) + "%"; }
  function usd(v) { return "$" + String(v ?? "0"); }
  function when(iso) { return iso ? new Date(iso).toLocaleString() : "–"; }
  function num(v, digits) { return v === null || v === undefined ? "–" : Number(v).toFixed(digits); }

  async function api(path) {
    const url = new URL(path, location.origin);
    if (state.session && !state.session.auth_required && state.tenant) {
      url.searchParams.set("tenant", state.tenant);
    }
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (response.status === 401) { location.reload(); throw new Error("signed out"); }
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    return body;
  }
  function showError(err) {
    const banner = document.getElementById("error-banner");
    banner.textContent = err ? String(err.message || err) : "";
    banner.hidden = !err;
  }

  // -- charts (uPlot) -------------------------------------------------------
  function drawChart(id, series, data, opts) {
    const target = document.getElementById(id);
    const width = Math.max(300, target.clientWidth || 460);
    if (charts[id]) {
      charts[id].setData(data);
      return;
    }
    const options = Object.assign({
      width: width, height: 200,
      series: [{}].concat(series),
      axes: [{}, { size: 60 }],
      legend: { live: true },
    }, opts || {});
    charts[id] = new uPlot(options, data, target);
  }
  const palette = ["#2358a8", "#e08a00", "#b3261e", "#2f7d4f", "#7b3fb8"];
  function lines(labels) {
    return labels.map((label, i) => ({ label: label, stroke: palette[i % palette.length], width: 2, spanGaps: false }));
  }

  // -- live view ------------------------------------------------------------
  async function renderLive() {
    const data = await api("/api/overview?window=" + encodeURIComponent(state.window));
    const lat = data.latency.latency, ttft = data.latency.time_to_first_token;
    setText("calls-total", String(data.errors.call_count));
    setText("latency-p50", ms(lat.sample_count ? lat.p50_ms : null));
    setText("latency-p95", ms(lat.sample_count ? lat.p95_ms : null));
    setText("latency-p99", ms(lat.sample_count ? lat.p99_ms : null));
    setText("ttft-p50", ms(ttft.sample_count ? ttft.p50_ms : null));
    setText("ttft-p95", ms(ttft.sample_count ? ttft.p95_ms : null));
    setText("ttft-p99", ms(ttft.sample_count ? ttft.p99_ms : null));
    setText("calls-per-s", num(data.throughput.calls_per_second, 4));
    setText("tokens-per-s", num(data.throughput.output_tokens_per_second, 3));
    setText("error-rate", pct(data.errors.error_rate));
    setText("error-count", data.errors.error_count + " errors");
    setText("refusal-rate", pct(data.errors.refusal_rate));
    setText("refusal-count", data.errors.refused_count + " refused");
    setText("total-cost", usd(data.cost.total_cost_usd));
    renderDrops(data.drops);

    const s = data.series;
    drawChart("chart-latency", lines(["p50", "p95", "p99"]), [s.t, s.latency_p50, s.latency_p95, s.latency_p99]);
    drawChart("chart-ttft", lines(["p50", "p95", "p99"]), [s.t, s.ttft_p50, s.ttft_p95, s.ttft_p99]);
    drawChart("chart-throughput", lines(["calls", "output tokens"]), [s.t, s.calls, s.output_tokens]);
    drawChart("chart-errors", lines(["errors", "refused"]).map((x, i) => Object.assign(x, { stroke: palette[2 - i] })), [s.t, s.errors, s.refused]);

    const body = document.querySelector("#cost-table tbody");
    clear(body);
    const costs = data.cost.models.map((m) => Number(m.cost_usd));
    const most = Math.max(1e-12, ...costs);
    for (const m of data.cost.models) {
      const bar = el("div", { class: "cost-bar" });
      bar.style.width = (100 * Number(m.cost_usd) / most).toFixed(1) + "%";
      body.append(el("tr", { dataset: { model: m.model } },
        el("td", {}, m.model), el("td", {}, m.provider),
        el("td", { class: "num" }, m.call_count), el("td", { class: "num" }, m.input_tokens),
        el("td", { class: "num" }, m.output_tokens), el("td", { class: "num" }, m.cost_usd),
        el("td", { class: "bar-cell" }, bar)));
    }
    if (!data.cost.models.length) body.append(el("tr", {}, el("td", { colspan: "7", class: "muted" }, "No calls in this window.")));
  }

  function renderDrops(drops) {
    setText("dropped-total", String(drops.dropped_total));
    setText("ingest-rejected", String(drops.ingest_rejected));
    setText("dead-lettered", String(drops.dead_lettered));
    const lossy = drops.dropped_total + drops.ingest_rejected + drops.dead_lettered > 0;
    document.getElementById("drops-tile").classList.toggle("lossy", lossy);
    const body = document.querySelector("#drops-table tbody");
    clear(body);
    for (const [reason, n] of Object.entries(drops.dropped_before_export)) {
      body.append(el("tr", {}, el("td", {}, "all processes read"), el("td", {}, "dropped before export: " + reason), el("td", { class: "num" }, n)));
    }
    body.append(el("tr", {}, el("td", {}, "ingest"), el("td", {}, "rejected spans (this tenant)"), el("td", { class: "num" }, drops.ingest_rejected)));
    body.append(el("tr", {}, el("td", {}, "worker"), el("td", {}, "dead-lettered records (all tenants)"), el("td", { class: "num" }, drops.dead_lettered)));
    for (const source of drops.sources) {
      body.append(el("tr", {}, el("td", {}, source.url), el("td", {}, "scrape"), el("td", {}, source.ok ? "ok" : "unreachable: " + source.error)));
    }
  }

  // -- conversations --------------------------------------------------------
  async function renderConversations() {
    const data = await api("/api/conversations?window=" + encodeURIComponent(state.window));
    const body = document.querySelector("#conversations-table tbody");
    clear(body);
    for (const c of data.conversations) {
      const row = el("tr", { class: "clickable", dataset: { conversation: c.conversation_id } },
        el("td", {}, el("code", {}, c.conversation_id)), el("td", {}, when(c.last_call)),
        el("td", { class: "num" }, c.calls), el("td", { class: "num" }, c.input_tokens + " / " + c.output_tokens),
        el("td", { class: "num" }, c.cost_usd), el("td", { class: "num" }, c.errors), el("td", { class: "num" }, c.refused),
        el("td", {}, (c.models || []).join(", ")), el("td", { class: "preview" }, c.first_prompt ?? ""));
      row.addEventListener("click", () => { location.hash = "#conversation/" + encodeURIComponent(c.conversation_id); });
      body.append(row);
    }
    if (!data.conversations.length) body.append(el("tr", {}, el("td", { colspan: "9", class: "muted" }, "No conversations in this window.")));
  }

  async function renderConversation(id) {
    setText("conversation-id", id);
    const data = await api("/api/conversations/" + encodeURIComponent(id));
    const root = document.getElementById("waterfall");
    clear(root);
    const traces = new Map();
    for (const span of data.spans) {
      if (!traces.has(span.trace_id)) traces.set(span.trace_id, []);
      traces.get(span.trace_id).push(span);
    }
    for (const [traceId, spans] of traces) root.append(traceBlock(traceId, spans));
  }

  function traceBlock(traceId, spans) {
    const starts = spans.map((s) => Date.parse(s.start_time));
    const t0 = Math.min(...starts);
    const t1 = Math.max(...spans.map((s, i) => starts[i] + s.duration_ms));
    const total = Math.max(1, t1 - t0);
    const template = state.session.trace_url_template;
    const idNode = template
      ? el("a", { href: template.replace("{trace_id}", encodeURIComponent(traceId)), target: "_blank", rel: "noopener noreferrer" }, traceId)
      : el("code", {}, traceId);
    const block = el("div", { class: "trace", dataset: { trace: traceId } },
      el("h3", {}, "Trace ", idNode, el("span", { class: "muted" }, " · " + total.toFixed(1) + " ms · open in Jaeger/Tempo by this id")));
    spans.forEach((span, i) => {
      const track = el("div", { class: "span-track" });
      const bar = el("div", { class: "span-bar" + (span.status === "error" ? " error" : "") });
      bar.style.left = (100 * (starts[i] - t0) / total) + "%";
      bar.style.width = (100 * span.duration_ms / total) + "%";
      track.append(bar);
      if (span.ttft_ms !== null && span.ttft_ms !== undefined) {
        const ttft = el("div", { class: "span-ttft", title: "time to first token" });
        ttft.style.left = bar.style.left;
        ttft.style.width = (100 * span.ttft_ms / total) + "%";
        track.append(ttft);
      }
      const name = el("div", { class: "span-name", title: span.name }, span.name,
        span.service_name ? el("span", { class: "muted" }, " · " + span.service_name) : null);
      name.style.paddingLeft = (span.depth * 1.2) + "rem";
      const facts = el("div", { class: "span-facts" }, span.duration_ms.toFixed(1) + " ms ");
      const call = span.llm_call;
      const status = call ? call.status : span.status;
      facts.append(el("span", { class: "badge " + status }, status));
      if (call) {
        if (span.ttft_ms !== null) facts.append(" ttft " + span.ttft_ms.toFixed(1) + " ms");
        facts.append(" · " + (call.input_tokens ?? "?") + "+" + (call.output_tokens ?? "?") + " tok");
        facts.append(" · $" + (call.cost_usd ?? "?"));
        facts.append(" · " + call.model);
        for (const [kind, n] of Object.entries(call.redaction_counts || {})) {
          if (n > 0) facts.append(" ", el("span", { class: "badge pii", title: "redacted before export" }, kind + " ×" + n));
        }
      }
      const row = el("div", { class: "span-row", dataset: { span: span.span_id, name: span.name, depth: String(span.depth) } }, name, track, facts);
      if (call) {
        row.append(el("div", { class: "span-previews" },
          el("div", { class: "preview prompt-preview" }, "prompt: ", call.prompt_preview ?? ""),
          el("div", { class: "preview completion-preview" }, "completion: ", call.completion_preview ?? "")));
      }
      block.append(row);
    });
    return block;
  }

  // -- evaluation -----------------------------------------------------------
  async function renderEvaluation() {
    const data = await api("/api/runs");
    const note = document.getElementById("evaluation-note");
    note.hidden = data.available && data.runs.length > 0;
    note.textContent = data.available ? "No evaluation runs yet: start one with koverage eval."
      : "The underwriter's tables are not in this database.";
    const root = document.getElementById("runs");
    clear(root);
    for (const run of data.runs) root.append(runBlock(run));

    const select = document.getElementById("history-model");
    const chosen = select.value;
    clear(select);
    for (const model of data.models) select.append(el("option", { value: model }, model));
    if (data.models.includes(chosen)) select.value = chosen;
    if (select.value) await renderHistory(select.value);
  }

  function runBlock(run) {
    const head = el("h3", {}, "Run ", el("code", {}, run.id), " · " + run.state + " · " + when(run.created_at) + " ");
    if (run.has_pdf) head.append(el("a", { href: "/api/runs/" + encodeURIComponent(run.id) + "/report.pdf", target: "_blank", class: "pdf-link" }, "PDF report"));
    const block = el("div", { class: "run", dataset: { run: run.id } }, head);
    if (run.error) block.append(el("p", { class: "error" }, run.error));
    if (run.recommendation) block.append(el("p", {}, run.recommendation));
    const table = el("table", { class: "run-table" },
      el("thead", {}, el("tr", {}, el("th", {}, "Model"), el("th", {}, "Temp."), el("th", {}, "Guardrail"),
        el("th", {}, "Index [95% CI]"), el("th", {}, "Tier"), el("th", {}, "Risk by axis [95% CI]"))));
    const body = el("tbody");
    for (const entry of run.entries) {
      for (const [arm, s] of Object.entries(entry.arms)) {
        const axes = el("td", { class: "axes" });
        for (const [axis, a] of Object.entries(s.axes)) {
          axes.append(el("div", { dataset: { axis: axis } }, axis + ": " + num(a.risk, 3) + " [" + num(a.ci?.[0], 3) + ", " + num(a.ci?.[1], 3) + "] n=" + a.n));
        }
        body.append(el("tr", { dataset: { model: entry.model, arm: arm } },
          el("td", {}, entry.model + (entry.simulated ? " (simulated)" : "")), el("td", {}, entry.temperature),
          el("td", {}, arm), el("td", { class: "index" }, num(s.index, 1) + " [" + num(s.index_ci?.[0], 1) + ", " + num(s.index_ci?.[1], 1) + "]"),
          el("td", { class: "tier" }, (s.tier ?? "–") + (s.tier_uncertain ? " (uncertain)" : "")), axes));
      }
    }
    table.append(body);
    block.append(table);
    const agreement = Object.entries(run.agreement);
    if (agreement.length) {
      const p = el("p", { class: "agreement" }, "Judge agreement (quadratic κ): ");
      for (const [axis, a] of agreement) {
        p.append(el("span", { class: "badge" + (a.soft ? " refused" : "") }, axis + " " + num(a.kappa, 2) + " [" + num(a.kappa_ci?.[0], 2) + ", " + num(a.kappa_ci?.[1], 2) + "] n=" + a.n));
      }
      block.append(p);
    }
    return block;
  }

  async function renderHistory(model) {
    const data = await api("/api/models/history?model=" + encodeURIComponent(model));
    const arms = [...new Set(data.points.map((p) => p.guardrail_arm + " @ T=" + p.temperature))];
    const times = [...new Set(data.points.map((p) => Date.parse(p.created_at) / 1000))].sort((a, b) => a - b);
    const columns = arms.map((arm) => times.map((t) => {
      const point = data.points.find((p) => Date.parse(p.created_at) / 1000 === t && p.guardrail_arm + " @ T=" + p.temperature === arm);
      return point ? point.index : null;
    }));
    if (charts["chart-history"]) { charts["chart-history"].destroy(); delete charts["chart-history"]; }
    drawChart("chart-history", lines(arms).map((x) => Object.assign(x, { points: { show: true, size: 7 } })), [times].concat(columns), { scales: { y: { range: [0, 100] } } });
    const body = document.querySelector("#history-table tbody");
    clear(body);
    for (const p of data.points) {
      body.append(el("tr", {}, el("td", {}, el("code", {}, p.run_id.slice(0, 8))), el("td", {}, when(p.created_at)),
        el("td", {}, p.temperature), el("td", {}, p.guardrail_arm), el("td", { class: "num" }, num(p.index, 1)),
        el("td", {}, "[" + num(p.index_ci_low, 1) + ", " + num(p.index_ci_high, 1) + "]"), el("td", {}, p.tier ?? "–")));
    }
  }

  // -- routing and refresh --------------------------------------------------
  async function refresh() {
    const hash = location.hash.replace(/^#/, "") || "live";
    const [view, ...rest] = hash.split("/");
    try {
      if (view === "conversation") await renderConversation(decodeURIComponent(rest.join("/")));
      else if (view === "conversations") await renderConversations();
      else if (view === "evaluation") await renderEvaluation();
      else await renderLive();
      showError(null);
      setText("updated", "updated " + new Date().toLocaleTimeString());
      document.body.dataset.rendered = hash; // tests wait on this
    } catch (err) {
      showError(err);
    }
  }

  function route() {
    const hash = location.hash.replace(/^#/, "") || "live";
    const view = hash.split("/")[0];
    for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== "view-" + view;
    for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.view === view || (view === "conversation" && link.dataset.view === "conversations"));
    if (view !== state.view) {
      // Charts of a hidden view are rebuilt when it shows again, at its width.
      for (const id of Object.keys(charts)) { charts[id].destroy(); delete charts[id]; }
      state.view = view;
    }
    delete document.body.dataset.rendered;
    refresh();
  }

  async function start() {
    state.session = await api("/api/session");
    state.window = state.session.default_window;
    setText("tenant-name", state.session.auth_required || !state.session.tenants.length ? state.session.tenant : "");
    if (!state.session.auth_required) {
      document.getElementById("logout").hidden = true;
      const select = document.getElementById("tenant-select");
      if (state.session.tenants.length) {
        for (const t of state.session.tenants) select.append(el("option", { value: t }, t));
        select.value = state.session.tenants.includes(state.session.tenant) ? state.session.tenant : state.session.tenants[0];
        state.tenant = select.value;
        select.hidden = false;
        select.addEventListener("change", () => { state.tenant = select.value; route(); });
      }
    }
    const group = document.getElementById("windows");
    for (const name of state.session.windows) {
      const button = el("button", { type: "button", dataset: { window: name } }, name);
      button.classList.toggle("active", name === state.window);
      button.addEventListener("click", () => {
        state.window = name;
        for (const b of group.children) b.classList.toggle("active", b.dataset.window === name);
        route();
      });
      group.append(button);
    }
    document.getElementById("history-model").addEventListener("change", (e) => renderHistory(e.target.value).catch(showError));
    window.addEventListener("hashchange", route);
    route();
    // Live views refresh on their own; a single conversation stays put.
    state.timer = setInterval(() => {
      if (state.view === "live" || state.view === "conversations") refresh();
    }, state.session.refresh_s * 1000);
  }

  start().catch(showError);
})();
