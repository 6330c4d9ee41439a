// Draws a flow as SVG: one column per BFS depth from start, edges as labelled lines. No libraries.
(function () {
  "use strict";
  const box = document.getElementById("flow-diagram");
  if (!box) return;
  const NS = "http://www.w3.org/2000/svg";
  const W = 150, H = 34, GAP_X = 70, GAP_Y = 22;

  function el(name, attrs, text) {
    const node = document.createElementNS(NS, name);
    Object.entries(attrs).forEach(([key, value]) => node.setAttribute(key, value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function draw(graph) {
    const columns = new Map();
    const unreachable = Math.max(0, ...graph.nodes.map((n) => n.depth ?? 0)) + 1;
    graph.nodes.forEach((n) => {
      const col = n.depth ?? unreachable;
      if (!columns.has(col)) columns.set(col, []);
      columns.get(col).push(n);
    });
    const at = new Map();
    let rows = 0;
    columns.forEach((nodes, col) => {
      nodes.forEach((n, row) => at.set(n.id, { x: 10 + col * (W + GAP_X), y: 10 + row * (H + GAP_Y) }));
      rows = Math.max(rows, nodes.length);
    });
    const width = 20 + Math.max(...columns.keys()) * (W + GAP_X) + W;
    const svg = el("svg", { width, height: 20 + rows * (H + GAP_Y), role: "img", "aria-label": "flow " + graph.name });
    svg.append(el("defs", {}));
    svg.firstChild.append(el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto" }));
    svg.firstChild.firstChild.append(el("path", { d: "M0,0 L10,5 L0,10 z", fill: "#646970" }));
    graph.edges.forEach((e) => {
      const a = at.get(e.from), b = at.get(e.to);
      if (!a || !b) return;
      const back = b.x <= a.x;
      const x1 = a.x + W, y1 = a.y + H / 2, x2 = back ? b.x + W / 2 : b.x, y2 = back ? b.y + (b.y > a.y ? 0 : H) : b.y + H / 2;
      const line = el("line", { x1, y1, x2, y2, class: "edge" + (e.label.startsWith("timeout") ? " timeout" : ""), "marker-end": "url(#arrow)" });
      line.append(el("title", {}, `${e.from} —${e.label}→ ${e.to}`));
      svg.append(line);
    });
    graph.nodes.forEach((n) => {
      const p = at.get(n.id);
      const g = el("g", { class: "node" + (n.public ? " public" : "") + (n.end ? " end" : "") + (n.start ? " start" : "") });
      g.append(el("rect", { x: p.x, y: p.y, width: W, height: H, rx: 5 }));
      g.append(el("text", { x: p.x + 8, y: p.y + 21 }, n.id.length > 20 ? n.id.slice(0, 19) + "…" : n.id));
      g.append(el("title", {}, [n.id, n.action && "action: " + n.action, n.say.length && "says: " + n.say.join(", "), n.end && "end: " + n.end].filter(Boolean).join("\n")));
      svg.append(g);
    });
    const globals = document.createElement("p");
    globals.className = "meta";
    globals.textContent = "Globals: " + Object.entries(graph.globals).map(([intent, target]) => `${intent} → ${target}`).join(", ");
    box.replaceChildren(svg, globals);
  }

  fetch(box.dataset.graphUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
    .then((response) => response.json().then((data) => ({ ok: response.ok, data })))
    .then(({ ok, data }) => (ok ? draw(data) : (box.textContent = data.message || "cannot draw this flow")));
})();
