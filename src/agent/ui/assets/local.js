// The page of `dcore local --ui`: what every node sees of every node, live, and buttons for
// the commands of the terminal (they go to the same command handler).
"use strict";

(() => {
  const { api, el, $, notice, setLive } = dc;
  let view = { nodes: [], log: [] };
  let shownLog = "";

  async function command(line) {
    try {
      const r = await api("POST", "/v1/local/command", { command: line });
      $("outcome").textContent = r.ok;
      notice("");
    } catch (e) {
      $("outcome").textContent = "";
      notice(line + ": " + (e.message || e));
    }
    refresh();
  }

  function button(label, line, cls) {
    return el("button", { type: "button", class: cls, dataset: { command: line },
      onclick: () => command(line) }, label);
  }

  let shownNodes = "";

  // Rebuilds the matrix only when what it shows changed (a button clicked stays the button).
  function render() {
    const nodes = view.nodes;
    const key = JSON.stringify(nodes);
    if (key !== shownNodes) {
      shownNodes = key;
      renderMatrix(nodes);
    }
    const log = view.log.join("\n");
    if (log !== shownLog) {
      shownLog = log;
      $("log").replaceChildren(...view.log.slice().reverse().map((l) => el("li", {}, l)));
    }
  }

  function renderMatrix(nodes) {
    const head = el("tr", {}, el("th", {}, "sees →"),
      nodes.map((n) => el("th", { class: "num" }, n.name)), el("th", {}, "status"), el("th", {}, ""));
    $("matrix").tHead.replaceChildren(head);
    const rows = nodes.map((n, i) => {
      const cells = n.sees.map((state, j) => el("td", {
        class: "cell state-" + state + (i === j ? " self" : ""),
        title: n.name + " sees " + nodes[j].name + " " + state,
        dataset: { observer: n.name, target: nodes[j].name, state },
      }, state[0].toUpperCase()));
      const running = n.status === "running", paused = n.status === "paused";
      const actions = el("td", { class: "actions" },
        running || paused ? button("kill", "kill " + n.name, "danger") : null,
        running ? button("leave", "leave " + n.name) : null,
        running ? button("pause", "pause " + n.name) : null,
        paused ? button("resume", "resume " + n.name) : null,
        button("restart", "restart " + n.name));
      return el("tr", { dataset: { node: n.name, status: n.status } },
        el("th", {}, n.name), cells,
        el("td", {}, n.status, n.http ? el("span", { class: "hint" }, " " + n.http) : null),
        actions);
    });
    $("matrix").tBodies[0].replaceChildren(...rows);
    const running = nodes.filter((n) => n.status === "running").length;
    $("counts").textContent = nodes.length + " nodes, " + running + " running";
    for (const id of ["pair-a", "pair-b", "drop-node"]) {
      const s = $(id);
      const keep = s.value;
      if (s.options.length !== nodes.length) {
        s.replaceChildren(...nodes.map((n) => el("option", { value: n.name }, n.name)));
        if (id === "pair-b" && nodes.length > 1) s.value = nodes[1].name;
      }
      if (keep && nodes.some((n) => n.name === keep)) s.value = keep;
    }
  }

  async function refresh() {
    try {
      view = await api("GET", "/v1/local");
      setLive(true, "live");
      render();
    } catch (e) {
      setLive(false, "unreachable");
    }
  }

  $("block").addEventListener("click", () => command("block " + $("pair-a").value + " " + $("pair-b").value));
  $("unblock").addEventListener("click", () => command("unblock " + $("pair-a").value + " " + $("pair-b").value));
  $("drop-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const p = Math.min(100, Math.max(0, Number($("drop-share").value) || 0)) / 100;
    command("drop " + $("drop-node").value + " " + p);
  });

  refresh();
  setInterval(refresh, 500);
})();
