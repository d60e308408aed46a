// Shared cytoscape.js wrapper: a graph at positions computed in Python, edge filters, highlight,
// selection patches. Used by views/graph_view.js (GraphView, CoactivationGraph, flow / trace
// graphs). All text goes into cytoscape labels or the tooltip as text, never as HTML.
import cytoscape from "cytoscape";

/** Sentinel of mri_widgets.widgets.graph_view.NO_VALUE: "this node does not set that key". */
export const NO_VALUE = -2147483648;
const MAX_PIE = 16;

/** The colours of the graph's chrome in the light theme (cytoscape styles take no CSS variables). */
export const GRAPH_LIGHT = {
  fg: "#333", muted: "#555", label: "#444", bg: "#fff", border: "#aaa", strong: "#222",
  accent: "#d62728", link: "#0b5394", selLabelBg: "#fde3df",
};

/**
 * The graph's chrome colours as the theme sets them on `el` (its --mri-* variables, read with
 * getComputedStyle; the light colours where a variable is not set).
 */
export function graphPalette(el) {
  const cs = el && typeof getComputedStyle === "function" ? getComputedStyle(el) : null;
  const get = (name, dflt) => (cs?.getPropertyValue(name) || "").trim() || dflt;
  const L = GRAPH_LIGHT;
  return {
    fg: get("--mri-fg", L.fg), muted: get("--mri-muted", L.muted), label: get("--mri-fg", L.label),
    bg: get("--mri-bg", L.bg), border: get("--mri-border", L.border), strong: get("--mri-strong", L.strong),
    accent: get("--mri-accent", L.accent), link: get("--mri-link", L.link), selLabelBg: get("--mri-sel-label-bg", L.selLabelBg),
  };
}

const rgbAt = (arr, i) => {
  if (!arr) return "#888";
  const d = arr.data;
  return `rgb(${d[3 * i]},${d[3 * i + 1]},${d[3 * i + 2]})`;
};

/**
 * Highlight indices of the whole graph -> indices of the drawn part (data.node_ids / edge_ids
 * give the whole-graph index of each drawn node / edge when an edge budget applies; null: all
 * drawn). Entries not drawn are left out, with their weights.
 */
export function drawnHighlight(hl, data) {
  if (!hl || (!data.node_ids && !data.edge_ids)) return hl;
  const out = { ...hl };
  const map = (ids, idx, wname) => {
    if (!idx) return;
    const where = new Map();
    ids.data.forEach((full, i) => where.set(full, i));
    const keep = [], vals = [];
    const w = hl[wname]?.data;
    Array.from(idx.data).forEach((full, r) => {
      const i = where.get(full);
      if (i !== undefined) { keep.push(i); if (w) vals.push(w[r]); }
    });
    out[wname.startsWith("edge") ? "edges" : "nodes"] = { data: Int32Array.from(keep), shape: [keep.length] };
    if (w) out[wname] = { data: Float32Array.from(vals), shape: [vals.length] };
  };
  if (data.node_ids) map(data.node_ids, hl.nodes, "node_weight");
  if (data.edge_ids) map(data.edge_ids, hl.edges, "edge_weight");
  return out;
}

/** The notice of a graph drawn in part: "the 5,000 heaviest of 714,048 edges ...", or null. */
export function budgetText(data) {
  const b = data.budget_info;
  if (!b?.edges) return null;
  const f = (x) => Number(x).toLocaleString("en-US");
  return `Showing the ${f(data.edge_source.data.length)} heaviest of ${f(b.edges)} edges `
    + `(${f(data.x.data.length)} of ${f(b.nodes)} nodes).`;
}

/** The next edge budget offered by the "more edges" control: 4 times more, at most all of them. */
export function nextBudget(budget, total) {
  return Math.min(total, Math.max(1, budget) * 4);
}

/** True where canvas rendering is impossible (jsdom in unit tests): cytoscape then runs headless. */
export function isHeadless() {
  return typeof navigator !== "undefined" && /jsdom/i.test(navigator.userAgent || "");
}

let webgl2 = null;
/** True where the browser gives a WebGL2 context (cytoscape's WebGL renderer needs one); asked once. */
export function hasWebgl2() {
  if (webgl2 === null) {
    try {
      const c = document.createElement("canvas");
      const gl = c.getContext("webgl2");
      webgl2 = !!gl;
      gl?.getExtension("WEBGL_lose_context")?.loseContext(); // give the probe's context back at once
    } catch { webgl2 = false; }
  }
  return webgl2;
}

/** Elements (nodes + edges) from which a graph is drawn with WebGL, labels only when zoomed in. */
export const WEBGL_FROM = 2000;

/**
 * Cytoscape's renderer options for a graph of n nodes and m edges: the WebGL renderer for big
 * graphs where the browser has WebGL2 (else the canvas one), edges hidden while panning / zooming.
 */
export function rendererOptions(n, m, { headless = false, webgl = hasWebgl2 } = {}) {
  const big = n + m > WEBGL_FROM;
  const gl = !headless && big && (typeof webgl === "function" ? webgl() : !!webgl);
  return {
    // headless (no canvas: unit tests) keeps cytoscape's own null renderer
    ...(headless ? {} : { renderer: { name: "canvas", webgl: gl, ...(gl ? { webglTexSize: 4096, webglBatchSize: 4096 } : {}) } }),
    hideEdgesOnViewport: m > 1000,
    textureOnViewport: !gl && n + m > 3000,
    pixelRatio: big ? 1 : "auto",
  };
}

/** Width of each edge from its weight (0.5 .. 6.5 px), unless Python gave widths. */
export function edgeWidths(data) {
  const m = data.edge_source.data.length;
  if (data.edge_width) return Float32Array.from(data.edge_width.data);
  const w = data.edge_weight.data;
  let max = 0;
  for (let i = 0; i < m; i++) max = Math.max(max, Math.abs(w[i]));
  const out = new Float32Array(m);
  for (let i = 0; i < m; i++) out[i] = 0.5 + 6 * (max > 0 ? Math.abs(w[i]) / max : 0);
  return out;
}

/** The selection patch of node i ({key: value} for the keys it sets), or null. */
export function patchOf(data, i) {
  const keys = data.select_keys || [];
  if (!keys.length || !data.select) return null;
  const row = data.select.data;
  const out = {};
  let any = false;
  keys.forEach((k, j) => {
    const v = row[i * keys.length + j];
    if (v !== NO_VALUE) { out[k] = v; any = true; }
  });
  return any ? out : null;
}

/**
 * Index of selection patches: match(sel) -> ids of the most specific elements whose patch equals
 * the selection on all of the patch's keys.
 */
export function patchIndex(entries) {
  // entries: [{id, patch}]
  const bySet = new Map();
  for (const { id, patch } of entries) {
    if (!patch) continue;
    const keys = Object.keys(patch).sort();
    const ks = keys.join(",");
    if (!bySet.has(ks)) bySet.set(ks, { keys, map: new Map() });
    const key = keys.map((k) => patch[k]).join(",");
    const m = bySet.get(ks).map;
    if (!m.has(key)) m.set(key, []);
    m.get(key).push(id);
  }
  const sets = [...bySet.values()].sort((a, b) => b.keys.length - a.keys.length);
  return {
    match(sel) {
      for (const { keys, map } of sets) {
        if (keys.some((k) => sel[k] == null)) continue;
        const hit = map.get(keys.map((k) => sel[k]).join(","));
        if (hit) return hit;
      }
      return [];
    },
  };
}

/** Cytoscape elements from the decoded data of a GraphView. */
export function buildElements(data) {
  const n = data.x.data.length;
  const m = data.edge_source.data.length;
  const els = [];
  (data.groups || []).forEach((g, i) => {
    els.push({ group: "nodes", data: { id: `g${i}`, label: g.label || "", kind: "group" }, classes: "group" });
  });
  const K = data.parts ? data.parts.shape[1] : 0;
  for (let i = 0; i < n; i++) {
    const d = {
      id: `n${i}`, index: i, kind: "node", label: data.label ? data.label[i] || "" : "",
      color: rgbAt(data.color, i), size: data.size ? data.size.data[i] : 12,
      shape: data.shape ? data.shape[i] : "ellipse",
    };
    let classes = "node";
    if (K && K <= MAX_PIE) {
      let tot = 0;
      for (let k = 0; k < K; k++) tot += data.parts.data[i * K + k];
      if (tot > 0) {
        for (let k = 0; k < K; k++) d[`p${k + 1}`] = (100 * data.parts.data[i * K + k]) / tot;
        classes += " pie";
      }
    }
    if (data.parent && data.parent.data[i] >= 0) d.parent = `g${data.parent.data[i]}`;
    if (data.select_keys?.length && patchOf(data, i)) classes += " selectable";
    els.push({ group: "nodes", data: d, position: { x: data.x.data[i], y: data.y.data[i] }, classes });
  }
  (data.annotations || []).forEach((a, i) => {
    let classes = a.select ? "annot selectable" : "annot";
    if (a.align === "left") classes += " left";
    if (a.bold === false) classes += " plain";
    const d = { id: `a${i}`, label: a.text, kind: "annotation", fs: a.size || 13 };
    if (a.color && !a.select) { d.color = a.color; classes += " colored"; }
    els.push({ group: "nodes", data: d, position: { x: a.x, y: a.y }, classes });
  });
  const widths = edgeWidths(data);
  const src = data.edge_source.data, dst = data.edge_target.data, w = data.edge_weight.data;
  for (let j = 0; j < m; j++) {
    els.push({
      group: "edges",
      data: { id: `e${j}`, index: j, source: `n${src[j]}`, target: `n${dst[j]}`, weight: w[j], w: widths[j],
        color: rgbAt(data.edge_color, j) },
    });
  }
  return els;
}

/** Cytoscape stylesheet for the data (pie slices for K parts, arrows when directed). */
export function graphStyle(data, big, pal = GRAPH_LIGHT) {
  const ACCENT = pal.accent;
  const K = data.parts ? Math.min(data.parts.shape[1], MAX_PIE) : 0;
  const pie = { "pie-size": "100%" };
  for (let k = 1; k <= K; k++) {
    pie[`pie-${k}-background-color`] = data.part_colors[k - 1] || "#888";
    pie[`pie-${k}-background-size`] = `data(p${k})`;
  }
  const directed = !!data.directed;
  const labels = { "font-size": data.label_size > 0 ? data.label_size : 8 };
  // big graphs: node labels only past zoom 1.5 (a label drawn at 12 px or more), else at 7 px
  // (graphs with a readable first zoom, data.min_zoom, keep 7 px)
  const minLabel = big && !(data.min_zoom > 0) ? Math.ceil(1.5 * labels["font-size"]) : 7;
  if (data.label_position === "right") {
    Object.assign(labels, { "text-valign": "center", "text-halign": "right", "text-margin-x": 4,
      "text-background-color": pal.bg, "text-background-opacity": 0.9, "text-background-padding": 1,
      "text-background-shape": "roundrectangle" });
  } else {
    Object.assign(labels, { "text-valign": "bottom", "text-margin-y": 2 });
  }
  if (data.label_width > 0) Object.assign(labels, { "text-wrap": "ellipsis", "text-max-width": `${data.label_width}px` });
  return [
    { selector: "node.node", style: {
      "background-color": "data(color)", width: "data(size)", height: "data(size)", shape: "data(shape)",
      label: "data(label)", "min-zoomed-font-size": minLabel, ...labels,
      color: pal.fg, "border-width": 0.5, "border-color": pal.bg } },
    { selector: "node.pie", style: pie },
    { selector: "node.annot", style: {
      "background-opacity": 0, width: 1, height: 1, label: "data(label)", "font-size": "data(fs)", "font-weight": "bold",
      color: pal.label, "text-valign": "center", "text-halign": "center", "min-zoomed-font-size": 4 } },
    { selector: "node.annot.left", style: { "text-halign": "right" } },
    { selector: "node.annot.plain", style: { "font-weight": "normal", "min-zoomed-font-size": 7 } },
    { selector: "node.annot.colored", style: { color: "data(color)" } },
    { selector: "node.annot.selectable", style: { color: pal.link } },
    { selector: "node.group", style: {
      "background-color": "#888", "background-opacity": 0.05, "border-width": 1, "border-style": "dashed",
      "border-color": pal.border, label: "data(label)", "text-valign": "top", "font-size": 10, color: pal.muted, padding: 6 } },
    { selector: "node.group.collapsed", style: { "background-opacity": 0.25, width: 24, height: 24 } },
    { selector: "edge", style: {
      width: "data(w)", "line-color": "data(color)", opacity: big ? 0.45 : 0.6,
      "curve-style": directed ? "bezier" : "haystack", "haystack-radius": 0,
      ...(directed ? { "target-arrow-shape": "triangle", "target-arrow-color": "data(color)", "arrow-scale": 0.7 } : {}),
    } },
    { selector: ".filtered", style: { display: "none" } },
    { selector: ".hidden", style: { display: "none" } },
    { selector: ".dim", style: { opacity: 0.12 } },
    { selector: "edge.hl", style: { opacity: 0.95, width: "data(hw)", "z-index": 10 } },
    { selector: "node.hl", style: { opacity: 1, "border-width": 2, "border-color": pal.strong, "z-index": 10 } },
    { selector: "node.sel", style: { opacity: 1, "border-width": 4, "border-color": ACCENT, "z-index": 20,
      "overlay-color": ACCENT, "overlay-opacity": 0.25, "overlay-padding": 6 } },
    // a selected header: its text marked (the 1 px anchor node may sit at the text's start)
    { selector: "node.annot.sel", style: { "border-width": 0, "overlay-opacity": 0, color: ACCENT,
      "text-background-color": pal.selLabelBg, "text-background-opacity": 1, "text-background-padding": 3,
      "text-background-shape": "roundrectangle" } },
  ];
}

/**
 * The first view of a graph whose bounding box is `bb` ({x1, y1, w, h}, model units) in a canvas of
 * `width` x `height` px: null when fitting it all (with `pad` px around) keeps the zoom >= `minZoom`
 * (then cy.fit is the view), else {zoom: minZoom, pan} showing the top of the graph, centred when it
 * is narrower than the canvas, else from its left edge.
 */
export function homeView(bb, width, height, minZoom, pad = 24) {
  if (!(minZoom > 0) || !(width > 0) || !(height > 0) || !bb) return null;
  const fit = Math.min((width - 2 * pad) / Math.max(bb.w, 1e-9), (height - 2 * pad) / Math.max(bb.h, 1e-9));
  if (fit >= minZoom) return null;
  const zoom = minZoom;
  const gw = bb.w * zoom;
  const x = gw + 2 * pad <= width ? (width - gw) / 2 - bb.x1 * zoom : pad - bb.x1 * zoom;
  return { zoom, pan: { x, y: pad - bb.y1 * zoom } };
}

/**
 * Draw a graph in `container`. Returns an object with the cytoscape core (`cy`) and methods:
 *   applyFilters(minWeight, topK), setHighlight(hl), setSelected(sel) -> ids, home() (the first
 *   view: fit, or data.min_zoom at the top of the graph, see homeView), destroy().
 * `on` = {tap(ele, evt), over(ele, evt), out(ele, evt)} handlers.
 */
export function createGraph(container, data, on = {}) {
  const n = data.x.data.length;
  const m = data.edge_source.data.length;
  const big = n + m > WEBGL_FROM;
  const headless = isHeadless();
  const t0 = typeof performance !== "undefined" ? performance.now() : Date.now();
  const cy = cytoscape({
    container: headless ? undefined : container,
    headless,
    styleEnabled: true,
    style: graphStyle(data, big, graphPalette(container)),
    layout: { name: "preset" },
    minZoom: 0.02,
    maxZoom: 8,
    boxSelectionEnabled: false,
    autoungrabify: true,
    ...rendererOptions(n, m, { headless }),
  });
  // cytoscape's WebGL path does not emit "render" (its canvas path does after each frame): emit it,
  // so that first-render timing and listeners work the same with both renderers
  const rr = headless ? null : cy.renderer();
  if (rr?.webgl && typeof rr.render === "function") {
    const frame = rr.render;
    rr.render = function (options) {
      const out = frame.call(this, options);
      if (!options?.forcedContext) cy.emit("render");
      return out;
    };
  }
  cy.batch(() => { cy.add(buildElements(data)); });
  let homed = false;
  function home() {
    cy.fit(undefined, 24);
    const v = homeView(cy.elements().boundingBox(), cy.width(), cy.height(), data.min_zoom, 24);
    if (v) cy.viewport(v);
    homed = cy.width() > 0 && cy.height() > 0;
  }
  home();
  // cytoscape caches where its canvas is on the page and refreshes that on scroll and resize only; the
  // canvas also moves when something above it changes height (a toolbar line, a notice), so refresh
  // it before every pointer event it handles
  const fresh = () => { const r = cy.renderer(); if (r?.invalidateContainerClientCoordsCache) r.invalidateContainerClientCoordsCache(); };
  if (!headless) for (const t of ["pointerenter", "pointerdown", "pointermove", "wheel"]) container.addEventListener(t, fresh, { capture: true, passive: true });
  // drawn while hidden (zero size, e.g. a closed tab): take the first view once it is shown
  let resize = null;
  if (!homed && !headless && typeof ResizeObserver !== "undefined") {
    resize = new ResizeObserver(() => {
      if (homed || !container.clientWidth || !container.clientHeight) return;
      cy.resize();
      home();
      resize.disconnect();
    });
    resize.observe(container);
  }
  const timing = { start: t0, built: (typeof performance !== "undefined" ? performance.now() : Date.now()) - t0, firstRender: null };
  cy.one("render", () => { timing.firstRender = (typeof performance !== "undefined" ? performance.now() : Date.now()) - t0; });

  const edgeEls = new Array(m);
  cy.edges().forEach((e) => { edgeEls[e.data("index")] = e; });
  const nodeEls = new Array(n);
  cy.nodes(".node").forEach((v) => { nodeEls[v.data("index")] = v; });
  // edges by decreasing weight, for top-k
  const order = Array.from({ length: m }, (_, j) => j);
  const w = data.edge_weight.data;
  order.sort((a, b) => Math.abs(w[b]) - Math.abs(w[a]) || a - b);
  const rank = new Int32Array(m);
  order.forEach((j, r) => { rank[j] = r; });

  const patches = [];
  for (let i = 0; i < n; i++) patches.push({ id: `n${i}`, patch: patchOf(data, i) });
  (data.annotations || []).forEach((a, i) => patches.push({ id: `a${i}`, patch: a.select || null }));
  const index = patchIndex(patches);
  const patchById = new Map(patches.filter((p) => p.patch).map((p) => [p.id, p.patch]));

  let hlEdges = new Set();
  let filters = { minWeight: 0, topK: 0 };
  let visibleCount = m;

  function applyFilters(minWeight = 0, topK = 0) {
    filters = { minWeight: Number(minWeight) || 0, topK: Math.max(0, Math.floor(Number(topK) || 0)) };
    let shown = 0;
    cy.batch(() => {
      for (let j = 0; j < m; j++) {
        const keep = hlEdges.has(j)
          || (Math.abs(w[j]) >= filters.minWeight && (filters.topK === 0 || rank[j] < filters.topK));
        const e = edgeEls[j];
        if (keep) shown++;
        if (keep === e.hasClass("filtered")) e.toggleClass("filtered", !keep);
      }
    });
    visibleCount = shown;
    return shown;
  }

  function setHighlight(hl) {
    const ns = hl?.nodes ? Array.from(hl.nodes.data) : [];
    const es = hl?.edges ? Array.from(hl.edges.data) : [];
    const ew = hl?.edge_weight ? hl.edge_weight.data : null;
    let maxW = 0;
    if (ew) for (const v of ew) maxW = Math.max(maxW, Math.abs(v));
    cy.batch(() => {
      cy.elements(".hl").removeClass("hl");
      cy.elements(".dim").removeClass("dim");
      hlEdges = new Set(es);
      if (!ns.length && !es.length) return;
      cy.elements(".node, edge").addClass("dim");
      ns.forEach((i) => { const v = nodeEls[i]; if (v) v.removeClass("dim").addClass("hl"); });
      es.forEach((j, r) => {
        const e = edgeEls[j];
        if (!e) return;
        const hw = ew ? 1 + 9 * (maxW > 0 ? Math.abs(ew[r]) / maxW : 0) : Math.max(2, e.data("w") * 1.5);
        e.data("hw", hw);
        e.removeClass("dim").addClass("hl");
      });
    });
    applyFilters(filters.minWeight, filters.topK);
    return { nodes: ns.length, edges: es.length };
  }

  function setSelected(sel) {
    const ids = sel ? index.match(sel) : [];
    cy.batch(() => {
      cy.nodes(".sel").removeClass("sel");
      ids.forEach((id) => cy.getElementById(id).addClass("sel"));
    });
    return ids;
  }

  cy.on("tap", "node", (evt) => {
    const ele = evt.target;
    if (on.tap) on.tap(ele, evt, patchById.get(ele.id()) || null);
  });
  cy.on("dbltap", "node.group", (evt) => {
    const g = evt.target;
    const collapsed = !g.hasClass("collapsed");
    cy.batch(() => {
      g.toggleClass("collapsed", collapsed);
      g.children().toggleClass("hidden", collapsed);
    });
  });
  cy.on("mouseover", "node, edge", (evt) => { if (on.over) on.over(evt.target, evt); });
  cy.on("mouseout", "node, edge", (evt) => { if (on.out) on.out(evt.target, evt); });

  return {
    cy, timing, applyFilters, setHighlight, setSelected, home,
    nodeEl: (i) => nodeEls[i], edgeEl: (j) => edgeEls[j],
    get visibleEdges() { return visibleCount; },
    maxWeight: m ? Math.abs(w[order[0]]) : 0,
    destroy() { if (resize) resize.disconnect(); cy.destroy(); },
  };
}
