// PatchingTable: activation patching as a layer x token (or head) table on a diverging scale
// (0 = the corrupted run, 1 = the clean run). The grid is lib/token_table.js, shared with the
// lens table. Layer index of a row: the site's (resid: 0 = embeddings, l = after block l).
import { defineView } from "../lib/widget.js";
import { h, tooltip, showToken, fmt } from "../lib/dom.js";
import { NAN_COLOR, saturation, effectColor } from "../lib/colors.js";
import { at } from "../lib/codec.js";
import { tokenGrid, gridCss, injectCss } from "../lib/token_table.js";

/** Colour scales: saturate at ±1 (1 = the clean run) or at the largest |effect|. */
export const SCALES = { unit: "±1 (clean run = 1)", max: "max |effect|" };

// ------------------------------------------------------------------------------ pure logic

// the diverging scale (shared with the lens table's "diff" colouring) lives in lib/colors.js
export { NAN_COLOR, saturation, effectColor };

/** Text of a cell: the effect with two decimals ("0.00", never "-0.00"), "–" for NaN. */
export function effectText(v) {
  if (Number.isNaN(v)) return "–";
  const t = v.toFixed(2);
  return t === "-0.00" ? "0.00" : t;
}

/** Grid cell (r, c) <-> (row, col) of the result: rows are layers unless transposed. */
export function cellToRC(r, c, transposed) {
  return transposed ? { row: c, col: r } : { row: r, col: c };
}
export function rcToCell(row, col, transposed) {
  return transposed ? { r: col, c: row } : { r: row, c: col };
}

/** The selection a cell stands for: the site's layer, and its position or head. */
export function selectionOf(data, row, col) {
  const layer = data.layers.data[row];
  if (data.kind === "head") return { layer, head: col };
  return { layer, position: data.positions.data[col] };
}

/** Row and column (-1 where none) that a selection points at. */
export function cellOfSelection(data, sel) {
  const row = Number.isInteger(sel.layer) ? data.layers.data.indexOf(sel.layer) : -1;
  let col = -1;
  if (data.kind === "head") {
    if (Number.isInteger(sel.head) && sel.head >= 0 && sel.head < data.columns.length) col = sel.head;
  } else if (Number.isInteger(sel.position)) {
    col = data.positions.data.indexOf(sel.position);
  }
  return { row, col };
}

/** What a row's layer index means at this site. */
export function layerDescription(site, layer) {
  if (site === "resid") return layer === 0 ? "embeddings" : `after block ${layer}`;
  return `block ${layer}`;
}

/** The metric in words: "logit_diff (' Paris' − ' Rome')". */
export function metricDescription(data) {
  const q = (s) => JSON.stringify(s);
  if (data.metric === "logit_diff" && data.answer != null && data.wrong != null) {
    return `logit_diff (${q(data.answer)} − ${q(data.wrong)})`;
  }
  if (data.answer != null) return `${data.metric} (${q(data.answer)})`;
  return data.metric || "metric";
}

// ------------------------------------------------------------------------------ style

const CSS = `${gridCss(".mri-patching_table", "mri-patch")}
.mri-patching_table .mri-patch-cell { text-align: right; font-variant-numeric: tabular-nums; }
.mri-patching_table .mri-patch-cell.mri-patch-linehi { box-shadow: inset 0 2px 0 #f0b400, inset 0 -2px 0 #f0b400; }
.mri-patching_table .mri-patch-legend { display: inline-flex; align-items: center; gap: 4px; color: var(--mri-muted); }
.mri-patching_table .mri-patch-bar { display: inline-block; width: 120px; height: 10px; border: 1px solid var(--mri-border); }
.mri-patching_table .mri-patch-tok, .mri-tooltip .mri-patch-tok { font-family: var(--jp-code-font-family, ui-monospace, monospace); white-space: pre; }
`;

// ------------------------------------------------------------------------------ view

const tok = (s) => h("span", { class: "mri-patch-tok" }, JSON.stringify(s ?? ""));

function cellSummary(data, row, col) {
  const layer = data.layers.data[row];
  const colLine = data.kind === "head"
    ? h("div", {}, `head ${col} (${data.columns[col]})`)
    : (() => {
      const pos = data.positions.data[col];
      const clean = data.clean_tokens[pos];
      const differs = clean != null && clean !== data.corrupt_tokens[pos];
      return h("div", {}, `#${pos} `, tok(data.columns[col]), ...(differs ? [" (clean ", tok(clean), ")"] : []));
    })();
  return [
    h("div", {}, `layer ${data.layer_names[row]} (${layerDescription(data.site, layer)}) · ${data.site}`),
    colLine,
    h("div", {}, `effect ${fmt(at(data.effect, row, col), 3)}`),
    h("div", {}, `${metricDescription(data)} patched ${fmt(at(data.raw, row, col), 3)}`),
    h("div", {}, `clean ${fmt(data.clean_metric, 3)} · corrupted ${fmt(data.corrupt_metric, 3)}`),
  ];
}

function buildToolbar(ctx) {
  const { model, state } = ctx;
  const scale = h("select", { class: "mri-patch-scale", "aria-label": "colour scale" },
    Object.entries(SCALES).map(([key, label]) => h("option", { value: key }, label)));
  scale.addEventListener("change", () => { model.set("scale", scale.value); model.save_changes(); });
  const transpose = h("input", { type: "checkbox", class: "mri-patch-transpose" });
  transpose.addEventListener("change", () => { model.set("transpose", transpose.checked); model.save_changes(); });
  const bar = h("span", { class: "mri-patch-bar" });
  const lo = h("span", { class: "mri-patch-lo" }), hi = h("span", { class: "mri-patch-hi" });
  const ends = h("span", { class: "mri-patch-ends mri-muted" });
  state.legend = { bar, lo, hi, ends, scale, transpose };
  return h("div", { class: "mri-toolbar", "data-lm-suppress-shortcuts": "true" },
    h("label", {}, "colour ", scale),
    h("label", {}, transpose, " tokens as rows"),
    h("span", { class: "mri-patch-legend" }, lo, bar, hi),
    ends);
}

function updateLegend(ctx) {
  const { data, state, model } = ctx;
  const scale = model.get("scale") || "unit";
  const sat = saturation(data.effect, scale);
  state.sat = sat;
  state.legend.lo.textContent = fmt(-sat, 2);
  state.legend.hi.textContent = fmt(sat, 2);
  state.legend.bar.style.background = `linear-gradient(to right, ${effectColor(-sat, sat)}, ${effectColor(0, sat)}, ${effectColor(sat, sat)})`;
  state.legend.ends.textContent = `0 = corrupted run (${metricDescription(data)} ${fmt(data.corrupt_metric, 3)}) · `
    + `1 = clean run (${fmt(data.clean_metric, 3)})`;
  state.legend.scale.value = scale;
  state.legend.transpose.checked = !!model.get("transpose");
}

function buildTable(ctx) {
  const { data, state, model } = ctx;
  const R = data.layer_names.length, C = data.columns.length;
  const T = !!model.get("transpose");
  const colWord = data.kind === "head" ? "head" : "token";
  const colLabel = (col) => (data.kind === "head"
    ? [data.columns[col]]
    : [h("span", { class: "mri-patch-idx" }, String(data.positions.data[col])), showToken(data.columns[col])]);
  const label = (isRow, i) => ((T ? !isRow : isRow) ? [data.layer_names[i]] : colLabel(i));
  // a header is lit when the pinned cell (or, with none pinned, the selection) is on its line
  const lit = (isRow, i, f) => {
    const isLayer = T ? !isRow : isRow;
    const p = f.pinned;
    if (p) return isLayer ? p.row === i : p.col === i;
    return isLayer ? f.selRow === i : f.selCol === i;
  };
  const grid = tokenGrid({
    host: state.tableHost, prefix: "mri-patch", rows: T ? C : R, cols: T ? R : C, height: model.get("height") || 480,
    corner: T ? `${colWord} \\ layer` : `layer \\ ${colWord}`, label: "activation patching table", tip: state.tip,
    frame: () => ({ pinned: state.pinned, selRow: state.selRow, selCol: state.selCol, sat: state.sat }),
    cell(r, c, f) {
      const { row, col } = cellToRC(r, c, T);
      const v = at(data.effect, row, col);
      const line = !f.pinned && (f.selRow === row || f.selCol === col);
      return { bg: effectColor(v, f.sat), text: effectText(v),
        cls: line ? "mri-patch-linehi" : "", data: { row, col } };
    },
    rowHead: (r, f) => ({ hi: lit(true, r, f), content: label(true, r) }),
    colHead: (c, f) => ({ hi: lit(false, c, f), content: label(false, c) }),
    pinned: (f) => (f.pinned ? rcToCell(f.pinned.row, f.pinned.col, T) : null),
    onPick(rc) {
      if (!rc) { state.pinned = null; grid.paint(); return; }
      const { row, col } = cellToRC(rc.r, rc.c, T);
      pin(row, col);
    },
    tooltip(r, c) {
      const { row, col } = cellToRC(r, c, T);
      return cellSummary(data, row, col);
    },
    scroll: state.scroll && state.scroll.T === T ? state.scroll : null,
    onScroll(top, left) { state.scroll = { T, top, left }; },
  });
  function pin(row, col, { select = true } = {}) {
    state.pinned = { row, col };
    const { r, c } = rcToCell(row, col, T);
    grid.reveal(r, c);
    grid.paint();
    if (select) ctx.selection.set(selectionOf(data, row, col));
  }
  return { paint: grid.paint, pin, grid };
}

function draw(ctx) {
  injectCss("mri-patching_table-css", CSS);
  const { data, root, model, state } = ctx;
  if (!data?.effect || !data.layer_names) return;
  const R = data.layer_names.length, C = data.columns.length;
  if (!R || !C) return;
  if (state.pinned && (state.pinned.row >= R || state.pinned.col >= C)) state.pinned = null;
  state.tip = tooltip(root);
  root.appendChild(buildToolbar(ctx));
  state.tableHost = h("div", { class: "mri-patch-tablehost" });
  root.appendChild(state.tableHost);
  const what = data.kind === "head" ? `${C} heads` : `${C} tokens`;
  root.appendChild(h("div", { class: "mri-muted", style: { marginTop: "4px" } },
    `${data.model_name ? `${data.model_name} · ` : ""}patching ${data.site} · ${R} layers × ${what}`
    + " · cell = clean activation restored into the corrupted run · click a cell to pin it, arrows move"));
  updateLegend(ctx);
  state.table = buildTable(ctx);
  if (state.pinned) state.table.pin(state.pinned.row, state.pinned.col, { select: false });
  else state.table.paint();

  if (!state.bound) {
    // options Python (or the toolbar) can change without new data
    state.bound = true;
    const onScale = () => { if (ctx.data && state.table) { updateLegend(ctx); state.table.paint(); } };
    const onTranspose = () => {
      if (!ctx.data || !state.tableHost) return;
      updateLegend(ctx);
      state.table = buildTable(ctx);
      if (state.pinned) state.table.pin(state.pinned.row, state.pinned.col, { select: false });
      else state.table.paint();
    };
    model.on("change:scale", onScale);
    model.on("change:transpose", onTranspose);
    ctx.cleanup = () => {
      model.off("change:scale", onScale);
      model.off("change:transpose", onTranspose);
    };
  }
}

function onSelection(ctx, sel) {
  const { data, state } = ctx;
  if (!state.table || !data?.effect) return;
  const { row, col } = cellOfSelection(data, sel);
  const p = state.pinned;
  state.selRow = null;
  state.selCol = null;
  if (row >= 0 && col >= 0) {
    if (!p || p.row !== row || p.col !== col) state.table.pin(row, col, { select: false });
    else state.table.paint();
    return;
  }
  // only one of the two is here (another view may select a layer or token this table lacks)
  if (row >= 0 && p) { state.table.pin(row, p.col, { select: false }); return; }
  if (col >= 0 && p) { state.table.pin(p.row, col, { select: false }); return; }
  if (row >= 0) state.selRow = row;
  if (col >= 0) state.selCol = col;
  state.table.paint();
}

/** Traits of PatchingTable (mri_widgets/widgets/patching_table.py): the result, redrawn on change ... */
export const TRAITS = ["model_name", "site", "kind", "metric", "answer", "wrong", "clean_metric", "corrupt_metric",
  "layers", "layer_names", "columns", "positions", "clean_tokens", "corrupt_tokens", "effect", "raw"];
/** ... and the parameters the view reads and sets itself. */
export const PARAMS = ["transpose", "height", "scale"];

export default defineView({ name: "patching_table", traits: TRAITS, params: PARAMS, draw, onSelection });
