// Shared by the dcore pages: the admin API client (token, JSON, the event stream read over
// fetch so it can carry the token), DOM building without markup strings (names and tags come
// from the network: they are only ever set as text), and small line charts.
"use strict";

const dc = (() => {
  const TOKEN_KEY = "dcore-admin-token";
  let token = sessionStorage.getItem(TOKEN_KEY) || "";

  class AuthError extends Error {
    constructor() { super("the admin token is missing or wrong"); }
  }

  function setToken(t) {
    token = t;
    if (t) sessionStorage.setItem(TOKEN_KEY, t); else sessionStorage.removeItem(TOKEN_KEY);
  }

  function headers() {
    const h = { "X-Dcore-Request": "1" };
    if (token) h.Authorization = "Bearer " + token;
    return h;
  }

  // A request to the server that served the page; JSON in and out (text for /metrics).
  async function api(method, path, body) {
    const init = { method, headers: headers(), cache: "no-store" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const r = await fetch(path, init);
    if (r.status === 401) throw new AuthError();
    const json = (r.headers.get("content-type") || "").includes("json");
    const data = json ? await r.json() : await r.text();
    if (!r.ok) throw new Error((data && data.error) || (method + " " + path + ": " + r.status));
    return data;
  }

  // Reads a server-sent event stream until it ends; calls onEvent(type, data) per event.
  async function stream(path, onEvent, signal) {
    const r = await fetch(path, { headers: headers(), signal, cache: "no-store" });
    if (r.status === 401) throw new AuthError();
    if (!r.ok) throw new Error("event stream: " + r.status);
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value.replace(/\r\n/g, "\n");
      let end;
      while ((end = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        let type = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
          else if (line.startsWith("event:")) type = line.slice(6).trim();
        }
        if (data.length) onEvent(type, data.join("\n"));
      }
    }
  }

  // el("td", {class: "num", dataset: {name: "n1"}}, "text", child...)
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "dataset") Object.assign(e.dataset, v);
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function $(id) { return document.getElementById(id); }

  function notice(text) {
    const n = $("notice");
    n.textContent = text || "";
    n.hidden = !text;
  }

  function setLive(on, text) {
    const l = $("live");
    l.textContent = text;
    l.classList.toggle("off", !on);
  }

  function ago(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 120) return s + " s";
    if (s < 7200) return Math.round(s / 60) + " min";
    return Math.round(s / 3600) + " h";
  }

  function clock(d) {
    return d.toTimeString().slice(0, 8);
  }

  const COLORS = ["#2457c5", "#c62828", "#1a7f37", "#b7791f", "#7b3fb5", "#0e7c86", "#6b7280"];

  // Draws series [{name, color, points: [[t, v], ...]}] over the last `span` ms.
  function chart(canvas, series, span) {
    const ctx = canvas.getContext("2d");
    const w = canvas.width, h = canvas.height, pad = 4, left = 42;
    ctx.clearRect(0, 0, w, h);
    const now = Date.now();
    let max = 0;
    for (const s of series) for (const [, v] of s.points) max = Math.max(max, v);
    max = max > 0 ? niceCeil(max) : 1;
    ctx.font = "10px sans-serif";
    ctx.fillStyle = "#667085";
    ctx.strokeStyle = "#eef1f6";
    for (const f of [0, 0.5, 1]) {
      const y = h - pad - f * (h - 2 * pad);
      ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(w, y); ctx.stroke();
      ctx.fillText(short(max * f), 2, Math.min(h - 2, Math.max(10, y + 3)));
    }
    for (const s of series) {
      ctx.strokeStyle = s.color;
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      let first = true;
      for (const [t, v] of s.points) {
        const x = left + (w - left) * (1 - (now - t) / span);
        const y = h - pad - (v / max) * (h - 2 * pad);
        if (first) ctx.moveTo(x, y); else ctx.lineTo(x, y);
        first = false;
      }
      ctx.stroke();
    }
  }

  function niceCeil(v) {
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function short(v) {
    if (v >= 1e9) return (v / 1e9).toFixed(1) + "G";
    if (v >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (v >= 1e3) return (v / 1e3).toFixed(1) + "k";
    return v >= 10 ? v.toFixed(0) : v.toFixed(v >= 1 ? 1 : 2);
  }

  return { AuthError, api, stream, el, $, notice, setLive, setToken, ago, clock, chart, COLORS,
    hasToken: () => token !== "" };
})();
