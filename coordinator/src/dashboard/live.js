// cwbench live view: reads the coordinator's Server-Sent Events and draws
// what report.html draws (same palette, axes and chart layout as
// coordinator/src/chart.rs), one section per profile. No external resource.
"use strict";

// PALETTE and HOST_LINES_MAX are set by the page before this script.
const MAX_POINTS = 600; // per host and chart: older points scroll away
const W = 660;
const FONT = "system-ui,-apple-system,'Segoe UI',Roboto,'Liberation Sans','DejaVu Sans',Arial,sans-serif";

const $ = (id) => document.getElementById(id);
let run = null;
let ended = false;
const profiles = []; // per profile: {el, rows, series, marks, finals, bySeq, dirty}

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

// Number formats of coordinator/src/report (fmt_us, fmt_rate) and chart.rs (num, si).
function fmtUs(us) {
  if (us < 1000) return us + "µs";
  if (us < 1e6) return (us / 1000).toFixed(1) + "ms";
  return (us / 1e6).toFixed(2) + "s";
}
function fmtRate(r) {
  if (r >= 1e6) return (r / 1e6).toFixed(2) + "M";
  if (r >= 1e4) return (r / 1e3).toFixed(1) + "k";
  return r.toFixed(0);
}
function num(v) {
  if (Number.isInteger(v) && Math.abs(v) < 1e15) return String(v);
  return v.toFixed(3).replace(/0+$/, "").replace(/\.$/, "");
}
function si(v) {
  if (v >= 1e6) return num(Math.round(v / 1e6 * 100) / 100) + "M";
  if (v >= 1e3) return num(Math.round(v / 1e3 * 10) / 10) + "k";
  return num(v);
}
function niceStep(raw) {
  if (!(isFinite(raw) && raw > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  const m = raw / p;
  const k = m <= 1 ? 1 : m <= 2 ? 2 : m <= 2.5 ? 2.5 : m <= 5 ? 5 : 10;
  return k * p;
}
function axisFromZero(label, max, fmt) {
  if (!(isFinite(max) && max > 0)) max = 1;
  const step = niceStep(max / 5);
  const top = Math.ceil(max / step) * step;
  const n = Math.round(top / step);
  const ticks = [];
  for (let k = 0; k <= n; k++) ticks.push([k * step, fmt(k * step)]);
  return { label, max: top, ticks };
}
function latencyUnit(maxUs) {
  if (maxUs >= 1e6) return [1e6, "s"];
  if (maxUs >= 1e3) return [1e3, "ms"];
  return [1, "µs"];
}
function color(i) { return PALETTE[i % PALETTE.length]; }
function shorten(s, max) {
  const c = Array.from(s);
  return c.length <= max ? s : c.slice(0, max - 1).join("") + "…";
}
function textW(s, size) { return Array.from(s).length * size * 0.58; }

// A line chart as chart::line_chart draws it: legend rows, grid, axes,
// dashed markers under the series, polylines with dots up to 80 points.
function lineChart(title, xLabel, yLabel, series, markers, yFmt, scaleUs) {
  let maxX = 0, maxY = 0;
  for (const s of series) for (const [x, y] of s.points) { maxX = Math.max(maxX, x); maxY = Math.max(maxY, y); }
  let div = 1, unit = "";
  if (scaleUs) { [div, unit] = latencyUnit(Math.max(maxY, 1)); yLabel += " (" + unit + ")"; }
  const xa = axisFromZero(xLabel, maxX, num);
  const ya = axisFromZero(yLabel, maxY / div, yFmt);
  const left = 78, right = W - 24;
  let leg = "", lx = left, ly = 46;
  for (const s of series) {
    const name = shorten(s.name, 48);
    const w = 22 + textW(name, 12) + 18;
    if (lx > left && lx + w > right) { lx = left; ly += 18; }
    leg += `<g class="legend-item"><rect x="${lx.toFixed(1)}" y="${(ly - 5).toFixed(1)}" width="14" height="4" rx="1" fill="${s.color}"/><text x="${(lx + 20).toFixed(1)}" y="${ly.toFixed(1)}" font-size="12" fill="#333">${esc(name)}</text></g>`;
    lx += w;
  }
  const legH = series.length ? ly - 46 + 18 : 0;
  const top = 46 + legH + 6, plotH = 250, bottom = top + plotH, h = bottom + 52;
  const px = (v) => left + Math.min(Math.max(v / xa.max, 0), 1) * (right - left);
  const py = (v) => bottom - Math.min(Math.max(v / ya.max, 0), 1) * plotH;
  let o = `<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${h.toFixed(0)}" role="img" aria-label="${esc(title)}" font-family="${FONT}"><title>${esc(title)}</title><rect width="${W}" height="${h.toFixed(0)}" fill="#fff"/><text x="16" y="24" font-size="15" font-weight="600" fill="#111">${esc(title)}</text>` + leg;
  for (const [v, l] of ya.ticks) {
    const y = py(v);
    o += `<line x1="${left}" y1="${y.toFixed(1)}" x2="${right}" y2="${y.toFixed(1)}" stroke="#e6e6e6"/><text x="${left - 8}" y="${(y + 4).toFixed(1)}" font-size="11" fill="#555" text-anchor="end">${esc(l)}</text>`;
  }
  for (const [v, l] of xa.ticks) {
    const x = px(v).toFixed(1);
    o += `<line x1="${x}" y1="${top}" x2="${x}" y2="${bottom}" stroke="#f0f0f0"/><line x1="${x}" y1="${bottom}" x2="${x}" y2="${bottom + 5}" stroke="#555"/><text x="${x}" y="${bottom + 18}" font-size="11" fill="#555" text-anchor="middle">${esc(l)}</text>`;
  }
  o += `<line x1="${left}" y1="${bottom}" x2="${right}" y2="${bottom}" stroke="#555"/><line x1="${left}" y1="${top}" x2="${left}" y2="${bottom}" stroke="#555"/>`;
  o += `<text x="${((left + right) / 2).toFixed(1)}" y="${bottom + 40}" font-size="12" fill="#333" text-anchor="middle">${esc(xa.label)}</text><text transform="translate(18 ${((top + bottom) / 2).toFixed(1)}) rotate(-90)" font-size="12" fill="#333" text-anchor="middle">${esc(ya.label)}</text>`;
  for (const [x, c] of markers) {
    const mx = px(x).toFixed(1);
    o += `<line class="marker" x1="${mx}" y1="${top}" x2="${mx}" y2="${bottom}" stroke="${c}" stroke-width="1" stroke-dasharray="3 3" opacity="0.4"/>`;
  }
  for (const s of series) {
    const pts = s.points.map(([x, y]) => px(x).toFixed(1) + "," + py(y / div).toFixed(1));
    o += `<g class="series"><title>${esc(s.name)}</title><polyline fill="none" stroke="${s.color}" stroke-width="2.2" stroke-linejoin="round" stroke-linecap="round" points="${pts.join(" ")}"/>`;
    if (pts.length <= 80) for (const p of pts) {
      const [cx, cy] = p.split(",");
      o += `<circle cx="${cx}" cy="${cy}" r="2.8" fill="${s.color}" stroke="#fff" stroke-width="0.8"/>`;
    }
    o += "</g>";
  }
  return o + "</svg>";
}

const COLUMNS = [
  ["status", "status", false], ["t", "t (s)", true], ["done", "jobs done", true],
  ["tput", "jobs/s", true], ["p50", "p50", true], ["p99", "p99", true],
  ["late", "lateness p99", true], ["queue", "queue", true], ["crashed", "crashed", true],
  ["timed_out", "timed out", true], ["shed", "shed", true], ["cancelled", "cancelled", true],
  ["faults", "faults", true],
];

function onRun(r) {
  if (run && run.run_id !== r.run_id) location.reload();
  run = r;
  document.title = "cwbench live: run " + r.run_id;
  $("title").textContent = "cwbench live: run " + r.run_id;
  $("facts").textContent = `scenario ${r.scenario} · ${r.hosts.length} host(s) · ${r.profiles.length} profile(s) · a snapshot every ${r.snapshot_interval_ms} ms · cwbench ${r.version}`;
  setState("waiting for the first profile");
}

function section(pi) {
  if (profiles[pi]) return profiles[pi];
  const el = document.createElement("section");
  el.id = "profile-" + pi;
  const head = COLUMNS.map(([k, t, n]) => `<th${n ? ' class="num"' : ""}>${esc(t)}</th>`).join("");
  el.innerHTML = `<h2>Profile ${pi + 1}: ${esc(run.profiles[pi] || "")} <span class="pstate">running</span></h2><div class="scroll"><table><thead><tr><th>host</th>${head}</tr></thead><tbody></tbody></table></div><p class="note">Running hosts show their last snapshot interval (jobs/s, p50, p99, lateness, queue depth) and their counts so far; a finished host (row in bold) shows its whole-run figures, as report.html and result.json have them.</p><div class="grid"><div class="card" data-chart="tput"></div><div class="card" data-chart="p99"></div><div class="card" data-chart="late"></div><div class="card" data-chart="queue"></div></div>`;
  $("profiles").appendChild(el);
  profiles[pi] = { el, rows: new Map(), series: new Map(), marks: new Map(), crashed: new Map(), bySeq: new Map(), dirty: false };
  return profiles[pi];
}

function row(p, pi, h) {
  let tr = p.rows.get(h);
  if (tr) return tr;
  tr = document.createElement("tr");
  tr.dataset.profile = pi;
  tr.dataset.host = run.hosts[h];
  tr.innerHTML = `<td><span class="swatch" style="background:${color(h)}"></span>${esc(run.hosts[h])}</td>` + COLUMNS.map(([k, , n]) => `<td data-k="${k}"${n ? ' class="num"' : ""}></td>`).join("");
  const body = p.el.querySelector("tbody");
  const after = [...body.children].find((r) => run.hosts.indexOf(r.dataset.host) > h);
  body.insertBefore(tr, after || null);
  p.rows.set(h, tr);
  return tr;
}

function fill(tr, cells) {
  for (const [k, v] of Object.entries(cells)) tr.querySelector(`td[data-k="${k}"]`).textContent = v;
}

function onProfile(d) {
  section(d.profile);
  setState(`running profile ${d.profile + 1} of ${run.profiles.length}`);
}

function onSnapshot(d) {
  const p = section(d.profile);
  const tr = row(p, d.profile, d.host);
  if (tr.dataset.final) return;
  fill(tr, {
    status: "running", t: d.t_s.toFixed(1), done: String(d.done), tput: fmtRate(d.jobs_per_s),
    p50: d.p50_us ? fmtUs(d.p50_us) : "—", p99: d.p99_us ? fmtUs(d.p99_us) : "—",
    late: fmtUs(d.lateness_p99_us), queue: String(d.queue_depth), crashed: String(d.crashed),
    timed_out: String(d.timed_out), shed: String(d.shed), cancelled: String(d.cancelled),
  });
  let s = p.series.get(d.host);
  if (!s) { s = []; p.series.set(d.host, s); }
  s.push({ t: d.t_s, tput: d.jobs_per_s, p99: d.p99_us, late: d.lateness_p99_us, queue: d.queue_depth });
  if (s.length > MAX_POINTS) s.shift();
  // Live fault markers: an interval in which the host's crash count rose.
  const before = p.crashed.get(d.host);
  if (before !== undefined && d.crashed > before) {
    let m = p.marks.get(d.host);
    if (!m) { m = []; p.marks.set(d.host, m); }
    m.push(d.t_s);
    if (m.length > 256) m.shift();
  }
  p.crashed.set(d.host, d.crashed);
  if (run.hosts.length > HOST_LINES_MAX) {
    let b = p.bySeq.get(d.seq);
    if (!b) {
      b = { t: [], tput: [], p99: [], late: [], queue: [] };
      p.bySeq.set(d.seq, b);
      if (p.bySeq.size > MAX_POINTS) p.bySeq.delete(p.bySeq.keys().next().value);
    }
    b.t.push(d.t_s); b.tput.push(d.jobs_per_s); b.p99.push(d.p99_us); b.late.push(d.lateness_p99_us); b.queue.push(d.queue_depth);
  }
  p.dirty = true;
}

function onHost(d) {
  const p = section(d.profile);
  const tr = row(p, d.profile, d.host);
  tr.dataset.final = "1";
  tr.className = d.status === "ok" ? "final" : "final bad";
  fill(tr, {
    status: d.status, tput: d.shown.jobs_per_s, p50: d.shown.p50, p99: d.shown.p99,
    late: d.shown.lateness_p99, queue: "—", crashed: String(d.crashed), timed_out: String(d.timed_out),
    shed: String(d.shed), cancelled: String(d.cancelled), faults: String(d.faults),
    done: String(d.completed + d.crashed + d.timed_out + d.shed + d.cancelled),
  });
  if (d.error) tr.title = d.error;
  // The fault events the agent reported replace the live crash markers.
  p.marks.set(d.host, d.marks.map((m) => m.t_s));
  if ([...p.rows.values()].every((r) => r.dataset.final) && p.rows.size === run.hosts.length) {
    p.el.querySelector(".pstate").textContent = "done";
  }
  p.dirty = true;
}

function onEnd(d) {
  ended = true;
  const box = $("end");
  let h = "";
  if (d.error) h += `<p><strong>The run did not finish:</strong> ${esc(d.error)}</p>`;
  else h += `<p><strong>The run is over${d.interrupted ? " (interrupted by " + esc(d.interrupted) + ")" : ""}.</strong></p>`;
  if (d.report) h += `<p>Report: <a id="report-link" href="${esc(d.report)}">report.html</a>${d.dir ? " — written to <code>" + esc(d.dir) + "</code>" : ""}</p>`;
  if (d.warnings.length) h += "<ul class=\"warn\">" + d.warnings.map((w) => `<li>${esc(w)}</li>`).join("") + "</ul>";
  box.innerHTML = h;
  box.hidden = false;
  setState(d.error ? "failed" : "finished");
  document.body.dataset.ended = "1";
}

function setState(s) {
  $("state").textContent = s;
}

// Charts: one line per host, or min / median / max across hosts per
// interval when there are more than HOST_LINES_MAX (as report.html leaves
// its per-host charts out past that).
function draw(p) {
  const hostsN = run.hosts.length;
  const markers = [];
  for (const [h, ts] of p.marks) for (const t of ts) markers.push([t, color(h)]);
  const charts = [
    ["tput", "Throughput over time (per snapshot interval)", "measured jobs completed (jobs/s)", si, false],
    ["p99", "p99 completion latency over time (per snapshot interval)", "p99 completion latency", num, true],
    ["late", "Scheduler lateness over time (probe p99 per interval)", "probe wake lateness p99", num, true],
    ["queue", "Queue depth over time (at each snapshot)", "jobs queued", si, false],
  ];
  for (const [k, title, yLabel, fmt, us] of charts) {
    let series;
    if (hostsN <= HOST_LINES_MAX) {
      series = [...p.series.entries()].sort((a, b) => a[0] - b[0]).map(([h, pts]) => ({
        name: run.hosts[h], color: color(h),
        points: pts.filter((q) => k !== "p99" || q.p99 > 0).map((q) => [q.t, q[k]]),
      }));
    } else {
      const stats = [["min host", 0, 0], ["median host", 0.5, 1], ["max host", 1, 2]];
      series = stats.map(([name, q, c]) => ({
        name, color: color(c),
        // Intervals with no completion have no p99 (as per host).
        points: [...p.bySeq.values()].flatMap((b) => {
          const v = b[k].filter((x) => k !== "p99" || x > 0).sort((x, y) => x - y);
          const t = [...b.t].sort((x, y) => x - y);
          return v.length ? [[t[Math.floor((t.length - 1) / 2)], v[Math.round((v.length - 1) * q)]]] : [];
        }),
      }));
    }
    const svg = lineChart(title + (hostsN > HOST_LINES_MAX ? ", across " + hostsN + " hosts" : ""),
      "time since the host's run started (s)", yLabel, series, hostsN <= HOST_LINES_MAX ? markers : [], fmt, us);
    p.el.querySelector(`[data-chart="${k}"]`).innerHTML = svg;
  }
  p.dirty = false;
}

function redraw() {
  for (const p of profiles) if (p && p.dirty) draw(p);
}

const handlers = { run: onRun, profile: onProfile, snapshot: onSnapshot, host: onHost, end: onEnd };
const es = new EventSource("events");
for (const [name, f] of Object.entries(handlers)) {
  es.addEventListener(name, (e) => {
    if (!run && name !== "run") return;
    f(JSON.parse(e.data));
    document.body.dataset.lastEventId = e.lastEventId;
    if (name === "end") {
      // The run is over: no reconnecting.
      es.close();
      redraw();
    }
  });
}
es.onerror = () => {
  if (!ended) setState(es.readyState === EventSource.CLOSED ? "disconnected (reload to retry)" : "reconnecting…");
};
setInterval(redraw, 250);
