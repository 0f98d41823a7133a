/**
 * The dashboard at `/`: one self-contained page (inline CSS and script, SVG drawn by the
 * script, nothing fetched but `/status` from the same origin). It refreshes itself every
 * `REFRESH_MS`. A token, when the server needs one, is read from the URL fragment
 * (`/#token=...`), which the browser never sends, and passed as a bearer header.
 *
 * Every figure carries a `data-field` attribute naming where in `/status` it comes from, so
 * a test can compare the page with the JSON.
 */

export const REFRESH_MS = 1_000;

const PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Cairn</title>
<meta name="viewport" content="width=device-width,initial-scale=1">
<style>
body{font:14px system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1c2230}
header{background:#1c2230;color:#fff;padding:10px 18px;display:flex;gap:18px;align-items:baseline}
header h1{font-size:18px;margin:0}main{padding:14px 18px;display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:14px}
section{background:#fff;border:1px solid #dde1e8;border-radius:6px;padding:10px 14px}h2{font-size:14px;margin:0 0 8px;color:#4a5368}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:3px 6px;border-bottom:1px solid #eef0f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
#alert{display:none;margin:14px 18px 0;padding:10px 14px;border-radius:6px;background:#fde2e1;border:1px solid #e5534b;color:#8a1c17;font-weight:600}
#alert.on{display:block}.ok{color:#1a7f37}.bad{color:#cf222e}svg{width:100%;height:120px}.muted{color:#6b7385;font-size:12px}
</style></head><body>
<header><h1>Cairn</h1><span data-field="dir" id="dir"></span><span>seq <b data-field="lastSeq" id="seq"></b></span>
<span>health <b id="health" data-field="health.ok"></b></span><span class="muted" id="updated"></span></header>
<div id="alert" role="alert" data-field="health.reasons"></div>
<main>
<section><h2>Collections</h2><table id="collections"><thead><tr><th>name</th><th>dim</th><th>metric</th><th>rows</th></tr></thead><tbody></tbody></table></section>
<section><h2>Commits per second</h2><svg id="rate" viewBox="0 0 400 120" preserveAspectRatio="none"></svg><div class="muted">now <span id="rate-now"></span>/s · total <span data-field="engine.commits" id="commits"></span></div></section>
<section><h2>fsync latency (mean per interval, ms)</h2><svg id="fsync" viewBox="0 0 400 120" preserveAspectRatio="none"></svg><div class="muted">now <span id="fsync-now"></span> ms · fsyncs <span data-field="engine.fsync.count" id="fsyncs"></span></div></section>
<section><h2>Recoverable range</h2><svg id="range" viewBox="0 0 400 60" preserveAspectRatio="none"></svg>
<div class="muted">from seq <span data-field="recoverableRange.from.seq" id="range-from"></span> to <span data-field="recoverableRange.to.seq" id="range-to"></span> · snapshots <span data-field="snapshots.length" id="snapshots"></span> · backup targets <span data-field="backups.length" id="backups"></span></div></section>
<section><h2>Scrubs</h2><table id="scrubs"><thead><tr><th>finished</th><th>bytes</th><th>corrupt</th><th>repaired</th><th>unrepaired</th></tr></thead><tbody></tbody></table></section>
<section><h2>Replication</h2><div id="repl-role" data-field="replication.role" class="muted">no replication</div><table id="replicas"><thead><tr><th>replica</th><th>state</th><th>lag records</th><th>lag ms</th></tr></thead><tbody></tbody></table></section>
</main>
<script>
"use strict";
const token = new URLSearchParams(location.hash.slice(1)).get("token");
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => "&#" + c.charCodeAt(0) + ";");
function rows(tbody, list, cells) {
  tbody.innerHTML = list.map((x) => "<tr>" + cells(x).map((c) => "<td" + (typeof c === "number" ? ' class="n"' : "") + ">" + esc(c) + "</td>").join("") + "</tr>").join("");
}
function line(svg, points, color) {
  if (points.length < 2) { svg.innerHTML = '<text x="8" y="60" fill="#6b7385" font-size="12">collecting…</text>'; return; }
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y1 = Math.max(...ys, 1e-9);
  const px = (x) => ((x - x0) / Math.max(x1 - x0, 1)) * 396 + 2, py = (y) => 116 - (y / y1) * 110;
  svg.innerHTML = '<polyline fill="none" stroke="' + color + '" stroke-width="2" vector-effect="non-scaling-stroke" points="' +
    points.map((p) => px(p[0]).toFixed(1) + "," + py(p[1]).toFixed(1)).join(" ") + '"/><text x="4" y="12" fill="#6b7385" font-size="11">max ' + y1.toPrecision(3) + "</text>";
}
function deltas(samples, f) {
  const out = [];
  for (let i = 1; i < samples.length; i++) { const a = samples[i - 1], b = samples[i]; const v = f(a, b); if (v !== null) out.push([b.time, v]); }
  return out;
}
function timeline(s) {
  const svg = $("range");
  if (!s.recoverableRange) { svg.innerHTML = ""; return; }
  const t0 = Date.parse(s.recoverableRange.from.time), t1 = Date.parse(s.recoverableRange.to.time);
  const px = (t) => ((t - t0) / Math.max(t1 - t0, 1)) * 380 + 10;
  let g = '<rect x="10" y="24" width="380" height="12" fill="#cfe3ff" rx="3"/>';
  for (const sn of s.snapshots) g += '<rect class="snap" x="' + px(Date.parse(sn.time)).toFixed(1) + '" y="16" width="3" height="28" fill="#1f6feb"><title>snapshot ' + esc(sn.id) + "</title></rect>";
  for (const b of s.backups) if (b.lastGood) g += '<circle class="backup" cx="' + px(Date.parse(b.lastGood.time)).toFixed(1) + '" cy="50" r="4" fill="#1a7f37"><title>backup ' + esc(b.target) + "</title></circle>";
  svg.innerHTML = g;
}
async function refresh() {
  try {
    const r = await fetch("/status", { headers: token ? { authorization: "Bearer " + token } : {}, cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    const s = await r.json();
    $("dir").textContent = s.dir;
    $("seq").textContent = s.lastSeq;
    $("health").textContent = s.health.ok ? "ok" : "unhealthy";
    $("health").className = s.health.ok ? "ok" : "bad";
    $("alert").textContent = s.health.reasons.join(" · ");
    $("alert").className = s.health.ok ? "" : "on";
    rows($("collections").tBodies[0], s.collections, (c) => [c.name, c.dim, c.metric, c.count]);
    $("commits").textContent = s.engine.commits;
    $("fsyncs").textContent = s.engine.fsync.count;
    const rate = deltas(s.samples, (a, b) => ((b.commits - a.commits) * 1000) / Math.max(b.time - a.time, 1));
    line($("rate"), rate, "#1f6feb");
    $("rate-now").textContent = rate.length ? rate[rate.length - 1][1].toFixed(1) : "–";
    const fs = deltas(s.samples, (a, b) => (b.fsyncCount > a.fsyncCount ? ((b.fsyncSeconds - a.fsyncSeconds) / (b.fsyncCount - a.fsyncCount)) * 1000 : null));
    line($("fsync"), fs, "#bf8700");
    $("fsync-now").textContent = fs.length ? fs[fs.length - 1][1].toFixed(3) : "–";
    $("range-from").textContent = s.recoverableRange ? s.recoverableRange.from.seq : "–";
    $("range-to").textContent = s.recoverableRange ? s.recoverableRange.to.seq : "–";
    $("snapshots").textContent = s.snapshots.length;
    $("backups").textContent = s.backups.length;
    timeline(s);
    rows($("scrubs").tBodies[0], s.scrubs.slice().reverse(), (x) => [x.time, x.bytes, x.corrupt, x.repaired, x.unrepaired + x.unreadableRecords]);
    $("repl-role").textContent = s.replication ? "role " + (s.replication.role || "?") : "no replication";
    rows($("replicas").tBodies[0], (s.replication && s.replication.replicas) || [], (x) => [x.nodeId, x.state, x.lagRecords ?? "", x.lagMs ?? ""]);
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.seq = s.lastSeq;
  } catch (e) {
    $("alert").textContent = "cannot read /status: " + e.message;
    $("alert").className = "on";
  }
}
refresh();
setInterval(refresh, ${REFRESH_MS});
</script></body></html>
`;

export function dashboardHtml(): string {
  return PAGE;
}
