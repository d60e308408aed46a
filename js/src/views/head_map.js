// HeadMap: attention heads placed by MDS of their attention distances, coloured by layer (or a
// score). Hover: scores. Drag: pick heads (shift adds) -> model "picked". Click: select the head
// (selection.layer / selection.head) and show its attention pattern (fetched from Python with invoke "pattern");
// a long text's pattern is an overview canvas plus exact windows fetched with invoke "pattern_tile".
import { defineView } from "../lib/widget.js";
import { h, tooltip, showToken, notice, fmt } from "../lib/dom.js";
import { sequential, viridis } from "../lib/colors.js";
import { ablateBar } from "../lib/ablate.js";

const SVGNS = "http://www.w3.org/2000/svg";
const SIZE = 420; // scatter side (px, viewBox units)
const PAD = 16;
const PATTERN = 380; // heatmap side budget (px)
const TILE = 520; // side budget of a long text's zoomed window (px): 64 tokens keep their labels

const CSS = `
.mri-head_map .mri-hm-row { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.mri-head_map .mri-hm-scatter { border: 1px solid var(--mri-border); border-radius: 3px; cursor: crosshair; user-select: none; background: var(--mri-bg); }
.mri-head_map .mri-hm-pt { stroke: var(--mri-hover); stroke-width: 0.8; cursor: pointer; }
.mri-head_map .mri-hm-pt.mri-hm-picked { stroke: var(--mri-strong); stroke-width: 2.2; }
.mri-head_map .mri-hm-ring { fill: none; stroke: var(--mri-accent); stroke-width: 2.5; pointer-events: none; }
.mri-head_map .mri-hm-ring.mri-hm-layer { stroke-width: 1.2; stroke-dasharray: 2 2; }
.mri-head_map .mri-hm-brush { fill: rgba(0,114,178,0.12); stroke: #0072B2; stroke-width: 1; pointer-events: none; }
.mri-head_map .mri-hm-pattern { min-width: 260px; }
.mri-head_map .mri-hm-pattern svg text { font-family: var(--jp-code-font-family, ui-monospace, monospace); fill: var(--mri-fg); }
.mri-head_map .mri-hm-legend { display: flex; align-items: center; gap: 6px; margin-top: 4px; color: var(--mri-muted); }
.mri-head_map .mri-hm-bar { width: 160px; height: 10px; border-radius: 2px; }
.mri-head_map .mri-hm-cell.mri-hm-hot { stroke: var(--mri-accent); stroke-width: 1.5; }
.mri-head_map .mri-status { color: var(--mri-muted); }
`;

function injectCss() {
  if (typeof document === "undefined" || document.getElementById("mri-head_map-css")) return;
  document.head.appendChild(h("style", { id: "mri-head_map-css" }, CSS));
}

/** An SVG element with attributes (text content only through `text`). */
function svg(tag, attrs = {}, text) {
  const el = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v != null) el.setAttribute(k, String(v));
  if (text != null) el.textContent = String(text);
  return el;
}

/** Screen positions of the points: the MDS coordinates fitted into the square, aspect kept. */
export function layoutPoints(xs, ys, size = SIZE, pad = PAD) {
  const n = xs.length;
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (let i = 0; i < n; i++) {
    x0 = Math.min(x0, xs[i]); x1 = Math.max(x1, xs[i]);
    y0 = Math.min(y0, ys[i]); y1 = Math.max(y1, ys[i]);
  }
  const span = Math.max(x1 - x0, y1 - y0) || 1;
  const s = (size - 2 * pad) / span;
  const cx = (x0 + x1) / 2, cy = (y0 + y1) / 2;
  const px = new Float64Array(n), py = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    px[i] = size / 2 + (xs[i] - cx) * s;
    py[i] = size / 2 - (ys[i] - cy) * s; // y up
  }
  return { px, py };
}

/** Indices of the points inside the rectangle spanned by two corners. */
export function pointsInRect(px, py, a, b) {
  const xl = Math.min(a.x, b.x), xr = Math.max(a.x, b.x);
  const yt = Math.min(a.y, b.y), yb = Math.max(a.y, b.y);
  const out = [];
  for (let i = 0; i < px.length; i++) if (px[i] >= xl && px[i] <= xr && py[i] >= yt && py[i] <= yb) out.push(i);
  return out;
}

function colorValues(data, by) {
  const n = data.layer.data.length;
  const vals = new Float64Array(n);
  let lo = Infinity, hi = -Infinity;
  for (let i = 0; i < n; i++) {
    const v = by === "layer" ? data.layer.data[i] : data.scores[by].data[i];
    vals[i] = v; lo = Math.min(lo, v); hi = Math.max(hi, v);
  }
  if (by === "layer") { lo = 0; hi = Math.max(1, data.n_layers - 1); }
  const span = hi - lo || 1;
  return { colors: Array.from(vals, (v) => viridis((v - lo) / span)), lo, hi };
}

function svgPoint(svgEl, e) {
  const r = svgEl.getBoundingClientRect();
  const sx = r.width ? SIZE / r.width : 1, sy = r.height ? SIZE / r.height : 1;
  return { x: (e.clientX - r.left) * sx, y: (e.clientY - r.top) * sy };
}

function headLabel(data, i) { return `L${data.layer.data[i]} H${data.head.data[i]}`; }

function draw(ctx) {
  injectCss();
  const { data, root, model } = ctx;
  const st = ctx.state;
  if (!data.x || !data.layer) { root.appendChild(notice("No heads to show.")); return; }
  const n = data.layer.data.length;
  const H = data.n_heads;
  const tip = tooltip(root);
  st.tip = tip;

  // ---- toolbar --------------------------------------------------------------------------
  const colorSel = h("select", { class: "mri-hm-color", onchange: (e) => { model.set("color_by", e.target.value); model.save_changes(); } },
    ...["layer", ...data.score_names].map((k) => h("option", { value: k }, k)));
  colorSel.value = model.get("color_by") || "layer";
  const status = h("span", { class: "mri-status" });
  const clearBtn = h("button", { class: "mri-hm-clear", onclick: () => setPicked([]) }, "clear");
  root.appendChild(h("div", { class: "mri-toolbar" },
    h("span", { class: "mri-title" }, `Attention heads of ${data.model_name}`),
    h("label", {}, "colour by ", colorSel), status, clearBtn));

  // ---- scatter --------------------------------------------------------------------------
  const { px, py } = layoutPoints(data.x.data, data.y.data);
  st.px = px; st.py = py;
  const scatter = svg("svg", { class: "mri-hm-scatter", width: SIZE, height: SIZE, viewBox: `0 0 ${SIZE} ${SIZE}` });
  const gPts = svg("g");
  const gRing = svg("g");
  const brush = svg("rect", { class: "mri-hm-brush", visibility: "hidden" });
  scatter.append(gPts, gRing, brush);
  const r = n > 400 ? 3.5 : 5;
  st.pts = [];
  for (let i = 0; i < n; i++) {
    const c = svg("circle", { class: "mri-hm-pt", cx: px[i].toFixed(2), cy: py[i].toFixed(2), r, "data-index": i,
      "data-layer": data.layer.data[i], "data-head": data.head.data[i] });
    gPts.appendChild(c);
    st.pts.push(c);
  }
  st.gRing = gRing; st.r = r;

  const legend = h("div", { class: "mri-hm-legend" });
  const recolor = () => {
    const by = model.get("color_by") || "layer";
    colorSel.value = by;
    const { colors, lo, hi } = colorValues(data, by);
    st.pts.forEach((c, i) => c.setAttribute("fill", colors[i]));
    const stops = [0, 0.25, 0.5, 0.75, 1].map((t) => viridis(t)).join(",");
    legend.replaceChildren(
      h("span", {}, by === "layer" ? "layer 0" : fmt(lo)),
      h("span", { class: "mri-hm-bar", style: { background: `linear-gradient(to right, ${stops})` } }),
      h("span", {}, by === "layer" ? `layer ${data.n_layers - 1}` : fmt(hi)),
      h("span", {}, ` · ${n} heads, ${data.n_examples} examples`));
  };
  recolor();

  // hover: scores
  scatter.addEventListener("mousemove", (e) => {
    if (st.drag) return;
    const i = e.target?.dataset ? Number(e.target.dataset.index) : NaN;
    if (!Number.isFinite(i) || e.target.tagName.toLowerCase() !== "circle") { tip.hide(); return; }
    const lines = [h("div", { style: { fontWeight: "600" } }, headLabel(data, i))];
    data.score_names.forEach((k, j) => lines.push(h("div", { title: data.score_help[j] }, `${k}: ${fmt(data.scores[k].data[i])}`)));
    tip.show(e.clientX, e.clientY, lines);
  });
  scatter.addEventListener("mouseleave", () => tip.hide());

  // drag = brush, click = select head
  scatter.addEventListener("mousedown", (e) => {
    if (e.button !== 0) return;
    e.preventDefault();
    st.drag = { a: svgPoint(scatter, e), b: null, add: e.shiftKey, target: e.target };
  });
  const onMove = (e) => {
    if (!st.drag) return;
    const b = svgPoint(scatter, e);
    const a = st.drag.a;
    if (!st.drag.b && Math.hypot(b.x - a.x, b.y - a.y) < 4) return;
    st.drag.b = b;
    tip.hide();
    brush.setAttribute("x", Math.min(a.x, b.x)); brush.setAttribute("y", Math.min(a.y, b.y));
    brush.setAttribute("width", Math.abs(b.x - a.x)); brush.setAttribute("height", Math.abs(b.y - a.y));
    brush.setAttribute("visibility", "visible");
  };
  const onUp = (e) => {
    const d = st.drag;
    if (!d) return;
    st.drag = null;
    brush.setAttribute("visibility", "hidden");
    if (d.b) {
      const inside = pointsInRect(px, py, d.a, svgPoint(scatter, e));
      const pairs = inside.map((i) => [data.layer.data[i], data.head.data[i]]);
      setPicked(d.add ? [...(model.get("picked") || []), ...pairs] : pairs);
      return;
    }
    const t = d.target;
    if (t?.tagName && t.tagName.toLowerCase() === "circle") {
      const i = Number(t.dataset.index);
      const layer = data.layer.data[i], head = data.head.data[i];
      ctx.selection.set({ layer, head });
      const sh = st.shown;
      if (!sh || sh.layer !== layer || sh.head !== head) showPattern(ctx, layer, head);
    }
  };
  window.addEventListener("mousemove", onMove);
  window.addEventListener("mouseup", onUp);

  // ---- pattern panel ----------------------------------------------------------------------
  const exSel = h("select", { class: "mri-hm-example", onchange: (e) => {
    model.set("example", Number(e.target.value)); model.save_changes();
  } }, ...data.examples.map((s, i) => h("option", { value: i }, `${i}: ${s}`)));
  exSel.value = String(model.get("example") || 0);
  const patTitle = h("div", { class: "mri-title" }, "Click a head to see its attention pattern");
  const patBody = h("div", { class: "mri-hm-pattern-body" });
  // with interventions: "ablate (zero / mean)" for the selected head
  st.ablate = ablateBar(ctx, () => selectedHead(ctx));
  const panel = h("div", { class: "mri-hm-pattern" },
    h("div", { class: "mri-toolbar" }, h("label", {}, "example ", exSel)), st.ablate.el, patTitle, patBody);
  st.patTitle = patTitle; st.patBody = patBody; st.exSel = exSel;

  const help = h("div", { class: "mri-muted" }, "drag to pick heads (shift adds) · click a head for its pattern");
  root.appendChild(h("div", { class: "mri-hm-row" },
    h("div", { class: "mri-hm-left", style: { width: `${SIZE + 2}px` } }, scatter, legend, help), panel));

  // ---- model listeners (replaced on every draw) --------------------------------------------
  if (st.off) st.off();
  const onPicked = () => markPicked(ctx);
  const onExample = () => {
    exSel.value = String(model.get("example") || 0);
    if (st.shown) showPattern(ctx, st.shown.layer, st.shown.head);
  };
  model.on("change:picked", onPicked);
  model.on("change:example", onExample);
  model.on("change:color_by", recolor);
  const onAblation = () => st.ablate.update();
  model.on("change:ablation", onAblation);
  st.off = () => {
    model.off("change:ablation", onAblation);
    model.off("change:picked", onPicked);
    model.off("change:example", onExample);
    model.off("change:color_by", recolor);
    window.removeEventListener("mousemove", onMove);
    window.removeEventListener("mouseup", onUp);
  };
  ctx.cleanup = () => st.off?.();

  function setPicked(pairs) {
    const seen = new Set();
    const clean = [];
    for (const [l, hh] of pairs) {
      const k = l * H + hh;
      if (!seen.has(k)) { seen.add(k); clean.push([l, hh]); }
    }
    clean.sort((p, q) => p[0] - q[0] || p[1] - q[1]);
    model.set("picked", clean);
    model.save_changes();
    markPicked(ctx);
  }
  st.status = status;
  markPicked(ctx);
  const prev = st.shown;
  st.shown = null;
  if (prev) showPattern(ctx, prev.layer, prev.head);
}

function markPicked(ctx) {
  const { data, model, state: st } = ctx;
  const H = data.n_heads;
  const picked = new Set((model.get("picked") || []).map(([l, hh]) => l * H + hh));
  st.pts.forEach((c, i) => c.classList.toggle("mri-hm-picked", picked.has(data.layer.data[i] * H + data.head.data[i])));
  st.status.textContent = picked.size ? `${picked.size} head${picked.size > 1 ? "s" : ""} picked` : "no heads picked";
}

/** The head in the shared selection, as an ablation target, or null. */
function selectedHead(ctx) {
  const sel = ctx.sel || {};
  const d = ctx.data;
  if (!d || sel.layer == null || sel.head == null) return null;
  if (sel.layer < 0 || sel.layer >= d.n_layers || sel.head < 0 || sel.head >= d.n_heads) return null;
  return { kind: "head", layer: sel.layer, index: sel.head };
}

function onSelection(ctx, sel) {
  const { data, state: st } = ctx;
  if (!st.pts) return;
  st.ablate?.update();
  st.gRing.replaceChildren();
  const L = data.n_layers, H = data.n_heads;
  const layer = sel.layer, head = sel.head;
  const layerOk = layer != null && layer >= 0 && layer < L;
  st.pts.forEach((c, i) => {
    if (layerOk && data.layer.data[i] === layer && head == null) {
      st.gRing.appendChild(svg("circle", { class: "mri-hm-ring mri-hm-layer", cx: c.getAttribute("cx"), cy: c.getAttribute("cy"), r: st.r + 3 }));
    }
  });
  if (layerOk && head != null && head >= 0 && head < H) {
    const c = st.pts[layer * H + head];
    st.gRing.appendChild(svg("circle", { class: "mri-hm-ring", cx: c.getAttribute("cx"), cy: c.getAttribute("cy"), r: st.r + 4, "data-ring": `${layer},${head}` }));
    if (!st.shown || st.shown.layer !== layer || st.shown.head !== head) showPattern(ctx, layer, head);
  }
}

async function showPattern(ctx, layer, head) {
  const { model, data, state: st } = ctx;
  const example = Number(model.get("example") || 0);
  st.shown = { layer, head, example };
  st.ticket = (st.ticket || 0) + 1;
  const ticket = st.ticket;
  st.patTitle.textContent = `Layer ${layer}, head ${head}: loading…`;
  let res;
  try {
    res = await ctx.invoke("pattern", { layer, head, example });
  } catch (e) {
    if (ticket !== st.ticket) return;
    st.patTitle.textContent = `Layer ${layer}, head ${head}`;
    st.patBody.replaceChildren(notice(String(e.message || e), "error"));
    return;
  }
  if (ticket !== st.ticket) return; // a newer request won
  const i = layer * data.n_heads + head;
  const s = data.scores;
  st.patTitle.textContent = `Layer ${layer}, head ${head} · entropy ${fmt(s.entropy.data[i], 2)} · previous ${fmt(s.previous.data[i], 2)} · first ${fmt(s.first.data[i], 2)} · self ${fmt(s.self.data[i], 2)}`;
  st.patBody.replaceChildren(res.attn ? heatmap(ctx, res) : longPattern(ctx, res));
}

/**
 * Tokens x tokens heatmap (rows: queries, columns: keys) with token labels. `res.attn` holds the
 * rows `res.q0 ..` and columns `res.k0 ..` (default 0) of the pattern; `res.tokens` are all tokens.
 */
export function heatmap(ctx, res, budget = PATTERN) {
  const tokens = res.tokens || [];
  const q0 = res.q0 || 0, k0 = res.k0 || 0;
  const shape = res.attn.shape || [tokens.length, tokens.length];
  const nq = shape[0], nk = shape[1];
  const A = res.attn.data;
  const cell = Math.max(4, Math.min(18, Math.floor(budget / Math.max(1, nq, nk))));
  const showLabels = cell >= 8;
  const shown = tokens.slice(q0, q0 + nq).concat(tokens.slice(k0, k0 + nk));
  const lab = showLabels ? Math.min(110, 8 + 6.5 * Math.max(...shown.map((t) => Math.min(14, showToken(t).length)))) : 4;
  const W = lab + nk * cell + 4, Hh = lab + nq * cell + 4;
  const root = svg("svg", { class: "mri-hm-heatmap", width: W, height: Hh, viewBox: `0 0 ${W} ${Hh}`, "data-n": tokens.length,
    "data-q0": q0, "data-k0": k0, "data-rows": nq, "data-cols": nk });
  const short = (t) => { const s = showToken(t); return s.length > 14 ? `${s.slice(0, 13)}…` : s; };
  if (showLabels) {
    for (let q = 0; q < nq; q++) {
      root.appendChild(svg("text", { x: lab - 4, y: lab + q * cell + cell * 0.72, "text-anchor": "end", "font-size": Math.min(11, cell - 1), class: "mri-hm-qlabel" }, short(tokens[q0 + q])));
    }
    for (let k = 0; k < nk; k++) {
      const x = lab + k * cell + cell * 0.7, y = lab - 4;
      root.appendChild(svg("text", { x, y, "text-anchor": "start", "font-size": Math.min(11, cell - 1), transform: `rotate(-60 ${x} ${y})`, class: "mri-hm-klabel" }, short(tokens[k0 + k])));
    }
  }
  const g = svg("g");
  for (let q = 0; q < nq; q++) {
    for (let k = 0; k < nk; k++) {
      const v = A[q * nk + k];
      g.appendChild(svg("rect", { class: "mri-hm-cell", x: lab + k * cell, y: lab + q * cell, width: cell, height: cell,
        fill: sequential(Math.sqrt(Math.max(0, v))), "data-q": q0 + q, "data-k": k0 + k }));
    }
  }
  root.appendChild(g);
  const tip = ctx.state.tip;
  let hot = null;
  g.addEventListener("mousemove", (e) => {
    const t = e.target;
    if (!t?.dataset || t.dataset.q == null) return;
    if (hot) hot.classList.remove("mri-hm-hot");
    hot = t; t.classList.add("mri-hm-hot");
    const q = Number(t.dataset.q), k = Number(t.dataset.k);
    tip.show(e.clientX, e.clientY, `query #${q} ${JSON.stringify(tokens[q])}\nkey #${k} ${JSON.stringify(tokens[k])}\nattention: ${fmt(A[(q - q0) * nk + (k - k0)])}`);
  });
  g.addEventListener("mouseleave", () => { if (hot) hot.classList.remove("mri-hm-hot"); hot = null; tip.hide(); });
  const wrap = h("div", {}, root);
  wrap.appendChild(h("div", { class: "mri-muted" }, "rows: queries, columns: keys; colour: √attention"));
  return wrap;
}

/** The window of `size` tokens a side centred on (q, k), kept inside the n x n pattern. */
export function centredWindow(q, k, size, n) {
  const s = Math.min(size, n);
  const clamp = (x) => Math.max(0, Math.min(n - s, Math.round(x - s / 2)));
  return { q0: clamp(q), k0: clamp(k), size: s };
}

/** Draw the (m, m) overview on a canvas: one square of `px` pixels per cell, colour √(block maximum). */
export function drawOverview(canvas, ov, px) {
  const m = ov.shape[0];
  const c2 = canvas.getContext?.("2d");
  if (!c2) return;
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < m; j++) {
      c2.fillStyle = sequential(Math.sqrt(Math.max(0, ov.data[i * m + j])));
      c2.fillRect(j * px, i * px, px, px);
    }
  }
}

/**
 * A long text's pattern: the whole of it downsampled on a canvas (block maxima) with the zoomed
 * window outlined, and that window's exact attention fetched from Python ("pattern_tile") and
 * drawn cell by cell with its tokens. Click the overview to move the window there; the arrows pan.
 */
function longPattern(ctx, res) {
  const { state: st } = ctx;
  const n = res.n_tokens, block = res.block, ov = res.overview;
  const m = ov.shape[0];
  const px = Math.max(1, Math.floor(PATTERN / m));
  const side = m * px;
  const base = h("canvas", { class: "mri-hm-overview", width: side, height: side, "data-n": n, "data-block": block,
    style: { position: "absolute", left: "0", top: "0" } });
  const over = h("canvas", { class: "mri-hm-window", width: side, height: side,
    style: { position: "absolute", left: "0", top: "0", cursor: "crosshair" } });
  drawOverview(base, ov, px);
  const box = h("div", { class: "mri-hm-overview-box", style: { position: "relative", width: `${side}px`, height: `${side}px` } }, base, over);
  const sizeSel = h("select", { class: "mri-hm-window-size" }, ...[32, 64, 128].map((s) => h("option", { value: s }, String(s))));
  const win = st.window && st.window.n === n ? st.window : { q0: 0, k0: 0, size: 64, n };
  sizeSel.value = String(win.size);
  const where = h("span", { class: "mri-status mri-hm-where" });
  const tileBody = h("div", { class: "mri-hm-tile" });
  const btn = (label, dq, dk) => h("button", { class: "mri-hm-pan", title: "pan the window", onclick: () => {
    const s = st.window.size;
    go(st.window.q0 + dq * s / 2 + s / 2, st.window.k0 + dk * s / 2 + s / 2);
  } }, label);
  const shownNow = st.shown;

  function outline() {
    const c2 = over.getContext?.("2d");
    if (!c2) return;
    c2.clearRect(0, 0, side, side);
    const w = st.window, f = px / block;
    c2.strokeStyle = "#E69F00"; c2.lineWidth = 2;
    c2.strokeRect(w.k0 * f + 1, w.q0 * f + 1, Math.max(3, w.size * f - 2), Math.max(3, w.size * f - 2));
  }

  async function fetchTile() {
    const w = st.window;
    st.tileTicket = (st.tileTicket || 0) + 1;
    const ticket = st.tileTicket;
    where.textContent = `queries ${w.q0}–${w.q0 + w.size - 1} × keys ${w.k0}–${w.k0 + w.size - 1} of ${n} tokens: loading…`;
    let tile;
    try {
      tile = await ctx.invoke("pattern_tile", { layer: res.layer, head: res.head, example: res.example,
        q0: w.q0, q1: w.q0 + w.size, k0: w.k0, k1: w.k0 + w.size });
    } catch (e) {
      if (ticket === st.tileTicket) tileBody.replaceChildren(notice(String(e.message || e), "error"));
      return;
    }
    if (ticket !== st.tileTicket || st.shown !== shownNow) return;
    where.textContent = `queries ${w.q0}–${w.q0 + w.size - 1} × keys ${w.k0}–${w.k0 + w.size - 1} of ${n} tokens`;
    tileBody.replaceChildren(heatmap(ctx, { tokens: res.tokens, attn: tile.attn, q0: tile.q0, k0: tile.k0 }, TILE));
  }

  function go(q, k, size = st.window.size) {
    st.window = { ...centredWindow(q, k, size, n), n };
    outline();
    fetchTile();
  }
  sizeSel.addEventListener("change", () => {
    const w = st.window;
    go(w.q0 + w.size / 2, w.k0 + w.size / 2, Number(sizeSel.value));
  });
  over.addEventListener("click", (e) => {
    const r = over.getBoundingClientRect();
    const sx = r.width ? side / r.width : 1;
    const k = ((e.clientX - r.left) * sx / px) * block, q = ((e.clientY - r.top) * sx / px) * block;
    go(q, k);
  });
  over.addEventListener("mousemove", (e) => {
    const r = over.getBoundingClientRect();
    const i = Math.floor((e.clientY - r.top) / px), j = Math.floor((e.clientX - r.left) / px);
    if (i < 0 || j < 0 || i >= m || j >= m) return;
    st.tip.show(e.clientX, e.clientY, `queries ${i * block}–${Math.min(n, (i + 1) * block) - 1}, keys ${j * block}–${Math.min(n, (j + 1) * block) - 1}\nlargest attention: ${fmt(ov.data[i * m + j])}\nclick to zoom there`);
  });
  over.addEventListener("mouseleave", () => st.tip.hide());
  st.window = { ...centredWindow(win.q0 + win.size / 2, win.k0 + win.size / 2, win.size, n), n };
  outline();
  fetchTile();
  return h("div", { class: "mri-hm-long" },
    h("div", { class: "mri-toolbar" }, h("label", {}, "window ", sizeSel), btn("←", 0, -1), btn("→", 0, 1), btn("↑", -1, 0), btn("↓", 1, 0), where),
    h("div", { class: "mri-hm-row" },
      h("div", {}, box, h("div", { class: "mri-muted" }, `${n} tokens; overview: largest attention of ${block} × ${block} blocks · click to zoom`)),
      tileBody));
}

/** Traits of HeadMap (mri_widgets/widgets/head_map.py): the data, redrawn on change ... */
export const TRAITS = ["x", "y", "layer", "head", "scores", "score_names", "score_help", "n_layers", "n_heads", "n_examples",
  "examples", "model_name"];
/** ... and the parameters the view reads and sets itself. */
export const PARAMS = ["picked", "example", "color_by", "ablation"];

export default defineView({ name: "head_map", traits: TRAITS, params: PARAMS, draw, onSelection });
