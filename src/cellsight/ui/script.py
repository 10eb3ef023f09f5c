# ruff: noqa: E501  (embedded JavaScript: its lines follow the script, not Python line length)
"""The dashboard's only script: poll JSON endpoints and redraw (charts with the locally served plotly.js)."""

DASHBOARD_JS = r"""
"use strict";
const CS = window.CS || {images: false, refresh: 5};
function esc(v) { const d = document.createElement("div"); d.textContent = v == null ? "" : String(v); return d.innerHTML; }
function pct(v, digits) { return v == null ? "–" : (100 * v).toFixed(digits == null ? 1 : digits) + "%"; }
async function getJSON(url) {
  const r = await fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}});
  if (r.status === 401) { window.location = "/login"; throw new Error("logged out"); }
  if (!r.ok) throw new Error(url + ": " + r.status);
  return r.json();
}
function poll(fn) {
  const run = () => fn().then(() => { const s = document.getElementById("updated");
    if (s) s.textContent = "updated " + new Date().toLocaleTimeString(); })
    .catch(e => { const s = document.getElementById("updated"); if (s) s.textContent = "refresh failed: " + e.message; });
  run(); setInterval(run, 1000 * CS.refresh);
}
const LAYOUT = {template: "plotly_white", margin: {l: 60, r: 20, t: 40, b: 60}, height: 360};
const CONFIG = {displaylogo: false, responsive: true};
function note(id, text) { const el = document.getElementById(id); Plotly.purge(el); el.innerHTML = "<p class='note'>" + esc(text) + "</p>"; }
function table(id, head, rows) {  // text only: every value goes in with textContent
  const t = document.getElementById(id); t.replaceChildren();
  const row = (cells, tag) => { const tr = document.createElement("tr");
    cells.forEach((v, i) => { const c = document.createElement(i === 0 || tag === "th" ? "th" : "td"); c.textContent = v; tr.append(c); });
    t.append(tr); };
  row(head, "th"); rows.forEach(r => row(r, "td"));
}
function text(id, value) { document.getElementById(id).textContent = value || ""; }
function renderTruth(data) {
  const d = data.display;  // the panel's text in the page's language, formatted on the server (Babel)
  text("truth-title", d.title + " · " + d.run);
  table("truth", d.truth.head, d.truth.rows);
  text("confusion-title", d.confusion_title);
  table("confusion", d.confusion.head, d.confusion.rows);
  text("sampled", d.sampled); text("naming", d.naming);
  if (d.costs) { text("costs-title", d.costs.title); table("costs", d.costs.head, d.costs.rows); }
  else { text("costs-title", d.costs_missing); document.getElementById("costs").replaceChildren(); }
}
function renderOverview(q) {
  document.getElementById("kpis").innerHTML =
    "<span class='kpi'><b>" + pct(q.rty) + "</b>rolled throughput yield</span>" +
    "<span class='kpi'><b>" + pct(q.final.final_yield) + "</b>final yield (" + q.final.ok + " OK of " + q.final.cells + " cells)</span>" +
    "<span class='kpi'><b>" + q.inspections + "</b>inspections in run " + q.run_id + "</span>" +
    "<span class='kpi'><b>" + q.pchart.out_of_control.length + "</b>p-chart signals</span>";
  const st = q.stations.filter(s => s.fpy != null);
  if (st.length) {
    const fpy = {type: "bar", x: st.map(s => s.station), y: st.map(s => s.fpy), marker: {color: "#2e6fba"},
      text: st.map(s => pct(s.fpy)), textposition: "inside",
      error_y: {type: "data", symmetric: false, array: st.map(s => s.interval[1] - s.fpy), arrayminus: st.map(s => s.fpy - s.interval[0])}};
    const shapes = q.rty == null ? [] : [{type: "line", xref: "paper", x0: 0, x1: 1, y0: q.rty, y1: q.rty, line: {dash: "dash", color: "#b42318"}}];
    Plotly.react("fpy", [fpy], Object.assign({}, LAYOUT, {title: {text: "First-pass yield per station (Wilson 95%)"}, shapes: shapes,
      annotations: q.rty == null ? [] : [{xref: "paper", x: 1, y: q.rty, yanchor: "bottom", xanchor: "right", showarrow: false, text: "RTY " + pct(q.rty), font: {color: "#b42318"}}],
      yaxis: {range: [0, 1.05], tickformat: ".0%", title: {text: "FPY"}}}), CONFIG);
  } else note("fpy", "No station has inspected a cell yet.");
  if (q.pareto.length) {
    const names = q.pareto.map(p => p.category);
    Plotly.react("pareto", [
      {type: "bar", x: names, y: q.pareto.map(p => p.count), name: "count", marker: {color: q.pareto.map(p => p.kind === "defect" ? "#2e6fba" : "#d97706")}},
      {type: "scatter", mode: "lines+markers", x: names, y: q.pareto.map(p => 100 * p.cumulative_share), yaxis: "y2", name: "cumulative %", line: {color: "#b42318"}}],
      Object.assign({}, LAYOUT, {title: {text: "Defect Pareto (blue: model's class, orange: line's reason)"}, showlegend: false, margin: {l: 60, r: 60, t: 40, b: 60},
        yaxis: {title: {text: "non-OK inspections"}, rangemode: "tozero"}, yaxis2: {title: {text: "cumulative %"}, overlaying: "y", side: "right", range: [0, 105], showgrid: false}}), CONFIG);
  } else note("pareto", "No NG or ERROR inspections: nothing to rank.");
  const pc = q.pchart;
  if (pc.centre != null) {
    const g = pc.subgroups, x = g.map(s => s.index);
    const flagged = g.filter(s => s.beyond_limits || s.in_run);
    Plotly.react("pchart", [
      {type: "scatter", mode: "lines", x: x, y: g.map(s => s.ucl), name: "UCL", line: {shape: "hvh", dash: "dash", color: "#b42318"}},
      {type: "scatter", mode: "lines", x: x, y: g.map(s => s.lcl), name: "LCL", line: {shape: "hvh", dash: "dash", color: "#b42318"}},
      {type: "scatter", mode: "lines+markers", x: x, y: g.map(s => s.p), name: "reject rate", text: g.map(s => s.label), line: {color: "#2e6fba"}},
      {type: "scatter", mode: "markers", x: flagged.map(s => s.index), y: flagged.map(s => s.p), name: "signal", marker: {color: "#b42318", size: 12, symbol: "x"}}],
      Object.assign({}, LAYOUT, {title: {text: "p-chart of the reject rate (NG or REVIEW; centre " + pct(pc.centre, 2) + ", " + pc.subgroup_size + " cells per point)"},
        shapes: [{type: "line", xref: "paper", x0: 0, x1: 1, y0: pc.centre, y1: pc.centre, line: {color: "#067647"}}],
        yaxis: {tickformat: ".0%", rangemode: "tozero", title: {text: "reject rate"}}, legend: {orientation: "h", y: -0.25},
        xaxis: {title: {text: "subgroup"}, tickmode: "array", tickvals: x, ticktext: g.map(s => s.label)}}), CONFIG);
  } else note("pchart", "No finished cells yet: no p-chart.");
  document.getElementById("stations").innerHTML = "<tr><th>Station</th><th>Inspected</th><th>Passed</th><th>NG</th><th>ERROR</th><th>FPY</th><th>95% CI</th><th>Mean / p95 ms</th></tr>" +
    q.stations.map(s => "<tr><td>" + esc(s.station) + "</td><td class=num>" + s.inspected + "</td><td class=num>" + s.passed +
      "</td><td class=num>" + s.ng + "</td><td class=num>" + s.error + "</td><td class=num>" + pct(s.fpy) + "</td><td class=num>" +
      (s.interval ? pct(s.interval[0]) + "–" + pct(s.interval[1]) : "–") + "</td><td class=num>" +
      (s.mean_latency_ms == null ? "–" : s.mean_latency_ms.toFixed(1) + " / " + s.p95_latency_ms.toFixed(1)) + "</td></tr>").join("");
}
function card(i, withButtons) {
  const img = CS.images ? (i.heatmap_url || i.image_url) : null;
  const pic = img ? "<a href='" + esc(i.image_url || img) + "'><img loading=lazy alt='heat map of inspection " + i.id + "' src='" + esc(img) + "'></a>"
    : "<p class='note'>" + (CS.images ? "no image stored" : "images need the operator role") + "</p>";
  const buttons = withButtons ? "<div><input type=text placeholder='defect class' value='" + esc(i.defect_class || "") +
    "' size=8> <button class=confirm data-id=" + i.id + " data-decision=confirmed_defect>Confirm defect</button> " +
    "<button class=false data-id=" + i.id + " data-decision=false_call>False call</button></div>" : "";
  return "<div class=card id=card-" + i.id + ">" + pic + "<div><span class='v " + esc(i.verdict) + "'>" + esc(i.verdict) + "</span> " +
    esc(i.station) + " · score " + (i.score == null ? "–" : i.score.toFixed(3)) + "</div><div><a href='/cells?id=" +
    encodeURIComponent(i.cell_id) + "'>" + esc(i.cell_id) + "</a> · #" + i.id + "</div><div class=note>" +
    esc(i.defect_class || i.reason || "") + " · " + esc(new Date(i.inspected_at).toLocaleString()) + "</div>" + buttons + "</div>";
}
async function renderGallery() {
  const items = await getJSON("/v1/gallery?limit=48");
  document.getElementById("gallery").innerHTML = items.length ? items.map(i => card(i, false)).join("") : "<p class=note>No NG or ERROR inspections yet.</p>";
}
async function renderQueue() {
  const items = await getJSON("/v1/review-queue?limit=100");
  document.getElementById("count").textContent = items.length;
  document.getElementById("queue").innerHTML = items.length ? items.map(i => card(i, CS.review)).join("") : "<p class=note>Nothing to review.</p>";
}
document.addEventListener("click", async ev => {
  const b = ev.target.closest("button[data-decision]");
  if (!b) return;
  const box = b.closest(".card"), cls = box.querySelector("input").value.trim();
  const body = {decision: b.dataset.decision, defect_class: b.dataset.decision === "confirmed_defect" && cls ? cls : null};
  const r = await fetch("/v1/inspections/" + b.dataset.id + "/review", {method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  if (r.ok) { box.remove(); const c = document.getElementById("count"); c.textContent = document.querySelectorAll("#queue .card").length; }
  else { const d = await r.json().catch(() => ({})); alert("review refused: " + (d.detail ? JSON.stringify(d.detail) : r.status)); }
});
"""
