// The dashboard's only script: poll JSON endpoints and redraw with DOM APIs (textContent, never HTML
// built from data), charts with the locally served plotly.js. Settings come from a JSON data island.
"use strict";
const CS = JSON.parse(document.getElementById("cs-settings").textContent);
const T = CS.text || {};
function t(s) { return T[s] || s; }
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null) continue;
    if (k === "text") node.textContent = String(v);
    else if (k === "className") node.className = String(v);
    else node.setAttribute(k, String(v));
  }
  for (const c of children) if (c != null) node.append(c);  // strings become text nodes
  return node;
}
function fill(id, ...children) { const n = document.getElementById(id); n.replaceChildren(...children); return n; }
function pct(v, digits) {
  const d = digits == null ? 1 : digits;
  return v == null ? "–" : new Intl.NumberFormat(CS.lang, {style: "percent", minimumFractionDigits: d, maximumFractionDigits: d}).format(v);
}
function num(v, digits) {
  return v == null ? "–" : new Intl.NumberFormat(CS.lang, {minimumFractionDigits: digits || 0, maximumFractionDigits: digits || 0}).format(v);
}
async function getJSON(url) {
  const r = await fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}});
  if (r.status === 401) { window.location = "/login"; throw new Error("logged out"); }
  if (!r.ok) throw new Error(url + ": " + r.status);
  return r.json();
}
function poll(fn) {
  const say = text => { const s = document.getElementById("updated"); if (s) s.textContent = text; };
  const run = () => fn().then(() => say(t("updated") + " " + new Date().toLocaleTimeString(CS.lang)))
    .catch(e => say(t("refresh failed") + ": " + e.message));
  run(); setInterval(run, 1000 * CS.refresh);
}
const LAYOUT = {template: "plotly_white", margin: {l: 60, r: 20, t: 40, b: 60}, height: 360};
// no mode bar: plotly's own tool tips are English only, and an operator's chart needs no zoom tools
const CONFIG = {displaylogo: false, responsive: true, displayModeBar: false};
function note(id, text) { const n = document.getElementById(id); Plotly.purge(n); n.replaceChildren(el("p", {className: "note", text: text})); }
// a p-chart subgroup ("run 3 #100-149") in the page's language
function runLabel(label) { return label.replace(/\brun (\d+)/g, (_m, n) => t("run") + " " + n); }
function kpi(value, label) { return el("span", {className: "kpi"}, el("b", {text: value}), label); }
function renderOverview(q) {
  fill("kpis",
    kpi(pct(q.rty), t("rolled throughput yield")),
    kpi(pct(q.final.final_yield), t("final yield") + " (" + q.final.ok + " OK / " + q.final.cells + ")"),
    kpi(num(q.inspections), t("inspections in run") + " " + q.run_id),
    kpi(num(q.pchart.out_of_control.length), t("p-chart signals")));
  const st = q.stations.filter(s => s.fpy != null);
  if (st.length) {
    const fpy = {type: "bar", x: st.map(s => s.station), y: st.map(s => s.fpy), marker: {color: "#2e6fba"},
      text: st.map(s => pct(s.fpy)), textposition: "inside",
      error_y: {type: "data", symmetric: false, array: st.map(s => s.interval[1] - s.fpy), arrayminus: st.map(s => s.fpy - s.interval[0])}};
    const shapes = q.rty == null ? [] : [{type: "line", xref: "paper", x0: 0, x1: 1, y0: q.rty, y1: q.rty, line: {dash: "dash", color: "#b42318"}}];
    Plotly.react("fpy", [fpy], Object.assign({}, LAYOUT, {title: {text: t("First-pass yield per station (Wilson 95%)")}, shapes: shapes,
      annotations: q.rty == null ? [] : [{xref: "paper", x: 1, y: q.rty, yanchor: "bottom", xanchor: "right", showarrow: false, text: "RTY " + pct(q.rty), font: {color: "#b42318"}}],
      yaxis: {range: [0, 1.05], tickformat: ".0%", title: {text: "FPY"}}}), CONFIG);
  } else note("fpy", t("No station has inspected a cell yet."));
  if (q.pareto.length) {
    const names = q.pareto.map(p => p.category);
    Plotly.react("pareto", [
      {type: "bar", x: names, y: q.pareto.map(p => p.count), name: t("count"), marker: {color: q.pareto.map(p => p.kind === "defect" ? "#2e6fba" : "#d97706")}},
      {type: "scatter", mode: "lines+markers", x: names, y: q.pareto.map(p => 100 * p.cumulative_share), yaxis: "y2", name: t("cumulative %"), line: {color: "#b42318"}}],
      Object.assign({}, LAYOUT, {title: {text: t("Defect Pareto (blue: model's class, orange: line's reason)")}, showlegend: false, margin: {l: 60, r: 60, t: 40, b: 60},
        yaxis: {title: {text: t("non-OK inspections")}, rangemode: "tozero"}, yaxis2: {title: {text: t("cumulative %")}, overlaying: "y", side: "right", range: [0, 105], showgrid: false}}), CONFIG);
  } else note("pareto", t("No NG or ERROR inspections: nothing to rank."));
  const pc = q.pchart;
  if (pc.centre != null) {
    const g = pc.subgroups, x = g.map(s => s.index);
    const flagged = g.filter(s => s.beyond_limits || s.in_run);
    Plotly.react("pchart", [
      {type: "scatter", mode: "lines", x: x, y: g.map(s => s.ucl), name: "UCL", line: {shape: "hvh", dash: "dash", color: "#b42318"}},
      {type: "scatter", mode: "lines", x: x, y: g.map(s => s.lcl), name: "LCL", line: {shape: "hvh", dash: "dash", color: "#b42318"}},
      {type: "scatter", mode: "lines+markers", x: x, y: g.map(s => s.p), name: t("reject rate"), text: g.map(s => runLabel(s.label)), line: {color: "#2e6fba"}},
      {type: "scatter", mode: "markers", x: flagged.map(s => s.index), y: flagged.map(s => s.p), name: t("signal"), marker: {color: "#b42318", size: 12, symbol: "x"}}],
      Object.assign({}, LAYOUT, {title: {text: t("p-chart of the reject rate") + " (NG / REVIEW; " + pct(pc.centre, 2) + ", " + pc.subgroup_size + ")"},
        shapes: [{type: "line", xref: "paper", x0: 0, x1: 1, y0: pc.centre, y1: pc.centre, line: {color: "#067647"}}],
        yaxis: {tickformat: ".0%", rangemode: "tozero", title: {text: t("reject rate")}}, legend: {orientation: "h", y: -0.25},
        xaxis: {title: {text: t("subgroup")}, tickmode: "array", tickvals: x, ticktext: g.map(s => runLabel(s.label))}}), CONFIG);
  } else note("pchart", t("No finished cells yet: no p-chart."));
  const cellNum = v => el("td", {className: "num", text: v});
  fill("stations",
    el("tr", {}, ...[t("Station"), t("Inspected"), t("Passed"), "NG", "ERROR", "FPY", t("95% CI"), t("Mean / p95 ms")].map(h => el("th", {text: h}))),
    ...q.stations.map(s => el("tr", {}, el("td", {text: s.station}), cellNum(num(s.inspected)), cellNum(num(s.passed)),
      cellNum(num(s.ng)), cellNum(num(s.error)), cellNum(pct(s.fpy)),
      cellNum(s.interval ? pct(s.interval[0]) + "–" + pct(s.interval[1]) : "–"),
      cellNum(s.mean_latency_ms == null ? "–" : num(s.mean_latency_ms, 1) + " / " + num(s.p95_latency_ms, 1)))));
}
function card(i, withButtons) {
  const img = CS.images ? (i.heatmap_url || i.image_url) : null;
  const pic = img ? el("a", {href: i.image_url || img}, el("img", {loading: "lazy", alt: t("heat map of inspection") + " " + i.id, src: img}))
    : el("p", {className: "note", text: CS.images ? t("no image stored") : t("images need the operator role")});
  const box = el("div", {className: "card", id: "card-" + i.id}, pic,
    el("div", {}, el("span", {className: "v " + i.verdict, text: i.verdict}), " " + i.station + " · " + t("score") + " " + (i.score == null ? "–" : num(i.score, 3))),
    el("div", {}, el("a", {href: "/cells?id=" + encodeURIComponent(i.cell_id), text: i.cell_id}), " · #" + i.id),
    el("div", {className: "note", text: (i.defect_class || i.reason || "") + " · " + new Date(i.inspected_at).toLocaleString(CS.lang)}));
  if (withButtons) {
    const cls = el("input", {type: "text", placeholder: t("defect class"), size: 8});
    cls.value = i.defect_class || "";
    box.append(el("div", {}, cls, " ",
      el("button", {className: "confirm", "data-id": i.id, "data-decision": "confirmed_defect", text: t("Confirm defect")}), " ",
      el("button", {className: "false", "data-id": i.id, "data-decision": "false_call", text: t("False call")})));
  }
  return box;
}
async function renderGallery() {
  const items = await getJSON("/v1/gallery?limit=48");
  fill("gallery", ...(items.length ? items.map(i => card(i, false)) : [el("p", {className: "note", text: t("No NG or ERROR inspections yet.")})]));
}
async function renderQueue() {
  const items = await getJSON("/v1/review-queue?limit=100");
  document.getElementById("count").textContent = String(items.length);
  fill("queue", ...(items.length ? items.map(i => card(i, CS.review)) : [el("p", {className: "note", text: t("Nothing to review.")})]));
}
document.addEventListener("click", async ev => {
  const b = ev.target.closest("button[data-decision]");
  if (!b) return;
  const box = b.closest(".card"), cls = box.querySelector("input").value.trim();
  const body = {decision: b.dataset.decision, defect_class: b.dataset.decision === "confirmed_defect" && cls ? cls : null};
  const r = await fetch("/v1/inspections/" + encodeURIComponent(b.dataset.id) + "/review", {method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": CS.csrf}, body: JSON.stringify(body)});
  if (r.ok) { box.remove(); document.getElementById("count").textContent = String(document.querySelectorAll("#queue .card").length); }
  else { const d = await r.json().catch(() => ({})); alert(t("review refused") + ": " + (d.detail ? JSON.stringify(d.detail) : r.status)); }
});
function table(id, head, rows) {
  fill(id, el("tr", {}, ...head.map(h => el("th", {text: h}))),
    ...rows.map(r => el("tr", {}, el("th", {text: r[0]}), ...r.slice(1).map(v => el("td", {className: "num", text: v})))));
}
function renderTruth(data) {
  const d = data.display;  // the panel's text in the page's language, formatted on the server (Babel)
  fill("truth-title", d.title + " · " + d.run);
  table("truth", d.truth.head, d.truth.rows);
  fill("confusion-title", d.confusion_title);
  table("confusion", d.confusion.head, d.confusion.rows);
  fill("sampled", d.sampled);
  fill("naming", d.naming);
  if (d.costs) { fill("costs-title", d.costs.title); table("costs", d.costs.head, d.costs.rows); }
  else { fill("costs-title", d.costs_missing); fill("costs"); }
}
const PAGES = {overview: () => poll(() => Promise.all([getJSON("/v1/quality").then(renderOverview),
  getJSON("/v1/truth?lang=" + encodeURIComponent(CS.locale)).then(renderTruth)])), gallery: () => poll(renderGallery),
  review: () => poll(renderQueue)};
const start = PAGES[document.body.dataset.page];
if (start) start();
