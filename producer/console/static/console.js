// The console's pages: no framework, no build, nothing from another host (live.js keeps them live).
"use strict";

// Times in the browser's own zone: <time datetime="ISO"> and <time data-ms="unix ms">; a
// <time class="age"> says how long ago instead (kept current), with the time as its title.
function localTimes(root) {
  for (const el of root.querySelectorAll("time[datetime], time[data-ms]")) {
    const raw = el.dataset.ms ? Number(el.dataset.ms) : el.getAttribute("datetime");
    const when = new Date(raw);
    if (isNaN(when)) continue;
    el.title = when.toLocaleString();
    el.textContent = el.classList.contains("age") ? age(when) : when.toLocaleString();
  }
}

function age(when) {
  const s = Math.max(0, Math.floor((Date.now() - when.getTime()) / 1000));
  for (const [unit, size] of [["d", 86400], ["h", 3600], ["min", 60]]) {
    if (s >= size) return `${Math.floor(s / size)} ${unit} ago`;
  }
  return s < 10 ? "just now" : `${s} s ago`;
}

function ages() {
  setInterval(() => {
    for (const el of document.querySelectorAll("time.age[datetime]")) {
      const when = new Date(el.getAttribute("datetime"));
      if (!isNaN(when)) el.textContent = age(when);
    }
  }, 15000);
}
window.consoleTimes = localTimes;

// The search's dates are days of the browser's zone: the form says which zone.
function searchZone() {
  const tz = document.getElementById("tz");
  if (tz) tz.value = String(new Date().getTimezoneOffset());
}

// The submit form shows (and sends) only the chosen model's fields.
function modelFields() {
  const select = document.getElementById("model_id");
  if (!select) return;
  const show = () => {
    for (const set of document.querySelectorAll("fieldset.model-fields")) {
      const mine = set.dataset.model === select.value;
      set.hidden = !mine;
      set.disabled = !mine;
    }
  };
  select.addEventListener("change", show);
  show();
}

// The operator's quota chart over the last half hour: effective rate per model (lines),
// throttles in the last minute (bars) and jobs waiting (dashed). It opens with the samples the
// fleet kept (every 10 s), then adds its own every 2 s.
function quotaChart() {
  const svg = document.getElementById("quota-chart");
  if (!svg) return;
  const NS = "http://www.w3.org/2000/svg";
  const W = 600, H = 200, PAD = 24, WINDOW_MS = 30 * 60 * 1000;
  const colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf"];
  const series = new Map();
  // Models with work (calls, throttles or jobs waiting) at any sample are drawn; with none,
  // the first model is.
  const active = new Set();
  let now = Date.now();
  const el = (name, attrs, text) => {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text) node.textContent = text;
    return node;
  };
  const add = (model, p) => {
    const points = series.get(model) || [];
    if (points.length && points[points.length - 1].at >= p.at) return;
    points.push(p);
    while (points.length && points[0].at < now - WINDOW_MS) points.shift();
    series.set(model, points);
    if (p.calls || p.throttles || p.waiting) active.add(model);
  };
  const draw = () => {
    svg.replaceChildren();
    svg.append(el("line", { x1: PAD, y1: H - PAD, x2: W, y2: H - PAD, stroke: "#888" }));
    svg.append(el("text", { x: PAD, y: H - 8, "font-size": 10 }, "30 min ago"));
    svg.append(el("text", { x: W - 24, y: H - 8, "font-size": 10 }, "now"));
    let top = 1;
    for (const points of series.values()) for (const p of points) top = Math.max(top, p.configured, p.rate, p.waiting);
    svg.append(el("text", { x: 2, y: 12, "font-size": 10 }, `${Math.round(top)}`));
    top *= 1.15; // headroom: a line at the quota stays below the labels
    let index = 0;
    const shown = [...series].filter(([model]) => active.has(model));
    for (const [model, points] of shown.length ? shown : [...series].slice(0, 1)) {
      const colour = colours[index++ % colours.length];
      const x = (p) => W - ((W - PAD) * (now - p.at)) / WINDOW_MS;
      const y = (v) => H - PAD - ((H - 2 * PAD) * v) / top;
      for (const p of points) {
        if (p.throttles > 0) {
          svg.append(el("rect", { x: x(p) - 2, y: y(p.throttles), width: 4, height: H - PAD - y(p.throttles), fill: colour, opacity: 0.4 }));
        }
      }
      svg.append(el("polyline", {
        points: points.map((p) => `${x(p)},${y(p.rate)}`).join(" "),
        fill: "none", stroke: colour, "stroke-width": 2, "data-model": model, "data-points": points.length,
      }));
      if (points.some((p) => p.waiting > 0)) {
        svg.append(el("polyline", {
          points: points.map((p) => `${x(p)},${y(p.waiting)}`).join(" "),
          fill: "none", stroke: colour, "stroke-width": 1, "stroke-dasharray": "4 3", "data-waiting": model,
        }));
      }
      svg.append(el("text", { x: PAD + 4, y: 14 + 12 * index, "font-size": 10, fill: colour }, model));
    }
  };
  const sample = (history) => {
    fetch(svg.dataset.source + (history ? "?history=1" : ""), { credentials: "same-origin" })
      .then((r) => (r.ok ? r.json() : Promise.reject(r.status)))
      .then((data) => {
        now = data.at_ms;
        for (const [model, kept] of Object.entries(data.history || {})) {
          for (const k of kept) {
            add(model, { at: k.at_ms, rate: k.effective_rpm, configured: k.configured_rpm, throttles: k.throttles_last_minute, calls: k.calls_last_minute, waiting: k.waiting });
          }
          svg.dataset.kept = String((Number(svg.dataset.kept) || 0) + kept.length);
        }
        for (const m of data.models) {
          add(m.model_id, { at: data.at_ms, rate: m.effective_rpm, configured: m.configured_rpm, throttles: m.throttles_last_minute, calls: m.calls_last_minute, waiting: m.waiting });
        }
        svg.dataset.samples = String((Number(svg.dataset.samples) || 0) + 1);
        draw();
      })
      .catch(() => {});
  };
  sample(true);
  setInterval(() => sample(false), 2000);
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  ages();
  searchZone();
  modelFields();
  quotaChart();
});
