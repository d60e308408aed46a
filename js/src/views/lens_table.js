// LensTable: the logit lens as a token x layer table (virtualised), with an image-patch panel
// for vision-language models. Layer index: 0 = embeddings, l = residual stream after block l.
// Under interventions the table is the run under them; a panel compares it with the clean run
// and the "diff" metric colours the change of the target's probability (diverging scale).
import { defineView } from "../lib/widget.js";
import { h, tooltip, showToken, fmt } from "../lib/dom.js";
import { sequential, effectColor, saturation } from "../lib/colors.js";
import { comparisonPanel } from "../lib/compare.js";
import { at } from "../lib/codec.js";
import { tokenGrid, gridCss, injectCss as addCss } from "../lib/token_table.js";

export { CELL_W, CELL_H, ROW_HEAD_W, COL_HEAD_H, OVERSCAN, visibleRange, moveCell, scrollToShow } from "../lib/token_table.js";

export const METRICS = {
  prob: "top-1 probability",
  rank: "rank of the target",
  entropy: "entropy",
  diff: "change of p(target) under the interventions",
};
const IMG_SIZE = 280;

// ------------------------------------------------------------------------------ pure logic

/** True when the data holds a clean run beside the one under interventions (the "diff" metric applies). */
export function hasClean(data) {
  return !!data?.has_clean;
}

/** The metrics offered for this data: "diff" only under interventions. */
export function metricsFor(data) {
  return Object.keys(METRICS).filter((m) => m !== "diff" || hasClean(data));
}

/** The metric drawn: the requested one, or "prob" when "diff" has no clean run to compare with. */
export function effectiveMetric(data, metric) {
  const m = metric || "prob";
  return m === "diff" && !hasClean(data) ? "prob" : m;
}

/**
 * Value of `metric` at (layer, pos) from the one metric array Python sent (`values`, holding
 * `values_metric`): top-1 probability, target rank, entropy (nats) or diff; NaN for another metric
 * (its values are on their way).
 */
export function metricValue(data, metric, layer, pos) {
  if (!data.values || data.values_metric !== metric) return NaN;
  return at(data.values, layer, pos);
}

// ------------------------------------------------------------------------------ top-k on demand

/** Cache of cell details (top-k, target numbers) for one `lens_version`. */
export function detailCache(version) {
  return { version, cells: new Map() };
}

/**
 * Split Python's `cell_details` answer into one object per cell:
 * {tokens, probs, entropy, target_prob, target_rank, clean_prob, clean_rank, note} (clean_*: null without
 * interventions; note: what the answer lacks, e.g. a saved page that holds only the top-1, else null).
 */
export function splitDetails(res) {
  const n = res.cells.length;
  const k = n ? res.probs.shape[1] : 0;
  const out = [];
  for (let i = 0; i < n; i++) {
    out.push({
      layer: res.cells[i][0], pos: res.cells[i][1], tokens: res.tokens[i],
      probs: Array.from(res.probs.data.subarray(i * k, (i + 1) * k)),
      entropy: res.entropy.data[i], target_prob: res.target_prob.data[i], target_rank: res.target_rank.data[i],
      clean_prob: res.clean_prob ? res.clean_prob.data[i] : null, clean_rank: res.clean_rank ? res.clean_rank.data[i] : null,
      note: typeof res.note === "string" ? res.note : null,
    });
  }
  return out;
}

/**
 * The details of cell (layer, pos) if cached, else undefined; asks Python (`cell_details`) once per
 * cell and version, and calls `onReady(detail)` when they arrive (or `onReady(null, error)`).
 */
export function cellDetail(ctx, layer, pos, onReady) {
  const { state, data } = ctx;
  if (!state.details || state.details.version !== data.lens_version) state.details = detailCache(data.lens_version);
  const cache = state.details;
  const key = `${layer}:${pos}`;
  const got = cache.cells.get(key);
  if (got && !(got instanceof Promise)) return got;
  const p = got || ctx.invoke("cell_details", { cells: [[layer, pos]], version: data.lens_version })
    .then((res) => {
      if (res.version !== cache.version) throw new Error("the table changed; hover again");
      for (const d of splitDetails(res)) cache.cells.set(`${d.layer}:${d.pos}`, d);
      return cache.cells.get(key);
    })
    .catch((e) => { if (cache.cells.get(key) === p) cache.cells.delete(key); throw e; });
  if (!got) cache.cells.set(key, p);
  if (onReady) p.then((d) => onReady(d), (e) => onReady(null, e));
  return undefined;
}

/** An element filled by `render(detail)` now if the cell's details are cached, else "loading..." then filled. */
function detailSlot(ctx, layer, pos, render) {
  const slot = h("div", { class: "mri-lens-detail" });
  const d = cellDetail(ctx, layer, pos, (det, err) => {
    if (det) slot.replaceChildren(...render(det));
    else slot.replaceChildren(h("div", { class: "mri-muted" }, `could not load the top tokens: ${err?.message ?? err}`));
  });
  if (d) slot.replaceChildren(...render(d));
  else slot.replaceChildren(h("div", { class: "mri-muted mri-lens-loading" }, "loading..."));
  return slot;
}

/**
 * Colour intensity in [0, 1] of a metric value: 1 = confident / target on top.
 * prob: the probability; rank: 1 - log(1 + rank) / log(vocab); entropy: 1 - H / log(vocab).
 */
export function metricScale(metric, value, vocabSize) {
  const V = Math.max(2, vocabSize || 2);
  let t;
  if (metric === "rank") t = 1 - Math.log1p(Math.max(0, value)) / Math.log(V);
  else if (metric === "entropy") t = 1 - value / Math.log(V);
  else t = value;
  if (!Number.isFinite(t)) return 0;
  return Math.min(1, Math.max(0, t));
}

/**
 * Background colour of a cell for a metric value: white -> blue for prob / rank / entropy; for
 * "diff" the diverging scale of the patching table (blue: the target lost probability under the
 * interventions, red: it gained, full colour at ±sat, grey: NaN).
 */
export function cellColor(metric, value, vocabSize, sat = 1) {
  if (metric === "diff") return effectColor(value, sat);
  return sequential(metricScale(metric, value, vocabSize));
}

/** Legend end labels [low, high] of a metric's colour scale (`sat`: where "diff" saturates). */
export function legendLabels(metric, vocabSize, sat = 1) {
  if (metric === "diff") return [`\u2212${fmt(sat, 3)} (p fell)`, `+${fmt(sat, 3)} (p rose)`];
  if (metric === "rank") return [`rank ${vocabSize - 1}`, "rank 0 (top-1)"];
  if (metric === "entropy") return [`${fmt(Math.log(Math.max(2, vocabSize)), 1)} nats (uniform)`, "0 nats"];
  return ["p = 0", "p = 1"];
}

/** Grid cell (row, column) <-> (layer, position). Rows are tokens unless transposed. */
export function cellToLP(r, c, transposed) {
  return transposed ? { layer: r, pos: c } : { layer: c, pos: r };
}
export function lpToCell(layer, pos, transposed) {
  return transposed ? { r: layer, c: pos } : { r: pos, c: layer };
}

/** Label of a position: image tokens become IMG001.. (with their patch), others their token text. */
export function positionLabel(data, pos) {
  const img = data.image;
  if (img?.positions) {
    const i = img.positions.data.indexOf(pos);
    if (i >= 0) {
      const gw = img.grid[1];
      return `IMG${String(i + 1).padStart(3, "0")} (${Math.floor(i / gw)},${i % gw})`;
    }
  }
  return showToken(data.tokens[pos]);
}

/** True when position `pos` holds a generated token (after the `n_prompt` prompt tokens). */
export function isGenerated(data, pos) {
  return Number.isInteger(data.n_prompt) && pos >= data.n_prompt && pos < data.tokens.length;
}

/**
 * The generated token predicted at position `pos` (the next one) and its commitment layer:
 * {next, layer} (layer -1: not the last layer's top-1), or null when the next token is not generated.
 */
export function commitmentAt(data, pos) {
  if (!isGenerated(data, pos + 1) || !data.commitment_layer) return null;
  return { next: pos + 1, layer: data.commitment_layer.data[pos + 1] };
}

/** Generation classes of a cell or position header: first generated row, commitment cell. */
export function genClasses(data, layer, pos, transposed) {
  let cls = "";
  if (isGenerated(data, pos)) {
    if (layer == null) cls += " mri-lens-gen";
    if (pos === data.n_prompt) cls += transposed ? " mri-lens-gensep-c" : " mri-lens-gensep-r";
  }
  if (layer != null && commitmentAt(data, pos)?.layer === layer) cls += " mri-lens-commit";
  return cls;
}

// ------------------------------------------------------------------------------ style

const CSS = `${gridCss(".mri-lens_table", "mri-lens")}
.mri-lens_table .mri-lens-main { display: flex; gap: 12px; align-items: flex-start; }
.mri-lens_table .mri-lens-h.mri-lens-gen { font-style: italic; background: var(--mri-gen-bg); box-shadow: inset 3px 0 0 var(--mri-gen); }
.mri-lens_table .mri-lens-gensep-r { border-top: 2px solid var(--mri-gen); }
.mri-lens_table .mri-lens-gensep-c { border-left: 2px solid var(--mri-gen); }
.mri-lens_table .mri-lens-cell.mri-lens-commit::before, .mri-lens_table .mri-lens-tri { content: ""; position: absolute; left: 0; top: 0; width: 0; height: 0; border-left: 8px solid var(--mri-gen); border-bottom: 8px solid transparent; }
.mri-lens_table .mri-lens-tri { position: relative; display: inline-block; }
.mri-lens_table .mri-lens-cell.mri-lens-best::after { content: ""; position: absolute; right: 2px; top: 2px; width: 5px; height: 5px; border-radius: 50%; background: var(--mri-accent); }
.mri-lens_table .mri-lens-cell.mri-lens-rowhi { box-shadow: inset 0 2px 0 #f0b400, inset 0 -2px 0 #f0b400; }
.mri-lens_table .mri-lens-legend { display: inline-flex; align-items: center; gap: 4px; color: var(--mri-muted); }
.mri-lens_table .mri-lens-bar { display: inline-block; width: 90px; height: 10px; border: 1px solid var(--mri-border); }
.mri-lens_table .mri-lens-dot { display: inline-block; width: 6px; height: 6px; border-radius: 50%; background: var(--mri-accent); }
.mri-lens_table .mri-lens-prompt { width: 260px; }
.mri-lens_table .mri-lens-k { width: 44px; }
.mri-lens_table .mri-lens-image { flex: 0 0 auto; width: ${IMG_SIZE}px; }
.mri-lens_table .mri-lens-imgbox { position: relative; width: ${IMG_SIZE}px; }
.mri-lens_table .mri-lens-imgbox img { display: block; width: 100%; height: 100%; }
.mri-lens_table .mri-lens-imgbox img.mri-lens-pixelated { image-rendering: pixelated; }
.mri-lens_table .mri-lens-patches { position: absolute; inset: 0; }
.mri-lens_table .mri-lens-patch { position: absolute; box-sizing: border-box; border: 1px solid rgba(255,255,255,0.12); cursor: crosshair; }
.mri-lens_table .mri-lens-patch:hover, .mri-lens_table .mri-lens-patch.mri-lens-hi { border: 2px solid #ffd400; }
.mri-lens_table .mri-lens-patch.mri-lens-locked { border: 2px solid var(--mri-accent); }
.mri-lens_table .mri-lens-masked .mri-lens-patch.mri-lens-blank { background: var(--mri-blank); }
.mri-lens_table .mri-lens-info { margin-top: 6px; white-space: pre-wrap; font-size: 11px; min-height: 3em; }
.mri-lens_table .mri-lens-info .mri-lens-tok { font-family: var(--jp-code-font-family, ui-monospace, monospace); white-space: pre; }
.mri-tooltip .mri-lens-tok { font-family: var(--jp-code-font-family, ui-monospace, monospace); white-space: pre; }
`;

function injectCss() {
  addCss("mri-lens_table-css", CSS);
}

// ------------------------------------------------------------------------------ view

function vocabStr(data, idx) {
  return data.vocab[idx] ?? "";
}

/** Top-k rows of a cell (its fetched details) as DOM (token text, probability), and the answer's note if any. */
function topkTable(d) {
  const table = h("table", {}, d.tokens.map((tok, j) => h("tr", {},
    h("td", {}, h("span", { class: "mri-lens-tok" }, JSON.stringify(tok))), h("td", {}, fmt(d.probs[j], 3)))));
  return d.note ? [table, h("div", { class: "mri-muted mri-lens-note" }, d.note)] : [table];
}

function cellSummary(ctx, layer, pos) {
  const { data } = ctx;
  const lname = data.layer_names[layer];
  const where = layer === 0 ? "embeddings" : `after block ${layer}`;
  const tgt = vocabStr(data, data.target_idx.data[pos]);
  return [
    h("div", {}, `#${pos} `, h("span", { class: "mri-lens-tok" }, JSON.stringify(data.tokens[pos])),
      isGenerated(data, pos) ? " (generated)" : "", ` · layer ${lname} (${where})`),
    detailSlot(ctx, layer, pos, (d) => [
      ...topkTable(d),
      h("div", {}, "target ", h("span", { class: "mri-lens-tok" }, JSON.stringify(tgt)),
        `: p = ${fmt(d.target_prob, 3)}, rank ${d.target_rank}`),
      ...beforeAfter(data, d),
      h("div", {}, `entropy ${fmt(d.entropy, 2)} nats`),
    ]),
    ...commitLine(data, pos),
  ];
}

/**
 * Tooltip lines under interventions, from a cell's fetched details `d`: the target's probability
 * and rank (0 = top) in the clean run and under the interventions, and the change (float32, like
 * Python's `LensTable.diff`). Each number carries data-run / data-field / data-value.
 */
export function beforeAfter(data, d) {
  if (!hasClean(data) || d.clean_prob == null) return [];
  const cp = d.clean_prob, cr = d.clean_rank, ip = d.target_prob, ir = d.target_rank;
  const num = (run, field, value, text) => h("span", { class: "mri-lens-ba-num", "data-run": run, "data-field": field,
    "data-value": String(value) }, text);
  if (Number.isNaN(cp)) {
    return [h("div", { class: "mri-lens-ba" }, "clean run: no such position (its continuation is shorter)")];
  }
  const dp = Math.fround(ip - cp);
  return [
    h("div", { class: "mri-lens-ba" }, "clean p = ", num("clean", "prob", cp, fmt(cp, 4)), ", rank ",
      num("clean", "rank", cr, String(cr)), " \u2192 intervened p = ", num("intervened", "prob", ip, fmt(ip, 4)),
      ", rank ", num("intervened", "rank", ir, String(ir))),
    h("div", { class: "mri-lens-ba" }, "change of p: ", num("diff", "prob", dp, `${dp >= 0 ? "+" : "\u2212"}${fmt(Math.abs(dp), 4)}`)),
  ];
}

/** Tooltip line on the row that predicts a generated token: where the model committed to it. */
function commitLine(data, pos) {
  const c = commitmentAt(data, pos);
  if (!c) return [];
  const tok = h("span", { class: "mri-lens-tok" }, JSON.stringify(data.tokens[c.next]));
  if (c.layer < 0) return [h("div", { class: "mri-lens-commitline" }, "generated next: ", tok, " (sampled; not the top-1 at the last layer)")];
  return [h("div", { class: "mri-lens-commitline" }, "generated next: ", tok, ` · committed from layer ${data.layer_names[c.layer]}`)];
}

function imagePatchOf(data, pos) {
  const img = data.image;
  if (!img?.positions) return -1;
  return img.positions.data.indexOf(pos);
}

function buildToolbar(ctx) {
  const { model, data, state } = ctx;
  const prompt = h("input", { class: "mri-lens-prompt", type: "text", value: model.get("prompt") ?? "",
    "aria-label": "prompt", title: "Enter runs the lens on this prompt" });
  const run = () => {
    const v = prompt.value;
    if (!v.trim()) return;
    if (v === model.get("prompt")) return;
    state.status.textContent = "running…";
    model.set("prompt", v);
    model.save_changes();
  };
  prompt.addEventListener("keydown", (e) => { if (e.key === "Enter") run(); e.stopPropagation(); });
  const k = h("input", { class: "mri-lens-k", type: "number", min: 1, max: 50, value: model.get("k"), "aria-label": "k" });
  k.addEventListener("change", () => {
    const v = parseInt(k.value, 10);
    if (Number.isFinite(v) && v >= 1 && v !== model.get("k")) { state.status.textContent = "running…"; model.set("k", v); model.save_changes(); }
  });
  const gen = h("input", { class: "mri-lens-k mri-lens-generate", type: "number", min: 0, max: 500, value: model.get("generate") ?? 0, "aria-label": "generate" });
  gen.addEventListener("change", () => {
    const v = parseInt(gen.value, 10);
    if (Number.isFinite(v) && v >= 0 && v !== model.get("generate")) { state.status.textContent = "running…"; model.set("generate", v); model.save_changes(); }
  });
  const metric = h("select", { class: "mri-lens-metric", "aria-label": "colour by" },
    metricsFor(data).map((key) => h("option", { value: key }, METRICS[key])));
  metric.value = effectiveMetric(data, model.get("metric"));
  metric.addEventListener("change", () => { model.set("metric", metric.value); model.save_changes(); });
  const transpose = h("input", { type: "checkbox", class: "mri-lens-transpose" });
  transpose.checked = !!model.get("transpose");
  transpose.addEventListener("change", () => { model.set("transpose", transpose.checked); model.save_changes(); });
  const bar = h("span", { class: "mri-lens-bar" });
  const lo = h("span", {}), hi = h("span", {});
  state.legend = { bar, lo, hi, metric, transpose };
  state.status = h("span", { class: "mri-muted" }, "");
  const tgtMode = data.target_mode === "token" ? `target ${JSON.stringify(vocabStr(data, data.target_idx.data[0]))}` : "target: the model's own prediction";
  return h("div", { class: "mri-toolbar", "data-lm-suppress-shortcuts": "true" },
    h("label", {}, "prompt ", prompt), h("button", { onclick: run }, "run"),
    h("label", {}, "k ", k),
    h("label", { title: "new tokens the model generates after the prompt" }, "generate ", gen),
    h("label", {}, "colour ", metric),
    h("label", {}, transpose, " layers as rows"),
    h("span", { class: "mri-lens-legend" }, lo, bar, hi),
    h("span", { class: "mri-lens-legend" }, h("span", { class: "mri-lens-dot" }), " most confident layer"),
    isGenerated(data, data.tokens.length - 1) ? h("span", { class: "mri-lens-legend" }, h("span", { class: "mri-lens-tri" }), " layer committed to the generated next token") : null,
    h("span", { class: "mri-muted" }, tgtMode),
    hasClean(data) ? h("span", { class: "mri-lens-under",
      title: "the table shows the run under the interventions; the panel above it and the diff colour compare it with the clean run" },
      "[under interventions]") : null,
    state.status);
}

function updateLegend(ctx) {
  const { data, state, model } = ctx;
  const metric = data.values_metric || "prob"; // the metric drawn (a new one's values may be on their way)
  const sat = state.diffSat ?? 1;
  const [lo, hi] = legendLabels(metric, data.vocab_size, sat);
  state.legend.lo.textContent = lo;
  state.legend.hi.textContent = hi;
  state.legend.bar.style.background = metric === "diff"
    ? `linear-gradient(to right, ${effectColor(-1)}, ${effectColor(0)}, ${effectColor(1)})`
    : `linear-gradient(to right, ${sequential(0)}, ${sequential(0.5)}, ${sequential(1)})`;
  state.legend.metric.value = effectiveMetric(data, model.get("metric"));
  state.legend.transpose.checked = !!model.get("transpose");
}

/** Build the scrolling table into state.tableHost (lib/token_table.js); returns its painter. */
function buildTable(ctx) {
  const { data, state, model } = ctx;
  const L = data.layer_names.length;
  const S = data.tokens.length;
  const T = !!model.get("transpose");
  const headLabel = (isRow, i) => {
    // header of row/column i: a token (position) or a layer name
    const isPos = T ? !isRow : isRow;
    if (isPos) return [h("span", { class: "mri-lens-idx" }, String(i)), positionLabel(data, i)];
    return [data.layer_names[i]];
  };
  const grid = tokenGrid({
    host: state.tableHost, prefix: "mri-lens", rows: T ? L : S, cols: T ? S : L, height: model.get("height") || 480,
    corner: T ? "layer \\ token" : "token \\ layer", label: "logit lens table", tip: state.tip,
    frame: () => ({ metric: data.values_metric, pinned: state.pinned, hiPos: state.hiPos,
      selPos: state.selRow, selLayer: state.selCol, sat: state.diffSat ?? 1 }),
    cell(r, c, f) {
      const { layer, pos } = cellToLP(r, c, T);
      let cls = "";
      if (data.best_layer.data[pos] === layer) cls += " mri-lens-best";
      cls += genClasses(data, layer, pos, T);
      if (pos === f.hiPos || (!f.pinned && f.selPos === pos)) cls += " mri-lens-rowhi";
      return { bg: cellColor(f.metric, metricValue(data, f.metric, layer, pos), data.vocab_size, f.sat), cls,
        text: showToken(vocabStr(data, at(data.top1_idx, layer, pos))), data: { layer, pos } };
    },
    colHead(c, { pinned, hiPos, selPos, selLayer }) {
      const hi = !T ? (pinned ? pinned.layer === c : selLayer === c) : (c === hiPos || (pinned ? pinned.pos === c : selPos === c));
      return { hi, content: headLabel(false, c), cls: T ? genClasses(data, null, c, T) : "" };
    },
    rowHead(r, { pinned, hiPos, selPos, selLayer }) {
      const hi = !T ? (r === hiPos || (pinned ? pinned.pos === r : selPos === r)) : (pinned ? pinned.layer === r : selLayer === r);
      return { hi, content: headLabel(true, r), cls: T ? "" : genClasses(data, null, r, T) };
    },
    pinned: (f) => (f.pinned ? lpToCell(f.pinned.layer, f.pinned.pos, T) : null),
    onPick(rc) {
      if (!rc) { state.pinned = null; grid.paint(); return; }
      const { layer, pos } = cellToLP(rc.r, rc.c, T);
      pin(layer, pos);
    },
    tooltip(r, c) {
      const { layer, pos } = cellToLP(r, c, T);
      return cellSummary(ctx, layer, pos);
    },
    onHover({ r, c }) { if (state.image) state.image.outline(imagePatchOf(data, cellToLP(r, c, T).pos)); },
    onLeave() { if (state.image) state.image.outline(-1); },
    // keep the scroll position across redraws (new prompt, k, metric, transpose)
    scroll: state.scroll && state.scroll.T === T ? state.scroll : null,
    onScroll(top, left) { state.scroll = { T, top, left }; },
  });

  function reveal(layer, pos) {
    const { r, c } = lpToCell(layer, pos, T);
    grid.reveal(r, c);
  }
  function revealRow(pos) {
    if (T) grid.revealCol(pos);
    else grid.revealRow(pos);
  }
  function pin(layer, pos, { select = true } = {}) {
    state.pinned = { layer, pos };
    cellDetail(ctx, layer, pos, () => {}); // its top-k, ready for the tooltip
    reveal(layer, pos);
    grid.paint();
    if (select) ctx.selection.set({ position: pos, layer });
  }
  return { paint: grid.paint, pin, reveal, revealRow, body: grid.body, rows: grid.rows, cols: grid.cols, transposed: T };
}

function buildImage(ctx) {
  const { data, state } = ctx;
  const img = data.image;
  const [gh, gw] = img.grid;
  const aspect = img.height / img.width;
  const box = h("div", { class: "mri-lens-imgbox", style: { height: `${Math.round(IMG_SIZE * aspect)}px` } });
  const pic = h("img", { alt: "input image", class: img.width < IMG_SIZE ? "mri-lens-pixelated" : null });
  if (img.png && typeof URL !== "undefined" && URL.createObjectURL && typeof Blob !== "undefined") {
    const url = URL.createObjectURL(new Blob([img.png.data], { type: "image/png" }));
    pic.src = url;
    state.revoke = () => URL.revokeObjectURL(url);
  }
  const patches = h("div", { class: "mri-lens-patches" });
  const info = h("div", { class: "mri-lens-info mri-muted" }, "Hover a patch: its image token, best layer and top tokens. Click locks.");
  const cells = [];
  const blank = img.blank ? img.blank.data : new Uint8Array(gh * gw);
  for (let i = 0; i < gh * gw; i++) {
    const r = Math.floor(i / gw), c = i % gw;
    cells.push(h("div", {
      class: `mri-lens-patch${blank[i] ? " mri-lens-blank" : ""}`, "data-patch": i,
      style: { left: `${(100 * c) / gw}%`, top: `${(100 * r) / gh}%`, width: `${100 / gw}%`, height: `${100 / gh}%` },
    }));
  }
  patches.append(...cells);
  box.append(pic, patches);
  const mask = h("input", { type: "checkbox", class: "mri-lens-mask" });
  mask.addEventListener("change", () => box.classList.toggle("mri-lens-masked", mask.checked));
  const describe = (i) => {
    const pos = img.positions.data[i];
    const best = data.best_layer.data[pos];
    return { pos, best, content: [
      h("div", {}, `patch (${Math.floor(i / gw)}, ${i % gw}) · token #${pos} · best layer ${data.layer_names[best]}`),
      detailSlot(ctx, best, pos, (det) => topkTable(det)),
    ] };
  };
  const show = (i, locked) => {
    const d = describe(i);
    info.classList.remove("mri-muted");
    info.replaceChildren(...(locked ? [h("div", {}, "locked (click again to unlock)")] : []), ...d.content);
    state.hiPos = d.pos;
    cells.forEach((el, j) => el.classList.toggle("mri-lens-hi", j === i));
    if (state.table) { state.table.revealRow(d.pos); state.table.paint(); }
    return d;
  };
  patches.addEventListener("mousemove", (e) => {
    const el = e.target.closest ? e.target.closest(".mri-lens-patch") : null;
    if (!el) return;
    const i = Number(el.dataset.patch);
    if (state.lockedPatch == null && state.hoverPatch !== i) { state.hoverPatch = i; show(i, false); }
    const d = describe(i);
    state.tip.show(e.clientX, e.clientY, d.content);
  });
  patches.addEventListener("mouseleave", () => {
    state.tip.hide();
    state.hoverPatch = null;
    if (state.lockedPatch == null) {
      state.hiPos = null;
      cells.forEach((el) => el.classList.remove("mri-lens-hi"));
      if (state.table) state.table.paint();
    }
  });
  patches.addEventListener("click", (e) => {
    const el = e.target.closest ? e.target.closest(".mri-lens-patch") : null;
    if (!el) return;
    const i = Number(el.dataset.patch);
    cells.forEach((c) => c.classList.remove("mri-lens-locked"));
    if (state.lockedPatch === i) { state.lockedPatch = null; show(i, false); return; }
    state.lockedPatch = i;
    el.classList.add("mri-lens-locked");
    const d = show(i, true);
    if (state.table) state.table.pin(d.best, d.pos);
  });
  state.image = {
    outline(i) { cells.forEach((el, j) => el.classList.toggle("mri-lens-hi", j === i || j === state.lockedPatch)); },
  };
  const nBlank = blank.reduce((a, b) => a + (b ? 1 : 0), 0);
  return h("div", { class: "mri-lens-image" }, box,
    h("label", { class: "mri-muted" }, mask, ` black out patches whose best top-1 token is blank (${nBlank} of ${gh * gw})`),
    info);
}

/** The before/after panel (Python's `comparison`, for the selected position) above the table. */
function showComparison(ctx) {
  const panel = hasClean(ctx.data) ? comparisonPanel(ctx.model.get("comparison")) : null;
  ctx.state.cmpBox.replaceChildren(...(panel ? [panel] : []));
}

function draw(ctx) {
  injectCss();
  const { data, root, model, state } = ctx;
  if (state.revoke) { state.revoke(); state.revoke = null; }
  if (!data?.tokens || !data.top1_idx) return;
  const L = data.layer_names.length, S = data.tokens.length;
  if (state.pinned && (state.pinned.layer >= L || state.pinned.pos >= S)) state.pinned = null;
  state.hiPos = null;
  state.lockedPatch = null;
  state.hoverPatch = null;
  state.image = null;
  state.tip = tooltip(root);
  state.diffSat = data.values_metric === "diff" ? saturation(data.values, "max") : 1;
  root.appendChild(buildToolbar(ctx));
  state.cmpBox = h("div", { class: "mri-lens-cmpbox" });
  showComparison(ctx);
  root.appendChild(state.cmpBox);
  state.tableHost = h("div", { class: "mri-lens-tablehost", style: { flex: "1 1 auto", minWidth: "0" } });
  const main = h("div", { class: "mri-lens-main" });
  if (data.image) main.appendChild(buildImage(ctx));
  main.appendChild(state.tableHost);
  root.appendChild(main);
  root.appendChild(h("div", { class: "mri-muted", style: { marginTop: "4px" } },
    `${data.model_name} · ${S} tokens × ${L} layers (emb = embeddings, l = after block l)${model.get("norm") === false ? " · no final norm" : ""}${isGenerated(data, S - 1) ? ` · ${S - data.n_prompt} generated (${model.get("sample") ? "sampled" : "greedy"})` : ""} · click a cell to pin it, arrows move`));
  updateLegend(ctx);
  state.table = buildTable(ctx);
  state.table.paint();
  if (state.pinned) state.table.reveal(state.pinned.layer, state.pinned.pos);
  state.table.paint();

  if (!state.bound) {
    // options Python (or the toolbar) can change without new data
    state.bound = true;
    const onMetric = () => { if (ctx.data && state.table) { updateLegend(ctx); state.table.paint(); } };
    const onTranspose = () => {
      if (!ctx.data || !state.tableHost) return;
      updateLegend(ctx);
      state.table = buildTable(ctx);
      if (state.pinned) state.table.reveal(state.pinned.layer, state.pinned.pos);
      state.table.paint();
    };
    const onComparison = () => { if (ctx.data && state.cmpBox) showComparison(ctx); };
    model.on("change:metric", onMetric);
    model.on("change:transpose", onTranspose);
    model.on("change:comparison", onComparison);
    ctx.cleanup = () => {
      model.off("change:metric", onMetric);
      model.off("change:transpose", onTranspose);
      model.off("change:comparison", onComparison);
      if (state.revoke) state.revoke();
    };
  }
}

function onSelection(ctx, sel) {
  const { data, state } = ctx;
  if (!state.table || !data?.tokens) return;
  const L = data.layer_names.length, S = data.tokens.length;
  const okPos = Number.isInteger(sel.position) && sel.position >= 0 && sel.position < S;
  const okLayer = Number.isInteger(sel.layer) && sel.layer >= 0 && sel.layer < L;
  const p = state.pinned;
  state.selRow = null;
  state.selCol = null;
  if (okPos && okLayer) {
    if (!p || p.layer !== sel.layer || p.pos !== sel.position) state.table.pin(sel.layer, sel.position, { select: false });
    else state.table.paint();
    return;
  }
  // only one of the two is meaningful here (another view's layer may count differently)
  if (okPos && p) { state.table.pin(p.layer, sel.position, { select: false }); return; }
  if (okLayer && p) { state.table.pin(sel.layer, p.pos, { select: false }); return; }
  if (okPos) { state.selRow = sel.position; state.table.revealRow(sel.position); }
  if (okLayer) state.selCol = sel.layer;
  state.table.paint();
}

/** Traits of LensTable (mri_widgets/widgets/lens_table.py): the result, redrawn on change ... */
export const TRAITS = ["model_name", "vocab_size", "tokens", "layer_names", "vocab", "top1_idx", "values",
  "values_metric", "target_idx", "target_mode", "best_layer", "image", "n_prompt", "commitment_layer", "has_clean",
  "lens_version"];
/** ... and the parameters the view reads and sets itself. */
export const PARAMS = ["prompt", "k", "metric", "target", "norm", "transpose", "height", "generate", "sample", "seed",
  "temperature", "comparison"];

export default defineView({ name: "lens_table", traits: TRAITS, params: PARAMS, draw, onSelection });
