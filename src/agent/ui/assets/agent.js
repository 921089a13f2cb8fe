// The agent's page (/ui): members, events, charts, coordinates and chaos of this node, live.
"use strict";

(() => {
  const { api, stream, el, $, notice, setLive, ago, clock, chart, COLORS } = dc;
  const SPAN = 5 * 60 * 1000;          // charts show the last five minutes
  const EVENTS_KEPT = 300;
  const ROWS_SHOWN = 500;              // a 10,000-member table is filtered, not drawn whole
  const TEXT_SHOWN = 200;              // characters of an event's payload shown
  const loaded = Date.now();

  let self = null;                     // /v1/self
  let members = [];                    // /v1/members rows
  const since = new Map();             // name -> {state, incarnation, t, seen_change}
  const series = {};                   // chart name -> [{name, color, points}]
  let previous = null;                 // last metrics sample {t, m, rejected}
  let firstSample = null;              // time of the first metrics sample
  let chaos = null;
  let streamAbort = null;
  let streamGen = 0;                   // a newer follower ends the older one
  let authFailed = false;

  // --- members ----------------------------------------------------------------------------

  function track(rows) {
    const now = Date.now();
    // Only members still in the table: a reaped member's entry goes.
    const present = new Set(rows.map((r) => r.name));
    for (const name of since.keys()) if (!present.has(name)) since.delete(name);
    for (const r of rows) {
      const s = since.get(r.name);
      if (!s) since.set(r.name, { state: r.state, incarnation: r.incarnation, t: now, changed: false });
      else if (s.state !== r.state || s.incarnation !== r.incarnation) {
        since.set(r.name, { state: r.state, incarnation: r.incarnation, t: now, changed: true });
      }
    }
  }

  function tagFilter() {
    const f = $("filter-tag").value.trim();
    if (!f) return () => true;
    const eq = f.indexOf("=");
    if (eq < 0) return (r) => Object.keys(r.tags).some((k) => k.includes(f));
    const k = f.slice(0, eq), v = f.slice(eq + 1);
    return (r) => r.tags[k] === v;
  }

  function renderMembers() {
    const state = $("filter-state").value;
    const byTag = tagFilter();
    const rows = members.filter((r) => (!state || r.state === state) && byTag(r));
    const now = Date.now();
    const body = rows.slice(0, ROWS_SHOWN).map((r) => {
      const s = since.get(r.name);
      const age = s ? (s.changed ? ago(now - s.t) : "≥ " + ago(now - loaded)) : "";
      const isSelf = self && r.name === self.name;
      return el("tr", { dataset: { name: r.name, state: r.state } },
        el("td", {}, r.name, isSelf ? el("span", { class: "hint" }, " (this node)") : null),
        el("td", {}, r.addr),
        el("td", {}, el("span", { class: "badge state-" + r.state }, r.state)),
        el("td", { class: "num" }, r.incarnation),
        el("td", {}, Object.entries(r.tags).map(([k, v]) => el("span", { class: "tag" }, k + "=" + v))),
        el("td", { class: "num" }, r.rtt_ms === null ? "–" : r.rtt_ms.toFixed(2)),
        el("td", { class: "num" }, r.phi === null ? "–" : r.phi.toFixed(2)),
        el("td", { class: "num" }, age));
    });
    $("members").tBodies[0].replaceChildren(...body);
    $("shown").textContent = Math.min(rows.length, ROWS_SHOWN) + " of " + members.length +
      " shown" + (rows.length > ROWS_SHOWN ? " (filter to see the rest)" : "");
    const count = (st) => members.filter((r) => r.state === st).length;
    $("counts").textContent = ["alive", "suspect", "failed", "left"]
      .map((st) => count(st) + " " + st).join(" · ");
  }

  // The node's own row is in /v1/members; /v1/self only says which one it is.
  async function loadMembers() {
    if (!self) self = await api("GET", "/v1/self");
    const rows = await api("GET", "/v1/members");
    const me = rows.find((r) => r.name === self.name) || self;
    members = rows;
    track(rows);
    $("self-name").textContent = me.name;
    const b = $("self-state");
    b.textContent = me.state;
    b.className = "badge state-" + me.state;
    renderMembers();
    renderChaosMembers();
    drawCoordinates();
    notice("");
  }

  // --- events -----------------------------------------------------------------------------

  const WORDS = {
    member_joined: "joined", member_suspected: "suspected", member_failed: "failed",
    member_left: "left", member_recovered: "alive again", member_updated: "updated",
  };

  function describe(e) {
    if (WORDS[e.type]) return [e.member.name + " " + WORDS[e.type] + " (incarnation " + e.member.incarnation + ")", e.member.state];
    switch (e.type) {
      case "refuted": return ["this node refuted a suspicion (incarnation " + e.incarnation + ")", "alive"];
      case "user_event": return ["user event " + e.name + " from " + e.origin + (e.payload ? ": " + clip(e.payload) : ""), "unknown"];
      case "member_conflict": return [e.member.name + ": a claim to move it to " + e.claimed_addr + " was refused", "suspect"];
      case "query": return ["query " + e.name + " from " + e.origin, "unknown"];
      default: return null;
    }
  }

  function clip(text) {
    return text.length > TEXT_SHOWN ? text.slice(0, TEXT_SHOWN) + "…" : text;
  }

  function addEvent(e) {
    const d = describe(e);
    if (!d) return;
    const list = $("timeline");
    const item = el("li", { dataset: { type: e.type } },
      el("time", {}, clock(new Date())),
      el("span", { class: "badge state-" + d[1] }, e.type.replace("member_", "").replace("_", " ")),
      " ", d[0]);
    list.prepend(item);
    while (list.children.length > EVENTS_KEPT) list.lastChild.remove();
  }

  async function followEvents() {
    const gen = ++streamGen;
    while (gen === streamGen) {
      streamAbort = new AbortController();
      try {
        setLive(true, "live");
        await stream("/v1/events/stream", (type, data) => {
          if (type === "lagged") { addEvent({ type: "user_event", name: "(" + data + " events missed)", origin: "page" }); return; }
          let e;
          try { e = JSON.parse(data); } catch { return; }
          addEvent(e);
          if (e.type.startsWith("member_") || e.type === "refuted") refreshSoon();
        }, streamAbort.signal);
        if (gen === streamGen) setLive(false, "stream ended");
      } catch (err) {
        if (gen !== streamGen) return;
        if (err instanceof dc.AuthError) { needToken(); return; }
        setLive(false, "reconnecting");
      }
      await sleep(2000);
    }
  }

  let refreshTimer = null;
  function refreshSoon() {
    if (refreshTimer) return;
    refreshTimer = setTimeout(() => { refreshTimer = null; guarded(loadMembers); }, 100);
  }

  // --- charts -----------------------------------------------------------------------------

  function parseRejected(text) {
    const out = {};
    for (const line of text.split("\n")) {
      const m = /^dcore_rejected_total\{reason="([a-z_]+)"\} (\d+)/.exec(line);
      if (m) out[m[1]] = Number(m[2]);
    }
    return out;
  }

  function push(name, label, color, t, v) {
    const s = (series[name] = series[name] || []);
    let line = s.find((x) => x.name === label);
    if (!line) { line = { name: label, color, points: [] }; s.push(line); }
    line.points.push([t, v]);
    while (line.points.length && line.points[0][0] < t - SPAN) line.points.shift();
  }

  async function sampleMetrics() {
    const [m, text] = await Promise.all([api("GET", "/v1/metrics"), api("GET", "/metrics")]);
    const t = Date.now();
    const rejected = parseRejected(text);
    if (previous) {
      const dt = (t - previous.t) / 1000;
      const rate = (a, b) => Math.max(0, (a - b) / dt);
      const n = m.node, p = previous.m.node;
      push("probes", "probes", COLORS[0], t, rate(n.core.probes, p.core.probes));
      const dn = n.ping_rtt.count - p.ping_rtt.count;
      const ds = n.ping_rtt.sum_seconds - p.ping_rtt.sum_seconds;
      if (dn > 0) push("rtt", "mean RTT", COLORS[2], t, (ds / dn) * 1000);
      push("msgs", "in", COLORS[0], t, rate(n.core.messages_in, p.core.messages_in));
      push("msgs", "out", COLORS[1], t, rate(n.traffic.msgs_out, p.traffic.msgs_out));
      push("bytes", "in", COLORS[0], t, rate(n.traffic.bytes_in, p.traffic.bytes_in));
      push("bytes", "out", COLORS[1], t, rate(n.traffic.bytes_out, p.traffic.bytes_out));
      const reasons = Object.keys(rejected).filter((k) => rejected[k] > 0);
      reasons.forEach((k, i) => push("rejected", k, COLORS[i % COLORS.length], t,
        rate(rejected[k], previous.rejected[k] || 0)));
      if (!reasons.length) push("rejected", "all", COLORS[6], t, 0);
      $("rejected-reasons").replaceChildren(...reasons.map((k, i) => {
        const sw = el("i");
        sw.style.background = COLORS[i % COLORS.length];
        return el("li", {}, sw, k + " " + rejected[k]);
      }));
    }
    previous = { t, m, rejected };
    firstSample = firstSample || t;
    // The last minute at first, growing to the last five.
    const span = Math.min(SPAN, Math.max(60 * 1000, t - firstSample));
    for (const [name, id] of [["probes", "c-probes"], ["rtt", "c-rtt"], ["msgs", "c-msgs"],
      ["bytes", "c-bytes"], ["rejected", "c-rejected"]]) {
      chart($(id), series[name] || [], span);
    }
  }

  // --- coordinates ------------------------------------------------------------------------

  // The first two principal axes of the members' coordinate vectors (power iteration).
  function project(vecs) {
    const d = vecs[0].length, n = vecs.length;
    const mean = Array(d).fill(0);
    for (const v of vecs) v.forEach((x, i) => (mean[i] += x / n));
    const c = vecs.map((v) => v.map((x, i) => x - mean[i]));
    const axes = [];
    for (let k = 0; k < 2; k++) {
      let a = Array.from({ length: d }, (_, i) => (i === k ? 1 : 0.1));
      for (let it = 0; it < 50; it++) {
        const next = Array(d).fill(0);
        for (const v of c) {
          const dot = v.reduce((s, x, i) => s + x * a[i], 0);
          v.forEach((x, i) => (next[i] += dot * x));
        }
        for (const b of axes) {
          const dot = next.reduce((s, x, i) => s + x * b[i], 0);
          next.forEach((x, i) => (next[i] -= dot * b[i]));
        }
        const norm = Math.hypot(...next);
        if (norm < 1e-12) break;
        a = next.map((x) => x / norm);
      }
      axes.push(a);
    }
    return c.map((v) => axes.map((a) => v.reduce((s, x, i) => s + x * a[i], 0)));
  }

  function drawCoordinates() {
    const canvas = $("coords");
    const ctx = canvas.getContext("2d");
    const w = canvas.width, h = canvas.height;
    ctx.clearRect(0, 0, w, h);
    const rows = members.filter((r) => r.coordinate && (r.state === "alive" || r.state === "suspect"));
    ctx.font = "11px sans-serif";
    if (rows.length < 2) {
      ctx.fillStyle = "#667085";
      ctx.fillText("no coordinates yet (they come with acks)", 10, 20);
      return;
    }
    const pts = project(rows.map((r) => r.coordinate.vec));
    let r = 0;
    for (const [x, y] of pts) r = Math.max(r, Math.abs(x), Math.abs(y));
    r = r > 0 ? r : 1;
    const sx = (w / 2 - 30) / r, sy = (h / 2 - 24) / r;
    const s = Math.min(sx, sy);
    ctx.strokeStyle = "#eef1f6";
    ctx.beginPath(); ctx.moveTo(w / 2, 0); ctx.lineTo(w / 2, h); ctx.moveTo(0, h / 2); ctx.lineTo(w, h / 2); ctx.stroke();
    ctx.fillStyle = "#667085";
    ctx.fillText("±" + (r * 1000).toFixed(2) + " ms", 4, h - 6);
    rows.forEach((row, i) => {
      const x = w / 2 + pts[i][0] * s, y = h / 2 - pts[i][1] * s;
      const mine = self && row.name === self.name;
      ctx.fillStyle = row.state === "alive" ? (mine ? "#2457c5" : "#1a7f37") : "#b7791f";
      ctx.beginPath(); ctx.arc(x, y, mine ? 6 : 4, 0, 2 * Math.PI); ctx.fill();
      ctx.fillStyle = "#1d2330";
      ctx.fillText(row.name, x + 7, y + 4);
    });
  }

  // --- chaos ------------------------------------------------------------------------------

  let shownChaosMembers = "";

  // The members to partition from, as checkboxes: rebuilt only when the members change.
  function renderChaosMembers() {
    const box = $("chaos-members");
    const blocked = new Set((chaos && chaos.config.blocked) || []);
    const checked = new Set([...box.querySelectorAll("input:checked")].map((i) => i.value));
    const others = members.filter((r) => !self || r.name !== self.name).slice(0, ROWS_SHOWN);
    const key = JSON.stringify(others.map((r) => [r.name, r.addr]));
    if (key === shownChaosMembers) return;
    shownChaosMembers = key;
    box.replaceChildren(...others.map((r) => el("label", {},
      el("input", { type: "checkbox", value: r.name, dataset: { addr: r.addr },
        checked: checked.has(r.name) || blocked.has(r.addr) }), " " + r.name)));
  }

  function renderChaos() {
    const b = $("chaos-state");
    b.textContent = chaos.on ? "on" : "off";
    b.className = "badge " + (chaos.on ? "state-suspect" : "state-alive");
    const c = chaos.config;
    const names = c.blocked.map((a) => (members.find((r) => r.addr === a) || { name: a }).name);
    $("chaos-summary").textContent = "drop " + Math.round(c.drop * 100) + " %, delay " + c.delay +
      ", partitioned from: " + (names.join(", ") || "none") + (c.streams ? " (TCP too)" : "") +
      "; datagrams dropped " + chaos.stats.dropped + ", blocked " + chaos.stats.blocked;
  }

  async function loadChaos() {
    chaos = await api("GET", "/v1/chaos");
    renderChaos();
  }

  async function setChaos(ev) {
    ev.preventDefault();
    const base = chaos ? { ...chaos.config } : {};
    base.drop = Math.min(100, Math.max(0, Number($("chaos-drop").value) || 0)) / 100;
    base.delay = Math.max(0, Math.round(Number($("chaos-delay").value) || 0)) + "ms";
    base.blocked = [...$("chaos-members").querySelectorAll("input:checked")].map((i) => i.value);
    base.streams = $("chaos-streams").checked;
    try {
      chaos = await api("PUT", "/v1/chaos", base);
      renderChaos();
    } catch (e) { chaosFailed(e); }
  }

  async function clearChaos() {
    try {
      chaos = await api("DELETE", "/v1/chaos");
      $("chaos-members").querySelectorAll("input").forEach((i) => (i.checked = false));
      renderChaos();
    } catch (e) { chaosFailed(e); }
  }

  function chaosFailed(e) {
    if (e instanceof dc.AuthError) needToken();
    else $("chaos-summary").textContent = "refused: " + (e.message || e);
  }

  // --- plumbing ---------------------------------------------------------------------------

  function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

  function needToken() {
    authFailed = true;
    setLive(false, "no token");
    notice("This agent needs its admin token: type it above (it stays in this tab only).");
    $("token").focus();
  }

  function failed(e) {
    if (e instanceof dc.AuthError) needToken();
    else { setLive(false, "unreachable"); notice(String(e.message || e)); }
  }

  async function guarded(f) {
    if (authFailed) return;
    try { await f(); } catch (e) { failed(e); }
  }

  function every(ms, f) {
    guarded(f);
    setInterval(() => guarded(f), ms);
  }

  function start() {
    authFailed = false;
    notice("");
    if (streamAbort) streamAbort.abort();
    followEvents();
  }

  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    dc.setToken($("token").value.trim());
    $("token").value = "";
    start();
    guarded(loadMembers);
    guarded(loadChaos);
  });
  $("filter-state").addEventListener("change", renderMembers);
  $("filter-tag").addEventListener("input", renderMembers);
  $("chaos-form").addEventListener("submit", setChaos);
  $("chaos-clear").addEventListener("click", clearChaos);

  start();
  every(1000, loadMembers);
  every(2000, sampleMetrics);
  every(3000, loadChaos);
})();
