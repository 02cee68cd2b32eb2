// The tower-kit demo dashboard: reads /metrics every second, keeps five minutes of samples in memory, draws SVG
// line charts, and sends bounded bursts for the "try it" panel. No library, no build step.
"use strict";

const REFRESH_MS = 1000;
const HISTORY_SECONDS = 300;
const WINDOW_SECONDS = 10; // latency percentiles and mean batch size are computed over this trailing window
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];
// Routes the page itself calls: left out of the timing charts so that watching does not look like traffic.
const OWN_ROUTES = new Set(["/", "/metrics", "/health", "/dashboard/app.js", "/dashboard/app.css", "/dashboard/config.json"]);

const state = { config: null, samples: [], selectedRoute: null, routeChosen: false, busy: false };

// ---------------------------------------------------------------------------------------------------------------
// Prometheus text format

/** Parses the text format into a Map of metric name -> [{labels, value}]. */
function parseMetrics(text) {
  const out = new Map();
  for (const line of text.split("\n")) {
    if (line === "" || line[0] === "#") continue;
    const m = /^([A-Za-z_:][A-Za-z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    if (m[3]) {
      const re = /([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
      let l;
      while ((l = re.exec(m[3])) !== null) labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
    }
    const value = m[4] === "+Inf" ? Infinity : Number(m[4]);
    if (!out.has(m[1])) out.set(m[1], []);
    out.get(m[1]).push({ labels, value });
  }
  return out;
}

/** Sum of a metric's values whose labels match `filter` (an object of required label values). */
function sum(metrics, name, filter = {}) {
  let total = 0;
  for (const { labels, value } of metrics.get(name) || []) {
    if (Object.entries(filter).every(([k, v]) => labels[k] === v)) total += value;
  }
  return total;
}

/** Values of a metric summed per value of one label. */
function sumBy(metrics, name, label, keep = () => true) {
  const out = new Map();
  for (const { labels, value } of metrics.get(name) || []) {
    if (!keep(labels)) continue;
    const key = labels[label] ?? "";
    out.set(key, (out.get(key) || 0) + value);
  }
  return out;
}

/** Histogram buckets summed over every series matching `keep`: Map le -> cumulative count. */
function buckets(metrics, name, keep) {
  const out = new Map();
  for (const { labels, value } of metrics.get(name + "_bucket") || []) {
    if (!keep(labels)) continue;
    const le = labels.le === "+Inf" ? Infinity : Number(labels.le);
    out.set(le, (out.get(le) || 0) + value);
  }
  return out;
}

/** A quantile from the difference of two cumulative bucket maps, interpolated within the bucket (as PromQL does). */
function quantile(q, now, before) {
  const les = [...now.keys()].sort((a, b) => a - b);
  if (les.length === 0) return null;
  const delta = les.map((le) => Math.max(0, now.get(le) - ((before && before.get(le)) || 0)));
  const total = delta[delta.length - 1];
  if (!(total > 0)) return null;
  const rank = q * total;
  for (let i = 0; i < les.length; i++) {
    if (delta[i] >= rank) {
      if (les[i] === Infinity) return les[i - 1] ?? null;
      const lower = i === 0 ? 0 : les[i - 1];
      const below = i === 0 ? 0 : delta[i - 1];
      const inBucket = delta[i] - below;
      return inBucket > 0 ? lower + ((les[i] - lower) * (rank - below)) / inBucket : les[i];
    }
  }
  return null;
}

// ---------------------------------------------------------------------------------------------------------------
// Samples and derived series

/** The sample closest to `seconds` before the newest one (or the oldest there is). */
function sampleAgo(seconds) {
  const s = state.samples;
  const newest = s[s.length - 1];
  for (let i = s.length - 1; i >= 0; i--) if (newest.t - s[i].t >= seconds * 1000) return s[i];
  return s[0];
}

/** Per-second rate series of a scalar extracted from each sample: [[t, rate]]. */
function rateSeries(extract) {
  const out = [];
  const s = state.samples;
  for (let i = 1; i < s.length; i++) {
    const dt = (s[i].t - s[i - 1].t) / 1000;
    if (dt <= 0) continue;
    out.push([s[i].t, Math.max(0, extract(s[i].m) - extract(s[i - 1].m)) / dt]);
  }
  return out;
}

/** Gauge series: [[t, value]]. */
function gaugeSeries(extract) {
  return state.samples.map((s) => [s.t, extract(s.m)]);
}

const isTrafficRoute = (labels) => !OWN_ROUTES.has(labels.http_route);

function routesSeen(m) {
  const routes = sumBy(m, "http_server_request_duration_seconds_count", "http_route", isTrafficRoute);
  return [...routes.entries()].sort((a, b) => b[1] - a[1]).map(([r]) => r);
}

// ---------------------------------------------------------------------------------------------------------------
// Charts: plain SVG

const SVG = "http://www.w3.org/2000/svg";

function el(name, attrs, text) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function fmt(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const a = Math.abs(v);
  if (a >= 1e9) return (v / 1e9).toFixed(1) + "G";
  if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (a >= 1e4) return (v / 1e3).toFixed(0) + "k";
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  if (a >= 1) return v.toFixed(2);
  if (a === 0) return "0";
  return v.toPrecision(2);
}

/** Counts and other whole numbers without decimals; the rest as [fmt] does. */
function fmtNumber(v) {
  return Number.isInteger(v) && Math.abs(v) < 1e4 ? String(v) : fmt(v);
}

function fmtBytes(v) {
  if (v >= 1 << 30) return (v / (1 << 30)).toFixed(2) + " GiB";
  if (v >= 1 << 20) return (v / (1 << 20)).toFixed(2) + " MiB";
  if (v >= 1 << 10) return (v / (1 << 10)).toFixed(1) + " KiB";
  return v.toFixed(0) + " B";
}

/** Draws `series` ([{name, points: [[t, v|null]]}]) over the last HISTORY_SECONDS into an <svg>. */
function lineChart(svg, series, options = {}) {
  const width = Math.max(200, svg.clientWidth || 400);
  const height = Math.max(100, svg.clientHeight || 150);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const left = 40, right = 8, top = 18, bottom = 16;
  const now = Date.now();
  // The axis spans the samples there are (at least a minute, at most HISTORY_SECONDS), so a new page is readable.
  const first = state.samples.length ? state.samples[0].t : now;
  const span = Math.min(HISTORY_SECONDS * 1000, Math.max(60000, now - first));
  const t0 = now - span;
  let max = options.min_max ?? 0;
  for (const s of series) for (const [, v] of s.points) if (v !== null && Number.isFinite(v) && v > max) max = v;
  if (max <= 0) max = 1;
  max = niceCeil(max);
  const x = (t) => left + ((t - t0) / (now - t0)) * (width - left - right);
  const y = (v) => top + (1 - v / max) * (height - top - bottom);
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    svg.appendChild(el("line", { class: "grid", x1: left, x2: width - right, y1: y(v), y2: y(v) }));
    svg.appendChild(el("text", { class: "axis", x: left - 4, y: y(v) + 3, "text-anchor": "end" }, (options.format || fmt)(v)));
  }
  const step = [10, 15, 30, 60].find((s) => span / 1000 / s <= 6) || 60;
  for (let ago = step; ago * 1000 <= span; ago += step) {
    const t = now - ago * 1000;
    if (x(t) < left + 10) break;
    svg.appendChild(el("text", { class: "axis", x: x(t), y: height - 3, "text-anchor": "middle" }, ago % 60 === 0 ? `-${ago / 60}m` : `-${ago}s`));
  }
  svg.appendChild(el("text", { class: "axis", x: width - right, y: height - 3, "text-anchor": "end" }, "now"));
  let legendX = left;
  series.forEach((s, i) => {
    const color = s.color || COLORS[i % COLORS.length];
    let d = "";
    let pen = false;
    for (const [t, v] of s.points) {
      if (t < t0 || v === null || !Number.isFinite(v)) { pen = false; continue; }
      d += `${pen ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
    }
    if (d) svg.appendChild(el("path", { class: "series", d, stroke: color }));
    const label = el("text", { class: "legend", x: legendX, y: 11, fill: color }, "● " + s.name);
    svg.appendChild(label);
    legendX += 20 + 6 * s.name.length;
  });
}

function niceCeil(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

// ---------------------------------------------------------------------------------------------------------------
// Panels

function setValue(id, value, text) {
  const e = document.getElementById(id);
  if (!e) return;
  e.dataset.value = String(value);
  e.textContent = text ?? fmtNumber(value);
}

function panel(layer) {
  return document.querySelector(`.panel[data-layer="${layer}"]`);
}

function renderTiming(m, before) {
  const routes = routesSeen(m);
  const select = document.getElementById("route-select");
  const options = [...select.options].map((o) => o.value);
  if (routes.join("\n") !== options.join("\n")) {
    select.replaceChildren(...routes.map((r) => new Option(r, r)));
    // Until someone picks a route, follow the busiest API route.
    if (!state.routeChosen && routes.length) state.selectedRoute = routes.find((r) => r.startsWith("/api/")) || routes[0];
    if (state.selectedRoute) select.value = state.selectedRoute;
  }
  const top = routes.slice(0, 6);
  lineChart(document.getElementById("chart-rps"), top.map((route) => ({
    name: route,
    points: rateSeries((sm) => sum(sm, "http_server_request_duration_seconds_count", { http_route: route })),
  })));
  const route = state.selectedRoute;
  const keep = (l) => l.http_route === route;
  const points = { p50: [], p95: [], p99: [] };
  const s = state.samples;
  for (let i = 1; i < s.length; i++) {
    let j = i;
    while (j > 0 && s[i].t - s[j].t < WINDOW_SECONDS * 1000) j--;
    const now = buckets(s[i].m, "http_server_request_duration_seconds", keep);
    const then = buckets(s[j].m, "http_server_request_duration_seconds", keep);
    for (const [name, q] of [["p50", 0.5], ["p95", 0.95], ["p99", 0.99]]) {
      const v = quantile(q, now, then);
      points[name].push([s[i].t, v === null ? null : v * 1000]);
    }
  }
  lineChart(document.getElementById("chart-latency"), [
    { name: "p50", points: points.p50 },
    { name: "p95", points: points.p95 },
    { name: "p99", points: points.p99 },
  ], { format: (v) => fmt(v) });
  const body = document.getElementById("routes-body");
  const dt = Math.max(1, (state.samples[state.samples.length - 1].t - before.t) / 1000);
  body.replaceChildren(...routes.map((r) => {
    const k = (l) => l.http_route === r;
    const now = buckets(m, "http_server_request_duration_seconds", k);
    const then = buckets(before.m, "http_server_request_duration_seconds", k);
    const total = sum(m, "http_server_request_duration_seconds_count", { http_route: r });
    const rps = (total - sum(before.m, "http_server_request_duration_seconds_count", { http_route: r })) / dt;
    const ms = (q) => { const v = quantile(q, now, then) ?? quantile(q, now, null); return v === null ? "–" : fmt(v * 1000) + " ms"; };
    const tr = document.createElement("tr");
    for (const text of [r, fmt(rps), ms(0.5), ms(0.95), ms(0.99), fmtNumber(total)]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.appendChild(td);
    }
    return tr;
  }));
}

function renderCache(m) {
  const results = sumBy(m, "tower_kit_cache_requests_total", "result");
  const get = (r) => results.get(r) || 0;
  const hits = get("hit") + get("coalesced") + get("revalidated");
  const lookups = [...results.entries()].filter(([r]) => r !== "bypass").reduce((a, [, v]) => a + v, 0);
  const ratio = lookups > 0 ? hits / lookups : 0;
  setValue("cache-hit-ratio", ratio, lookups > 0 ? (ratio * 100).toFixed(1) + " %" : "–");
  // What the store holds now (the demo's gauge, refreshed every second), not the running total written.
  const stored = sum(m, "demo_cache_store_bytes");
  setValue("cache-stored-bytes", stored, fmtBytes(stored));
  setValue("cache-hits", hits);
  setValue("cache-misses", get("miss"));
  setValue("cache-stale", get("stale"));
  setValue("cache-invalidations", sum(m, "tower_kit_cache_invalidations_total"));
  const names = ["hit", "miss", "stale", "coalesced", "revalidated"];
  lineChart(document.getElementById("chart-cache"), names
    .filter((r) => r === "hit" || r === "miss" || get(r) > 0)
    .map((r) => ({
      name: r,
      color: { hit: "#16a34a", miss: "#dc2626", stale: "#d97706" }[r],
      points: rateSeries((sm) => sum(sm, "tower_kit_cache_requests_total", { result: r })),
    })));
}

function renderRatelimit(m) {
  const admitted = sum(m, "tower_kit_ratelimit_requests_total", { outcome: "admitted" });
  const refused = sum(m, "tower_kit_ratelimit_requests_total", { outcome: "refused" });
  setValue("ratelimit-admitted", admitted);
  setValue("ratelimit-refused", refused);
  setValue("ratelimit-keys", sum(m, "tower_kit_ratelimit_keys"));
  const c = state.config && state.config.ratelimit;
  if (c) {
    document.getElementById("ratelimit-policy").textContent =
      `/api/* per client IP: ${c.limit} per ${c.window_seconds} s, burst ${c.burst}${c.dry_run ? " (dry run)" : ""}`;
  }
  lineChart(document.getElementById("chart-ratelimit"), [
    { name: "admitted/s", color: "#16a34a", points: rateSeries((sm) => sum(sm, "tower_kit_ratelimit_requests_total", { outcome: "admitted" })) },
    { name: "refused/s", color: "#dc2626", points: rateSeries((sm) => sum(sm, "tower_kit_ratelimit_requests_total", { outcome: "refused" })) },
  ]);
}

function renderConcurrency(m) {
  const limiters = [...sumBy(m, "tower_kit_concurrency_limit", "limiter").keys()].sort();
  setValue("concurrency-in-flight", sum(m, "tower_kit_concurrency_in_flight"));
  setValue("concurrency-queued", sum(m, "tower_kit_concurrency_queued"));
  setValue("concurrency-shed", sum(m, "tower_kit_concurrency_rejected_total"));
  setValue("concurrency-limit", sum(m, "tower_kit_concurrency_limit", { limiter: "global" }));
  document.getElementById("concurrency-limits").textContent = "limits: " + limiters
    .map((l) => `${l} ${fmtNumber(sum(m, "tower_kit_concurrency_limit", { limiter: l }))}`).join(", ");
  const series = [];
  for (const l of limiters) {
    series.push({ name: `${l} in flight`, points: gaugeSeries((sm) => sum(sm, "tower_kit_concurrency_in_flight", { limiter: l })) });
  }
  for (const l of limiters) {
    const shed = rateSeries((sm) => sum(sm, "tower_kit_concurrency_rejected_total", { limiter: l }));
    if (shed.some(([, v]) => v > 0)) series.push({ name: `${l} shed/s`, points: shed });
  }
  // An adaptive limit moves: draw it when it does.
  for (const l of limiters) {
    const limit = gaugeSeries((sm) => sum(sm, "tower_kit_concurrency_limit", { limiter: l }));
    if (new Set(limit.map(([, v]) => v)).size > 1) series.push({ name: `${l} limit`, points: limit });
  }
  lineChart(document.getElementById("chart-concurrency"), series.map((s, i) => ({ ...s, color: COLORS[i % COLORS.length] })));
}

function renderCompression(m) {
  const IN = "tower_kit_compression_bytes_in_total";
  const OUT = "tower_kit_compression_bytes_out_total";
  const COUNT = "tower_kit_compression_compressed_total";
  const bytesIn = sum(m, IN);
  const bytesOut = sum(m, OUT);
  setValue("compression-in", bytesIn, fmtBytes(bytesIn));
  setValue("compression-out", bytesOut, fmtBytes(bytesOut));
  setValue("compression-ratio", bytesIn > 0 ? bytesOut / bytesIn : 0, bytesIn > 0 ? (bytesOut / bytesIn).toFixed(3) : "–");
  setValue("compression-count", sum(m, COUNT));
  // Per coding (gzip, deflate, br, zstd), with the engine that produced it.
  const codingOf = (l) => (l.engine && l.engine !== l.coding ? `${l.coding || "?"} (${l.engine})` : l.coding || "?");
  const codings = new Map();
  for (const [name, field] of [[IN, "in"], [OUT, "out"], [COUNT, "n"]]) {
    for (const { labels, value } of m.get(name) || []) {
      const c = codingOf(labels);
      if (!codings.has(c)) codings.set(c, { in: 0, out: 0, n: 0 });
      codings.get(c)[field] += value;
    }
  }
  document.getElementById("codings-body").replaceChildren(...[...codings.entries()].sort().map(([c, v]) => {
    const tr = document.createElement("tr");
    for (const text of [c, fmtNumber(v.n), fmtBytes(v.in), fmtBytes(v.out), v.in > 0 ? (v.out / v.in).toFixed(3) : "–"]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.appendChild(td);
    }
    return tr;
  }));
  lineChart(document.getElementById("chart-compression"), [
    { name: "in B/s", color: "#2563eb", points: rateSeries((sm) => sum(sm, IN)) },
    { name: "out B/s", color: "#16a34a", points: rateSeries((sm) => sum(sm, OUT)) },
  ]);
}

function renderBatch(m) {
  const items = sum(m, "tower_kit_batch_items_sum");
  const batches = sum(m, "tower_kit_batch_items_count");
  setValue("batch-mean", batches > 0 ? items / batches : 0, batches > 0 ? fmt(items / batches) : "–");
  setValue("batch-queue", sum(m, "tower_kit_batch_queue_depth"));
  setValue("batch-count", batches);
  setValue("batch-overloaded", sum(m, "tower_kit_batch_overloaded_total"));
  const mean = [];
  const s = state.samples;
  for (let i = 1; i < s.length; i++) {
    let j = i;
    while (j > 0 && s[i].t - s[j].t < WINDOW_SECONDS * 1000) j--;
    const n = sum(s[i].m, "tower_kit_batch_items_count") - sum(s[j].m, "tower_kit_batch_items_count");
    const k = sum(s[i].m, "tower_kit_batch_items_sum") - sum(s[j].m, "tower_kit_batch_items_sum");
    mean.push([s[i].t, n > 0 ? k / n : null]);
  }
  lineChart(document.getElementById("chart-batch"), [
    { name: "mean batch size", color: "#7c3aed", points: mean },
    { name: "queue depth", color: "#d97706", points: gaugeSeries((sm) => sum(sm, "tower_kit_batch_queue_depth")) },
  ], { min_max: 2 });
}

const RENDERERS = {
  timing: renderTiming,
  cache: renderCache,
  ratelimit: renderRatelimit,
  concurrency: renderConcurrency,
  compression: renderCompression,
  batch: renderBatch,
};

function render() {
  const newest = state.samples[state.samples.length - 1];
  const before = sampleAgo(WINDOW_SECONDS);
  for (const [layer, draw] of Object.entries(RENDERERS)) {
    const p = panel(layer);
    if (state.config && state.config.layers[layer] === false) {
      p.dataset.state = "disabled";
      continue;
    }
    draw(newest.m, before);
    // "live" once there are two samples, so every rate has a value.
    p.dataset.state = state.samples.length >= 2 ? "live" : "waiting";
  }
}

async function refresh() {
  const status = document.getElementById("status");
  try {
    if (!state.config) {
      const r = await fetch("/dashboard/config.json", { cache: "no-store" });
      if (r.ok) state.config = await r.json();
    }
    const r = await fetch("/metrics", { cache: "no-store" });
    if (!r.ok) throw new Error(`/metrics answered ${r.status}`);
    const m = parseMetrics(await r.text());
    const t = Date.now();
    state.samples.push({ t, m });
    while (state.samples.length > 2 && t - state.samples[0].t > (HISTORY_SECONDS + WINDOW_SECONDS) * 1000) state.samples.shift();
    render();
    status.textContent = "live";
    status.className = "status ok";
  } catch (e) {
    // Shown on the page, not logged as an error: a restarting server is not a fault of the page.
    status.textContent = "cannot reach the server: " + (e && e.message ? e.message : e);
    status.className = "status err";
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Try it: bounded bursts

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function log(html) {
  const li = document.createElement("li");
  li.innerHTML = html;
  const list = document.getElementById("try-log");
  list.appendChild(li);
  list.scrollTop = list.scrollHeight;
  return li;
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

/**
 * One request with a deadline; resolves to {status, ms, headers} (status 0 when it failed or timed out).
 *
 * `cache: "no-store"` keeps the browser's own cache out of the way, but on its own it would also add
 * `Cache-Control: no-cache` to the request, which the server's cache honours by going to the origin. A
 * `Cache-Control` of our own (`max-stale=0`: no staleness accepted, which is the default anyway) stops the browser
 * adding it, so the server's cache answers as it would answer any client.
 */
async function timed(url, init = {}, timeoutMs = 10000) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  const start = performance.now();
  const headers = { "cache-control": "max-stale=0", ...(init.headers || {}) };
  try {
    const r = await fetch(url, { cache: "no-store", ...init, headers, signal: controller.signal });
    await r.arrayBuffer();
    return { status: r.status, ms: performance.now() - start, headers: r.headers };
  } catch (e) {
    return { status: 0, ms: performance.now() - start, headers: new Headers(), error: String(e) };
  } finally {
    clearTimeout(timer);
  }
}

function tally(results) {
  const counts = new Map();
  for (const r of results) counts.set(r.status, (counts.get(r.status) || 0) + 1);
  return [...counts.entries()].sort((a, b) => a[0] - b[0])
    .map(([s, n]) => `<span class="c${s}">${n}× ${s === 0 ? "failed" : s}</span>`).join(", ");
}

const cacheLine = (r) => `<span class="c${r.status}">${r.status}</span> ${escapeHtml(r.headers.get("x-cache") || "-")} ${r.ms.toFixed(0)} ms`;

const BURSTS = {
  // Three calls of the slow report: the first is a miss (about 300 ms), the next two are hits (about 1 ms).
  async cache() {
    const lines = [];
    for (let i = 0; i < 3; i++) lines.push(cacheLine(await timed("/api/report")));
    return `cache: GET /api/report ×3 → ${lines.join(" · ")}`;
  },
  // The list is cached; adding an item invalidates it, so the next read is a miss and the one after a hit.
  async invalidate() {
    const before = await timed("/api/items");
    const post = await timed("/api/items", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ name: "added from the dashboard", price_cents: 100 }),
    });
    const after = await timed("/api/items");
    const again = await timed("/api/items");
    return `invalidate: GET ${cacheLine(before)} · POST <span class="c${post.status}">${post.status}</span> · ` +
      `GET ${cacheLine(after)} · GET ${cacheLine(again)}`;
  },
  // More concurrent calls than /api/slow admits (and no queue): the rest are shed with 503 at once.
  async shed() {
    const slots = (state.config && state.config.concurrency.slow_max_in_flight) || 4;
    const n = Math.min(10, slots + 6);
    const results = await Promise.all(Array.from({ length: n }, () => timed("/api/slow?ms=1500", {}, 8000)));
    return `shed: ${n} concurrent GET /api/slow?ms=1500 → ${tally(results)}`;
  },
  // One client, one key: calls until the first 429 (at most 60 calls or 6 seconds).
  async ratelimit() {
    const results = [];
    const deadline = performance.now() + 6000;
    let refused = null;
    while (results.length < 60 && performance.now() < deadline) {
      const r = await timed("/api/items/1", {}, 3000);
      results.push(r);
      if (r.status === 429) { refused = r; break; }
    }
    const after = refused
      ? `429 after ${results.length - 1} admitted; retry-after: ${escapeHtml(refused.headers.get("retry-after") || "-")} s, ` +
        `ratelimit: ${escapeHtml(refused.headers.get("ratelimit") || "-")}`
      : "no 429 (is the rate limit disabled or in dry run?)";
    return `rate limit: GET /api/items/1 ×${results.length} → ${tally(results)}; ${after}`;
  },
};

async function run(names) {
  if (state.busy) return;
  state.busy = true;
  const buttons = document.querySelectorAll(".buttons button");
  buttons.forEach((b) => { b.disabled = true; });
  try {
    for (let i = 0; i < names.length; i++) {
      // Between bursts, give the rate limiter's bucket a moment to refill (the bursts share this browser's quota).
      if (i > 0) await sleep(2500);
      const li = log(`${names[i]}: running…`);
      li.innerHTML = await BURSTS[names[i]]();
      li.dataset.burst = names[i];
      li.dataset.done = "1";
    }
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
    state.busy = false;
  }
}

function start() {
  for (const name of Object.keys(BURSTS)) {
    document.getElementById(`try-${name}`).addEventListener("click", () => run([name]));
  }
  // The rate-limit burst runs last: its 429s would refuse the bursts after it.
  document.getElementById("try-all").addEventListener("click", () => run(["cache", "invalidate", "shed", "ratelimit"]));
  document.getElementById("route-select").addEventListener("change", (e) => {
    state.selectedRoute = e.target.value;
    state.routeChosen = true;
    if (state.samples.length) render();
  });
  window.addEventListener("resize", () => { if (state.samples.length) render(); });
  refresh();
  setInterval(refresh, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", start);
