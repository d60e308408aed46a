// LayerGrid: small multiples of every layer's region heatmap; hover for counts and example texts,
// click to select (layer, region); the selected region's documents are followed through layers.
import { defineView } from "../lib/widget.js";
import { h, tooltip, fmt } from "../lib/dom.js";
import { diverging } from "../lib/colors.js";

const SVG = "http://www.w3.org/2000/svg";
const CSS = `
.mri-layer_grid .mri-grids { display: flex; flex-wrap: wrap; gap: 10px 12px; }
.mri-layer_grid figure { margin: 0; }
.mri-layer_grid figcaption { font-size: 11px; color: var(--mri-muted); text-align: center; margin-bottom: 2px; }
.mri-layer_grid figure.mri-sel-layer figcaption { color: var(--mri-accent); font-weight: 600; }
.mri-layer_grid svg { display: block; border: 1px solid var(--mri-border); }
.mri-layer_grid rect.mri-cell { cursor: pointer; }
.mri-layer_grid rect.mri-cell:hover { stroke: var(--mri-hover); stroke-width: 1; }
.mri-layer_grid rect.mri-follow { stroke: var(--mri-strong); stroke-width: 1.5; }
.mri-layer_grid rect.mri-selected { stroke: var(--mri-accent); stroke-width: 2.5; }
.mri-layer_grid .mri-legend { display: flex; flex-wrap: wrap; gap: 10px; margin: 2px 0 6px; }
.mri-layer_grid .mri-legend .sw { display: inline-block; width: 10px; height: 10px; margin-right: 4px; vertical-align: -1px; }
.mri-layer_grid .mri-example { color: var(--mri-tip-muted); margin-top: 3px; }
`;

function injectCss() {
  if (typeof document === "undefined" || document.getElementById("mri-layer_grid-css")) return;
  document.head.appendChild(h("style", { id: "mri-layer_grid-css" }, CSS));
}

function svgEl(tag, attrs = {}) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) if (v != null) el.setAttribute(k, String(v));
  return el;
}

function hexRgb(hex) {
  const m = /^#?([0-9a-f]{6})$/i.exec(hex || "");
  if (!m) return [120, 120, 120];
  const n = parseInt(m[1], 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

/** White -> colour at intensity t in [0, 1]. */
export function tint(hex, t) {
  t = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0));
  const c = hexRgb(hex);
  const m = c.map((v) => Math.round(255 + (v - 255) * t));
  return `rgb(${m[0]},${m[1]},${m[2]})`;
}

const EMPTY = "#f6f6f6";

/**
 * The dense counts {shape: [L, K, g, g], data} from the sparse ones Python sends: `cells` (flat
 * layer * g * g + region of each non-empty region) and `cell_counts` ((n_cells, K) per label).
 */
export function denseCounts(cells, cellCounts, nLayers, grid) {
  const K = cellCounts.shape[1];
  const R = grid * grid;
  const out = new Uint32Array(nLayers * K * R);
  const c = cells.data, v = cellCounts.data;
  for (let i = 0; i < c.length; i++) {
    const l = Math.floor(c[i] / R), r = c[i] - l * R;
    for (let k = 0; k < K; k++) out[(l * K + k) * R + r] = v[i * K + k];
  }
  return { shape: [nLayers, K, grid, grid], data: out };
}

/**
 * Fill colours of every cell for the current mode: returns {fill(l, r) -> css, legend: [nodes]}.
 * counts: (L, K, g, g) decoded uint16 (int32 for huge corpora).
 */
export function colourer(data, mode, label, labels) {
  const [L, K, g] = data.counts.shape;
  const R = g * g;
  const c = data.counts.data;
  const at = (l, k, r) => c[(l * K + k) * R + r];
  const names = data.label_names;
  const cols = data.label_colors;
  if (mode === "all") {
    let max = 0;
    const tot = new Float64Array(L * R), dom = new Int32Array(L * R);
    for (let l = 0; l < L; l++) for (let r = 0; r < R; r++) {
      let s = 0, best = -1, bk = 0;
      for (let k = 0; k < K; k++) { const v = at(l, k, r); s += v; if (v > best) { best = v; bk = k; } }
      tot[l * R + r] = s; dom[l * R + r] = bk; max = Math.max(max, s);
    }
    return {
      fill: (l, r) => (tot[l * R + r] > 0 ? tint(cols[dom[l * R + r]], 0.25 + 0.75 * Math.sqrt(tot[l * R + r] / max)) : EMPTY),
      legend: ["colour = dominant label, intensity = documents (square root):", ...names.map((n, k) => [n, cols[k]])],
    };
  }
  if (mode === "diff") {
    const [a, b] = (labels || []).map((n) => names.indexOf(n));
    const na = Math.max(1, data.label_totals[a] || 0), nb = Math.max(1, data.label_totals[b] || 0);
    let max = 0;
    const d = new Float64Array(L * R);
    for (let l = 0; l < L; l++) for (let r = 0; r < R; r++) {
      const v = (a >= 0 ? at(l, a, r) / na : 0) - (b >= 0 ? at(l, b, r) / nb : 0);
      d[l * R + r] = v; max = Math.max(max, Math.abs(v));
    }
    return {
      fill: (l, r) => (d[l * R + r] === 0 && (a < 0 || at(l, a, r) === 0) && (b < 0 || at(l, b, r) === 0)
        ? EMPTY : diverging(max > 0 ? d[l * R + r] / max : 0)),
      legend: [`share of ${names[a]} minus share of ${names[b]}:`, [`more ${names[a]}`, diverging(1)], [`more ${names[b]}`, diverging(-1)]],
      value: (l, r) => d[l * R + r],
    };
  }
  // one label (or all documents)
  const k = names.indexOf(label);
  const colour = k >= 0 ? cols[k] : "#3b5b92";
  let max = 0;
  const v = new Float64Array(L * R);
  for (let l = 0; l < L; l++) for (let r = 0; r < R; r++) {
    let s = 0;
    if (k >= 0) s = at(l, k, r); else for (let j = 0; j < K; j++) s += at(l, j, r);
    v[l * R + r] = s; max = Math.max(max, s);
  }
  return {
    fill: (l, r) => (v[l * R + r] > 0 ? tint(colour, 0.2 + 0.8 * Math.sqrt(v[l * R + r] / max)) : EMPTY),
    legend: [`documents${k >= 0 ? ` of ${label}` : ""} per region (square-root scale, max ${max}):`, [k >= 0 ? label : "all", colour]],
  };
}

function toolbar(ctx) {
  const { model, data } = ctx;
  const mode = model.get("mode") || "label";
  const names = data.label_names;
  const set = (patch) => { for (const [k, v] of Object.entries(patch)) model.set(k, v); model.save_changes(); };
  const modeSel = h("select", { class: "mri-mode", "aria-label": "colour mode",
    onchange: (e) => set({ mode: e.target.value }) },
  ...[["label", "one label"], ["all", "all labels"], ["diff", "difference"]].map(([v, t]) =>
    h("option", { value: v, selected: v === mode }, t)));
  const bar = h("div", { class: "mri-toolbar" }, h("label", {}, "show"), modeSel);
  if (mode === "label") {
    bar.appendChild(h("select", { class: "mri-label", "aria-label": "label",
      onchange: (e) => set({ label: e.target.value === "" ? null : e.target.value }) },
    h("option", { value: "", selected: model.get("label") == null }, "all documents"),
    ...names.map((n) => h("option", { value: n, selected: n === model.get("label") }, n))));
  } else if (mode === "diff") {
    const labs = model.get("labels") || [];
    [0, 1].forEach((i) => {
      if (i === 1) bar.appendChild(h("label", {}, "minus"));
      bar.appendChild(h("select", { class: `mri-diff-${i}`, "aria-label": i ? "label b" : "label a",
        onchange: (e) => { const next = [...labs]; next[i] = e.target.value; set({ labels: next }); } },
      ...names.map((n) => h("option", { value: n, selected: n === labs[i] }, n))));
    });
  }
  return bar;
}

function draw(ctx) {
  injectCss();
  const { data, root, model } = ctx;
  if (!ctx.state.listening) {
    ctx.state.listening = true;
    const again = () => { root.replaceChildren(); draw(ctx); };
    for (const k of ["mode", "label", "labels"]) model.on(`change:${k}`, again);
    ctx.cleanup = () => { for (const k of ["mode", "label", "labels"]) model.off(`change:${k}`, again); };
  }
  if (ctx.state.membersOf !== data) { ctx.state.members = new Map(); ctx.state.membersOf = data; } // documents per region
  if (!data.counts) data.counts = denseCounts(data.cells, data.cell_counts, data.layer_ids.length, data.grid);
  const [L, _K, g] = data.counts.shape;
  const R = g * g;
  const cell = data.cell || 12;
  const mode = model.get("mode") || "label";
  const col = colourer(data, mode, model.get("label"), model.get("labels"));
  if (data.title) root.appendChild(h("div", { class: "mri-title" }, data.title));
  root.appendChild(toolbar(ctx));
  root.appendChild(h("div", { class: "mri-legend" }, col.legend.map((x) => (typeof x === "string"
    ? h("span", { class: "mri-muted" }, x)
    : h("span", {}, h("span", { class: "sw", style: { background: x[1] } }), x[0])))));
  const tip = tooltip(root);
  if (!ctx.state.examples) ctx.state.examples = new Map();
  const cache = ctx.state.examples;
  const grids = h("div", { class: "mri-grids" });
  ctx.cells = [];
  ctx.figures = [];
  for (let l = 0; l < L; l++) {
    const svg = svgEl("svg", { width: g * cell, height: g * cell, viewBox: `0 0 ${g * cell} ${g * cell}`, role: "img",
      "aria-label": `${data.layer_names[l]} region heatmap` });
    const rects = [];
    for (let r = 0; r < R; r++) {
      const row = Math.floor(r / g), c = r % g;
      const rect = svgEl("rect", { x: c * cell, y: (g - 1 - row) * cell, width: cell, height: cell,
        fill: col.fill(l, r), class: "mri-cell", "data-layer": data.layer_ids[l], "data-region": r });
      rects.push(rect);
      svg.appendChild(rect);
    }
    svg.addEventListener("mousemove", (e) => {
      const rect = e.target.closest ? e.target.closest("rect.mri-cell") : null;
      if (!rect) return;
      const r = Number(rect.getAttribute("data-region"));
      if (ctx.state.hover === `${l}:${r}`) return;
      ctx.state.hover = `${l}:${r}`;
      showTip(ctx, tip, e, l, r, col, cache);
    });
    svg.addEventListener("mouseleave", () => { ctx.state.hover = null; tip.hide(); });
    svg.addEventListener("click", (e) => {
      const rect = e.target.closest ? e.target.closest("rect.mri-cell") : null;
      if (!rect) return;
      ctx.selection.set({ layer: data.layer_ids[l], region: Number(rect.getAttribute("data-region")) });
    });
    const fig = h("figure", { "data-layer": data.layer_ids[l] }, h("figcaption", {}, data.layer_names[l]), svg);
    ctx.figures.push(fig);
    ctx.cells.push(rects);
    grids.appendChild(fig);
  }
  root.appendChild(grids);
  if (ctx.sel) onSelection(ctx, ctx.sel);
}

function showTip(ctx, tip, e, l, r, col, cache) {
  const { data } = ctx;
  const [, K, g] = data.counts.shape;
  const R = g * g;
  const lines = [h("div", { style: { fontWeight: "600" } }, `${data.layer_names[l]} \u00b7 region ${r} (row ${Math.floor(r / g)}, col ${r % g})`)];
  let total = 0;
  const rows = [];
  for (let k = 0; k < K; k++) {
    const v = data.counts.data[(l * K + k) * R + r];
    total += v;
    rows.push(h("div", {}, h("span", { style: { display: "inline-block", width: "8px", height: "8px", background: data.label_colors[k], marginRight: "4px" } }),
      `${data.label_names[k]}: ${v}`));
  }
  lines.push(...rows, h("div", {}, `total: ${total}`));
  if (col.value) lines.push(h("div", {}, `difference of shares: ${fmt(col.value(l, r), 3)}`));
  const key = `${l}:${r}`;
  const withExamples = (ex) => [...lines, ...ex.map((x) => h("div", { class: "mri-example" }, `[${x.label}] ${x.text}`))];
  tip.show(e.clientX, e.clientY, total && cache.has(key) ? withExamples(cache.get(key)) : lines);
  if (total && !cache.has(key)) {
    ctx.invoke("region_examples", { layer: data.layer_ids[l], region: r, k: 3 }).then((ex) => {
      cache.set(key, Array.isArray(ex) ? ex : []);
      if (ctx.state.hover === key) tip.show(e.clientX, e.clientY, withExamples(cache.get(key)));
    }).catch((err) => console.warn(`mri_widgets layer_grid: no examples (${err.message})`));
  }
}

function onSelection(ctx, sel) {
  const { data } = ctx;
  if (!ctx.cells) return;
  const g = data.counts.shape[2];
  const R = g * g;
  const li = data.layer_ids.indexOf(sel.layer);
  ctx.figures.forEach((f, l) => f.classList.toggle("mri-sel-layer", l === li));
  ctx.cells.forEach((rects) => rects.forEach((rc) => { rc.classList.remove("mri-selected"); rc.classList.remove("mri-follow"); }));
  if (li < 0 || sel.region == null || sel.region < 0 || sel.region >= R) return;
  // follow the documents of the selected region through every layer: asked of Python once per region
  if (!ctx.state.members) ctx.state.members = new Map();
  const key = `${sel.layer}:${sel.region}`;
  const known = ctx.state.members.get(key);
  if (known) outlineFollowed(ctx, known);
  else {
    ctx.invoke("region_members", { layer: sel.layer, region: sel.region }).then((res) => {
      const regions = (res?.regions || []).map((a) => Array.from(a.data ?? a));
      ctx.state.members.set(key, regions);
      const now = ctx.sel;
      if (now && now.layer === sel.layer && now.region === sel.region) onSelection(ctx, now);
    }).catch((err) => console.warn(`mri_widgets layer_grid: no region members (${err.message})`));
  }
  const rc = ctx.cells[li][sel.region];
  rc.classList.remove("mri-follow");
  rc.classList.add("mri-selected");
  rc.parentNode.appendChild(rc); // draw the outline on top
}

/** Outline, in every layer, the regions holding the selected region's documents. */
function outlineFollowed(ctx, regions) {
  regions.forEach((list, l) => {
    const rects = ctx.cells[l];
    if (!rects) return;
    for (const r of list) {
      const rc = rects[r];
      if (!rc) continue;
      rc.classList.add("mri-follow");
      rc.parentNode.appendChild(rc); // outlines on top of their neighbours
    }
  });
}

/** Traits of LayerGrid (mri_widgets/widgets/layer_grid.py): the data, redrawn on change ... */
export const TRAITS = ["cells", "cell_counts", "label_names", "label_colors", "label_totals", "layer_names", "layer_ids", "grid",
  "cell", "title"];
/** ... and the parameters the view reads and sets itself. */
export const PARAMS = ["mode", "label", "labels"];

export default defineView({ name: "layer_grid", traits: TRAITS, params: PARAMS, draw, onSelection });
