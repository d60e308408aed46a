// GraphView: a graph at positions computed in Python (cytoscape.js), with edge filters, tooltips,
// highlight from Python and the shared selection (each node may carry a selection patch).
import { defineView } from "../lib/widget.js";
import { h, tooltip, fmt, notice } from "../lib/dom.js";
import { budgetText, createGraph, drawnHighlight, nextBudget } from "../lib/graph.js";
import { decodeTree } from "../lib/codec.js";
import { ablateBar } from "../lib/ablate.js";
import { comparisonPanel } from "../lib/compare.js";

const CSS = `
.mri-graph_view .mri-graph-box { position: relative; border: 1px solid var(--mri-border); border-radius: 3px; overflow: hidden; }
.mri-graph_view .mri-graph-canvas { width: 100%; height: 100%; }
.mri-graph_view .mri-toolbar input[type=range] { width: 140px; vertical-align: middle; }
.mri-graph_view .mri-toolbar input[type=number] { width: 64px; }
.mri-graph_view .mri-status { color: var(--mri-muted); margin-left: auto; flex: 1 1 160px; min-width: 0; text-align: right;
  white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.mri-graph_view .mri-legend { display: flex; flex-wrap: wrap; gap: 10px; margin: 4px 0; }
.mri-graph_view .mri-legend span.sw { display: inline-block; width: 10px; height: 10px; border-radius: 50%; margin-right: 4px; vertical-align: -1px; }
`;

// the before/after panel (shared with the lens table) lives in lib/compare.js
export { comparisonPanel };

/** The head or neuron a selection patch names, as an ablation target, or null. */
export function targetOf(patch) {
  if (!patch || patch.layer == null) return null;
  if (patch.head != null) return { kind: "head", layer: patch.layer, index: patch.head };
  if (patch.neuron != null) return { kind: "neuron", layer: patch.layer, index: patch.neuron };
  return null;
}

function injectCss() {
  if (typeof document === "undefined" || document.getElementById("mri-graph_view-css")) return;
  document.head.appendChild(h("style", { id: "mri-graph_view-css" }, CSS));
}

function fmtWeight(x) {
  return Number.isInteger(x) ? String(x) : fmt(x, 3);
}

/** Lines "name: value" for a row of parts (labels with their counts), largest first. */
function partLines(data, arr, i) {
  if (!arr || !data.part_names?.length) return [];
  const K = arr.shape[1];
  const rows = [];
  for (let k = 0; k < K; k++) rows.push([data.part_names[k], arr.data[i * K + k], data.part_colors[k]]);
  return rows.filter((r) => r[1] > 0).sort((a, b) => b[1] - a[1]).map(([name, v, c]) => h("div", {},
    h("span", { style: { display: "inline-block", width: "8px", height: "8px", background: c, marginRight: "4px" } }),
    `${name}: ${fmtWeight(v)}`));
}

function nodeTip(ctx, i) {
  const { data } = ctx;
  const out = [];
  const head = data.node_tooltip ? data.node_tooltip[i] : data.label[i];
  if (head) out.push(h("div", {}, head));
  out.push(...partLines(data, data.parts, i));
  const hl = ctx.state.hl;
  if (hl?.nodes && hl.node_weight) {
    const r = Array.from(hl.nodes.data).indexOf(i);
    if (r >= 0) out.push(h("div", { style: { marginTop: "3px", fontWeight: "600" } }, `selected ${data.weight_name || ""}: ${fmtWeight(hl.node_weight.data[r])}`));
  }
  return out;
}

function edgeTip(ctx, j) {
  const { data } = ctx;
  const s = data.edge_source.data[j], t = data.edge_target.data[j];
  const out = [];
  if (data.edge_tooltip?.[j]) out.push(h("div", {}, data.edge_tooltip[j]));
  else out.push(h("div", {}, `${data.label[s] || `#${s}`} \u2192 ${data.label[t] || `#${t}`}`));
  out.push(h("div", {}, `${data.weight_name || "weight"}: ${fmtWeight(data.edge_weight.data[j])}`));
  out.push(...partLines(data, data.edge_parts, j));
  const hl = ctx.state.hl;
  if (hl?.edges && hl.edge_weight) {
    const r = Array.from(hl.edges.data).indexOf(j);
    if (r >= 0) out.push(h("div", { style: { marginTop: "3px", fontWeight: "600" } }, `selected ${data.weight_name || ""}: ${fmtWeight(hl.edge_weight.data[r])}`));
  }
  return out;
}

/**
 * Controls asked for by Python (data.controls): each sets the synced trait `name`.
 * {name, label, type: "select" | "text" | "number", value, options: [[value, label], ...], placeholder}
 */
function controls(ctx) {
  const { data, model } = ctx;
  const list = Array.isArray(data.controls) ? data.controls : [];
  if (!list.length) return null;
  const bar = h("div", { class: "mri-toolbar mri-controls" });
  const send = (name, value) => { model.set(name, value); model.save_changes(); };
  for (const c of list) {
    const cls = `mri-control-${String(c.name).replace(/[^A-Za-z0-9_-]/g, "_")}`;
    let input;
    if (c.type === "select") {
      const opts = Array.isArray(c.options) ? c.options : [];
      input = h("select", { class: cls, "aria-label": c.label || c.name,
        onchange: (e) => { const o = opts[Number(e.target.value)]; if (o) send(c.name, o[0]); } },
      ...opts.map((o, i) => h("option", { value: i, selected: o[0] === c.value }, String(o[1] ?? o[0]))));
    } else {
      const number = c.type === "number";
      const commit = (e) => send(c.name, number ? Number(e.target.value) : e.target.value);
      input = h("input", { type: number ? "number" : "text", class: cls, "aria-label": c.label || c.name,
        placeholder: c.placeholder || null, value: c.value == null ? "" : String(c.value),
        onchange: commit,
        // Enter commits; keep the notebook's own shortcuts (Enter = edit cell) away from the field
        onkeydown: (e) => { e.stopPropagation(); if (e.key === "Enter") commit(e); } });
    }
    bar.appendChild(h("label", {}, c.label || c.name));
    bar.appendChild(input);
  }
  return bar;
}

function draw(ctx) {
  injectCss();
  const { data, root, model } = ctx;
  if (ctx.state.graph) { ctx.state.graph.destroy(); ctx.state.graph = null; }
  if (!data?.x) { root.appendChild(notice("No graph yet.")); return; }
  const m = data.edge_source.data.length;
  if (data.title) root.appendChild(h("div", { class: "mri-title" }, data.title));
  const ctl = controls(ctx);
  if (ctl) root.appendChild(ctl);
  // interventions (FlowGraph): the clean run beside the intervened one, and ablate buttons
  const cmpBox = h("div", { class: "mri-compare-box" });
  const showComparison = () => cmpBox.replaceChildren(...[comparisonPanel(model.get("comparison"))].filter(Boolean));
  showComparison();
  const ablate = ablateBar(ctx, () => ctx.state.ablateTarget || null);
  ctx.state.ablate = ablate;
  root.appendChild(cmpBox);
  root.appendChild(ablate.el);

  // a graph over its edge budget: say so, and offer more
  const partly = budgetText(data);
  if (partly) {
    const budget = Number(model.get("edge_budget") || 0);
    const total = data.budget_info.edges;
    const next = nextBudget(budget, total);
    const input = h("input", { type: "number", min: 1, step: 1000, value: budget, class: "mri-edge-budget",
      "aria-label": "edge budget: most edges drawn" });
    const set = (v) => { model.set("edge_budget", Math.max(0, Math.floor(v))); model.save_changes(); };
    input.addEventListener("change", () => set(Number(input.value) || 0));
    root.appendChild(h("div", { class: "mri-notice mri-info mri-budget" }, `${partly} `,
      h("button", { class: "mri-more-edges", title: "draw more edges (slower to draw)", onclick: () => set(next) },
        next >= total ? `show all ${total.toLocaleString("en-US")}` : `show ${next.toLocaleString("en-US")}`),
      h("label", {}, " edge budget "), input));
  }

  // toolbar: minimum weight, top-k, fit
  const maxW = (() => { let x = 0; for (const v of data.edge_weight.data) x = Math.max(x, Math.abs(v)); return x; })();
  const intW = data.edge_weight.data.every((v) => Number.isInteger(v));
  const minInput = h("input", { type: "range", min: 0, max: maxW || 1, step: intW ? 1 : (maxW || 1) / 100,
    value: model.get("min_weight") || 0, class: "mri-min-weight", "aria-label": "minimum edge weight" });
  const minText = h("span", { class: "mri-min-weight-value" }, fmtWeight(Number(model.get("min_weight") || 0)));
  const topInput = h("input", { type: "number", min: 0, step: 1, value: model.get("top_k") || 0, class: "mri-top-k",
    "aria-label": "show only the k heaviest edges (0: all)" });
  const status = h("span", { class: "mri-status" });
  const fit = h("button", { class: "mri-fit", title: "show the whole graph",
    onclick: () => ctx.state.graph?.cy.fit(undefined, 24) }, "fit");
  // graphs that start zoomed in (data.min_zoom) get a button back to that first view
  const start = data.min_zoom > 0 ? h("button", { class: "mri-home", title: "back to the first view: readable zoom, top of the graph",
    onclick: () => ctx.state.graph?.home() }, "start") : null;
  minInput.addEventListener("input", () => {
    model.set("min_weight", Number(minInput.value));
    model.save_changes();
  });
  topInput.addEventListener("change", () => {
    model.set("top_k", Math.max(0, Math.floor(Number(topInput.value) || 0)));
    model.save_changes();
  });
  root.appendChild(h("div", { class: "mri-toolbar" },
    h("label", {}, `min ${data.weight_name || "weight"} `), minInput, minText,
    h("label", {}, " top-k edges "), topInput, fit, start, status));
  if (data.part_names?.length) {
    root.appendChild(h("div", { class: "mri-legend" }, data.part_names.map((name, k) =>
      h("span", {}, h("span", { class: "sw", style: { background: data.part_colors[k] } }), name))));
  }
  const box = h("div", { class: "mri-graph-box", style: { height: `${data.height || 520}px` } });
  const canvas = h("div", { class: "mri-graph-canvas" });
  box.appendChild(canvas);
  root.appendChild(box);
  const tip = tooltip(root);
  const details = new Map();

  const clientXY = (evt) => {
    const oe = evt.originalEvent;
    if (oe && oe.clientX != null) return [oe.clientX, oe.clientY];
    const rb = canvas.getBoundingClientRect();
    const p = evt.renderedPosition || (evt.target.renderedPosition?.()) || { x: 0, y: 0 };
    return [rb.left + p.x, rb.top + p.y];
  };

  const graph = createGraph(canvas, data, {
    tap(_ele, _evt, patch) {
      if (patch) {
        ctx.state.ablateTarget = targetOf(patch);
        ctx.selection.set(patch);
        ablate.update();
      }
    },
    over(ele, evt) {
      const [x, y] = clientXY(evt);
      const kind = ele.data("kind");
      if (ele.isEdge()) tip.show(x, y, edgeTip(ctx, ele.data("index")));
      else if (kind === "node") {
        const i = ele.data("index");
        const content = nodeTip(ctx, i);
        tip.show(x, y, content);
        if (data.details_command) {
          const show = (lines) => { if (ctx.state.hover === i) tip.show(x, y, content, lines.map((s) => h("div", { class: "mri-detail" }, s))); };
          ctx.state.hover = i;
          if (details.has(i)) show(details.get(i));
          else ctx.invoke(data.details_command, { index: data.node_ids ? data.node_ids.data[i] : i }).then((lines) => {
            const list = Array.isArray(lines) ? lines.map(String) : [];
            details.set(i, list);
            show(list);
          }).catch(() => {});
        }
      } else if (kind === "group" || kind === "annotation") {
        const label = ele.data("label");
        if (label) tip.show(x, y, kind === "group" ? `${label} (double-click: collapse / expand)` : label);
      }
    },
    out() { ctx.state.hover = null; tip.hide(); },
  });
  // cytoscape sends no mouseout when the pointer leaves the canvas straight from a node
  canvas.addEventListener("mouseleave", () => { ctx.state.hover = null; tip.hide(); });
  ctx.state.graph = graph;
  root.__cy = graph.cy;
  canvas.__cy = graph.cy;

  const updateStatus = () => {
    const shown = graph.visibleEdges;
    const sel = root.dataset.selected ? ` · selected ${root.dataset.selected}` : "";
    status.textContent = `${data.x.data.length} nodes · ${shown}/${m} edges${sel}`;
    status.title = status.textContent; // the line is cut to its space (a long selection would move the canvas)
  };
  const applyFilters = () => {
    const mw = Number(model.get("min_weight") || 0), k = Number(model.get("top_k") || 0);
    minInput.value = mw;
    minText.textContent = fmtWeight(mw);
    topInput.value = k;
    const t0 = performance.now();
    graph.applyFilters(mw, k);
    root.dataset.filterMs = (performance.now() - t0).toFixed(1);
    updateStatus();
  };
  const applyHighlight = () => {
    const hl = drawnHighlight(decodeTree(model.get("highlight") || {}), data);
    ctx.state.hl = hl;
    const t0 = performance.now();
    const r = graph.setHighlight(hl);
    root.dataset.highlightMs = (performance.now() - t0).toFixed(1);
    root.dataset.highlightNodes = String(r.nodes);
    root.dataset.highlightEdges = String(r.edges);
    updateStatus();
  };
  // listeners live as long as this drawing; removed on redraw / unmount
  if (ctx.state.unlisten) ctx.state.unlisten();
  model.on("change:min_weight", applyFilters);
  model.on("change:top_k", applyFilters);
  model.on("change:highlight", applyHighlight);
  model.on("change:comparison", showComparison);
  model.on("change:ablation", ablate.update);
  ctx.state.unlisten = () => {
    model.off("change:comparison", showComparison);
    model.off("change:ablation", ablate.update);
    model.off("change:min_weight", applyFilters);
    model.off("change:top_k", applyFilters);
    model.off("change:highlight", applyHighlight);
  };
  ctx.cleanup = () => {
    if (ctx.state.unlisten) ctx.state.unlisten();
    if (ctx.state.graph) ctx.state.graph.destroy();
  };
  applyFilters();
  applyHighlight();
  if (ctx.sel) onSelection(ctx, ctx.sel);
  root.dataset.buildMs = graph.timing.built.toFixed(1);
  graph.cy.one("render", () => {
    root.dataset.firstRenderMs = (graph.timing.firstRender ?? graph.timing.built).toFixed(1);
  });
}

function onSelection(ctx, sel) {
  const graph = ctx.state.graph;
  // the ablation target: the head or neuron that changed last in the selection
  const prev = ctx.state.prevSel || {};
  const cur = ctx.state.ablateTarget;
  let kind = null;
  if (sel.neuron != null && sel.neuron !== prev.neuron) kind = "neuron";
  else if (sel.head != null && sel.head !== prev.head) kind = "head";
  else if (cur && (cur.kind === "head" ? sel.head : sel.neuron) != null) kind = cur.kind;
  else if (sel.head != null) kind = "head";
  else if (sel.neuron != null) kind = "neuron";
  ctx.state.ablateTarget = sel.layer == null || kind == null ? null
    : { kind, layer: sel.layer, index: kind === "head" ? sel.head : sel.neuron };
  ctx.state.prevSel = { ...sel };
  ctx.state.ablate?.update();
  if (!graph) return;
  const ids = graph.setSelected(sel);
  ctx.root.dataset.selected = ids.join(" ");
  const status = ctx.root.querySelector(".mri-status");
  if (status) {
    const base = status.textContent.replace(/ · selected .*$/, "");
    status.textContent = ids.length ? `${base} · selected ${ids.join(" ")}` : base;
    status.title = status.textContent;
  }
}

/** Traits of GraphView (mri_widgets/widgets/graph_view.py): the drawing, redrawn on change ... */
export const TRAITS = ["x", "y", "size", "color", "label", "node_tooltip", "shape", "parts", "select_keys", "select", "parent",
  "groups", "edge_source", "edge_target", "edge_weight", "edge_color", "edge_width", "edge_parts", "edge_tooltip",
  "part_names", "part_colors", "annotations", "controls", "title", "directed", "weight_name", "height",
  "details_command", "label_size", "label_position", "label_width", "min_zoom", "node_ids", "edge_ids", "budget_info"];
/** ... and the parameters the view reads and sets itself (subclasses add the traits their `controls` name). */
export const PARAMS = ["min_weight", "top_k", "highlight", "edge_budget"];

export default defineView({ name: "graph_view", traits: TRAITS, params: PARAMS, draw, onSelection });
