// NeuronViewer: one MLP neuron of a NeuronScan. Stats table and histogram, the texts where it is
// highest and lowest (tokens coloured on one shared diverging scale, a window around the extreme
// token that expands to the whole text), channel switch for gated MLPs, direct effect on the
// output tokens, and prev / next / random / go-to navigation. Per-token activations come from
// Python on demand (invoke "examples"). Token strings and texts are always set as text.
import { defineView } from "../lib/widget.js";
import { h, showToken, showText, tooltip, notice, fmt } from "../lib/dom.js";
import { diverging, textOn } from "../lib/colors.js";
import { ablateBar } from "../lib/ablate.js";

const CSS = `
.mri-neuron_viewer .nv-nav { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; margin-bottom: 6px; }
.mri-neuron_viewer .nv-nav input[type=number] { width: 6em; }
.mri-neuron_viewer .nv-channels { display: inline-flex; gap: 0; margin-left: 8px; }
.mri-neuron_viewer .nv-channels button { border-radius: 0; }
.mri-neuron_viewer .nv-channels button.nv-on { background: var(--mri-on-bg); color: var(--mri-on-fg); border-color: var(--mri-on-bg); }
.mri-neuron_viewer .nv-title { font-size: 14px; font-weight: 600; margin: 4px 0 6px; }
.mri-neuron_viewer .nv-summary { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; margin-bottom: 8px; }
.mri-neuron_viewer table.nv-table { border-collapse: collapse; }
.mri-neuron_viewer table.nv-table td, .mri-neuron_viewer table.nv-table th { padding: 1px 8px 1px 0; text-align: left; font-variant-numeric: tabular-nums; }
.mri-neuron_viewer table.nv-table th { color: var(--mri-muted); font-weight: normal; }
.mri-neuron_viewer .nv-box-title { color: var(--mri-muted); margin-bottom: 2px; }
.mri-neuron_viewer .nv-effect { display: flex; gap: 14px; }
.mri-neuron_viewer .nv-effect .mri-tok { cursor: default; }
.mri-neuron_viewer .nv-legend { display: flex; align-items: center; gap: 6px; margin: 4px 0; color: var(--mri-muted); }
.mri-neuron_viewer .nv-legend .nv-bar { width: 160px; height: 10px; border: 1px solid var(--mri-border); }
.mri-neuron_viewer .nv-section { margin-top: 8px; }
.mri-neuron_viewer .nv-section > .nv-box-title { font-weight: 600; color: var(--mri-fg); }
.mri-neuron_viewer .nv-example { border-top: 1px solid var(--mri-border); padding: 3px 0; }
.mri-neuron_viewer .nv-head { color: var(--mri-muted); display: flex; gap: 10px; align-items: baseline; }
.mri-neuron_viewer .nv-head button { padding: 0 6px; font-size: 11px; }
.mri-neuron_viewer .nv-tokens { line-height: 1.7; white-space: pre-wrap; word-break: break-word; }
.mri-neuron_viewer .nv-hist text { fill: var(--mri-muted); }
.mri-neuron_viewer .nv-hist .nv-axis { stroke: var(--mri-muted); }
.mri-neuron_viewer .nv-peak { outline: 2px solid var(--mri-strong); }
.mri-neuron_viewer .mri-tok.mri-selected { outline: 2px solid var(--mri-accent); outline-offset: 1px; }
.mri-neuron_viewer .nv-raw { white-space: pre-wrap; }
.mri-neuron_viewer .nv-ellipsis { color: var(--mri-muted); }
`;

function injectCss() {
  if (typeof document === "undefined" || document.getElementById("mri-neuron_viewer-css")) return;
  document.head.appendChild(h("style", { id: "mri-neuron_viewer-css" }, CSS));
}

const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) if (v != null) el.setAttribute(k, String(v));
  for (const c of children) el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

function setTraits(ctx, patch) {
  ctx.model.set(patch);
  ctx.model.save_changes();
}

// ---- navigation -------------------------------------------------------------------------------
function navBar(ctx) {
  const d = ctx.data;
  const goTo = (layer, neuron) => {
    if (!d.layers.includes(layer)) layer = d.shown_layer;
    neuron = Math.min(d.d_mlp - 1, Math.max(0, Math.round(Number.isFinite(neuron) ? neuron : d.shown_neuron)));
    setTraits(ctx, { layer, neuron });
  };
  const layerSel = h("select", { class: "nv-layer", title: "layer" },
    d.layers.map((l) => h("option", { value: l, selected: l === d.shown_layer }, `layer ${l}`)));
  const neuronIn = h("input", { class: "nv-neuron", type: "number", min: 0, max: d.d_mlp - 1, value: d.shown_neuron, title: "neuron" });
  const go = () => goTo(Number(layerSel.value), Number(neuronIn.value));
  neuronIn.addEventListener("keydown", (e) => { if (e.key === "Enter") go(); });
  layerSel.addEventListener("change", go);
  const bar = h("div", { class: "nv-nav" },
    h("button", { class: "nv-prev", title: "previous neuron", onclick: () => goTo(d.shown_layer, (d.shown_neuron - 1 + d.d_mlp) % d.d_mlp) }, "◀ prev"),
    h("button", { class: "nv-next", title: "next neuron", onclick: () => goTo(d.shown_layer, (d.shown_neuron + 1) % d.d_mlp) }, "next ▶"),
    h("button", { class: "nv-random", title: "a random neuron of a scanned layer",
      onclick: () => goTo(d.layers[Math.floor(Math.random() * d.layers.length)], Math.floor(Math.random() * d.d_mlp)) }, "random"),
    layerSel, neuronIn, h("button", { class: "nv-go", onclick: go }, "go"));
  if (d.channels.length > 1) {
    const current = ctx.model.get("channel") || "mlp";
    const group = h("span", { class: "nv-channels", title: "which value colours the tokens" },
      d.channels.map((c, i) => h("button", {
        class: `nv-channel${c === current ? " nv-on" : ""}`, "data-channel": c,
        onclick: () => setTraits(ctx, { channel: c }),
      }, d.channel_labels[i])));
    bar.appendChild(h("span", { class: "mri-muted" }, "channel:"));
    bar.appendChild(group);
  }
  return bar;
}

// ---- summary: stats, histogram, effect ---------------------------------------------------------
function statsTable(d) {
  const st = d.stats;
  const rows = [
    ["max", fmt(st.max)], ["min", fmt(st.min)], ["mean", fmt(st.mean)],
    ["P(act > 0)", st.freq_positive == null ? "–" : `${(100 * st.freq_positive).toFixed(1)}%`],
    ["texts", String(d.n_texts)], ["tokens", String(d.n_tokens)],
  ];
  const box = h("div", { class: "nv-stats" }, h("div", { class: "nv-box-title" }, "statistics over all tokens"),
    h("table", { class: "nv-table" }, rows.map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, v)))));
  if (d.cases?.length) {
    box.appendChild(h("div", { class: "nv-box-title", style: { marginTop: "6px" } }, "sign of (gate, up): + is > 0"));
    box.appendChild(h("table", { class: "nv-table nv-cases" },
      h("tr", {}, h("th", {}, "case"), h("th", {}, "tokens"), h("th", {}, "mean act")),
      d.cases.map((c) => h("tr", {}, h("td", {}, c.name), h("td", {}, `${(100 * c.freq).toFixed(1)}%`), h("td", {}, fmt(c.mean))))));
  }
  return box;
}

function edgeLabel(e) {
  const a = Math.abs(e);
  const txt = a >= 1 ? String(a) : a.toPrecision(1);
  return e < 0 ? `-${txt}` : txt;
}

function histogram(ctx, tip) {
  const d = ctx.data;
  const counts = d.hist ? Array.from(d.hist.data) : [];
  const edges = [-Infinity, ...d.hist_edges, Infinity];
  const W = 300, H = 90, pad = 14;
  const n = counts.length;
  const bw = (W - 2) / Math.max(n, 1);
  const total = counts.reduce((a, b) => a + b, 0) || 1;
  const top = Math.log1p(Math.max(1, ...counts));
  const svg = s("svg", { width: W, height: H + pad, class: "nv-hist", viewBox: `0 0 ${W} ${H + pad}` });
  const center = (n - 1) / 2;
  counts.forEach((c, i) => {
    const hgt = c > 0 ? Math.max(1, (H - 2) * Math.log1p(c) / top) : 0;
    const side = i < center ? -1 : i > center ? 1 : 0;
    const fill = side === 0 ? "#999" : diverging(side * (0.35 + 0.65 * Math.abs(i - center) / center));
    const rect = s("rect", { x: 1 + i * bw, y: H - hgt, width: Math.max(1, bw - 1), height: hgt, fill, "data-bin": i });
    const lo = edges[i], hi = edges[i + 1];
    rect.addEventListener("mouseenter", (e) => tip.show(e.clientX, e.clientY,
      `${side < 0 ? "(" : "["}${fmt(lo)}, ${fmt(hi)}${side < 0 ? "]" : ")"}\n${c} tokens (${(100 * c / total).toFixed(2)}%)`));
    rect.addEventListener("mouseleave", () => tip.hide());
    svg.appendChild(rect);
  });
  svg.appendChild(s("line", { x1: 0, x2: W, y1: H, y2: H, class: "nv-axis" }));
  // a few edge labels: 0 and every 4th octave
  const mid = 1 + (center + 0.5) * bw;
  svg.appendChild(s("text", { x: mid, y: H + 11, "text-anchor": "middle", "font-size": 9 }, "0"));
  d.hist_edges.forEach((e, j) => {
    const i = j + 1; // edge between bins i-1 and i
    if (Math.abs(i - (center + 0.5)) < 3 || (Math.log2(Math.abs(e)) % 4) !== 0) return;
    svg.appendChild(s("text", { x: 1 + i * bw, y: H + 11, "text-anchor": "middle", "font-size": 9 }, edgeLabel(e)));
  });
  return h("div", { class: "nv-histbox" },
    h("div", { class: "nv-box-title" }, "activation histogram (octave bins, log counts)"), svg);
}

function effectBox(d) {
  const box = h("div", { class: "nv-effectbox" }, h("div", { class: "nv-box-title" }, "direct effect on output logits"));
  if (!d.effect) { box.appendChild(h("div", { class: "mri-muted" }, d.effect_note || "not available")); return box; }
  const list = (title, rows, sign) => {
    const m = Math.max(1e-9, ...rows.map((r) => Math.abs(r[1])));
    return h("table", { class: `nv-table nv-${title}` }, h("tr", {}, h("th", { colspan: 2 }, title)),
      rows.map(([tok, v]) => {
        const bg = diverging(sign * Math.abs(v) / m * 0.8);
        return h("tr", {}, h("td", {}, h("span", { class: "mri-tok", style: { background: bg, color: textOn(bg) } }, showToken(tok))),
          h("td", {}, fmt(v, 2)));
      }));
  };
  box.appendChild(h("div", { class: "nv-effect" }, list("promotes", d.effect.promoted, 1), list("suppresses", d.effect.suppressed, -1)));
  return box;
}

// ---- examples ----------------------------------------------------------------------------------
function channelScale(ctx, res, channel) {
  if (channel === "mlp") return ctx.data.scale || 1;
  let m = 0;
  for (const side of ["top", "bottom"]) {
    for (const ex of res[side] || []) {
      const a = ex.acts?.[channel];
      if (a) for (const v of a.data) m = Math.max(m, Math.abs(v));
    }
  }
  return m || 1;
}

function legend(scale, label) {
  const bar = h("div", { class: "nv-bar", style: { background: `linear-gradient(to right, ${diverging(-1)}, ${diverging(0)}, ${diverging(1)})` } });
  return h("div", { class: "nv-legend" }, h("span", {}, fmt(-scale)), bar, h("span", {}, fmt(scale)),
    h("span", {}, `colour: ${label}, one scale for all examples`));
}

function exampleTokens(ctx, tip, side, rank, info, ex, channel, scale) {
  const d = ctx.data;
  const key = `${d.shown_layer}:${d.shown_neuron}:${side}:${rank}`;
  const expanded = ctx.state.expanded.has(key);
  const tokens = ex.tokens;
  const acts = ex.acts[channel] ? ex.acts[channel].data : new Float32Array(tokens.length);
  const pos = info.position;
  const [before, after] = d.window;
  const start = expanded ? 0 : Math.max(0, pos - before);
  const end = expanded ? tokens.length : Math.min(tokens.length, pos + after + 1);
  const line = h("div", { class: "nv-tokens" });
  if (start > 0) line.appendChild(h("span", { class: "nv-ellipsis" }, "… "));
  for (let i = start; i < end; i++) {
    const v = acts[i];
    const bg = diverging(v / scale);
    const span = h("span", {
      class: `mri-tok${i === pos ? " nv-peak" : ""}`, style: { background: bg, color: textOn(bg) },
      "data-position": i,
      onmouseenter: (e) => tip.show(e.clientX, e.clientY, `#${i} ${JSON.stringify(tokens[i])}\n${channel}: ${fmt(v)}`),
      onmouseleave: () => tip.hide(),
      onclick: () => {
        ctx.state.clicked = { key, position: i };
        ctx.selection.set({ layer: d.shown_layer, neuron: d.shown_neuron, position: i });
        markSelected(ctx, ctx.sel && { ...ctx.sel, position: i });
      },
    }, showText(tokens[i]));
    span.dataset.key = key;
    line.appendChild(span);
  }
  if (end < tokens.length) line.appendChild(h("span", { class: "nv-ellipsis" }, " …"));
  return line;
}

function renderExamples(ctx, tip, res) {
  const d = ctx.data;
  const holder = ctx.state.examplesEl;
  if (!holder) return;
  const channel = d.channels.includes(ctx.model.get("channel")) ? ctx.model.get("channel") : "mlp";
  const label = d.channel_labels[d.channels.indexOf(channel)];
  const parts = [];
  if (res && res.mismatch > 1e-3 * (d.scale || 1) + 1e-4) {
    parts.push(notice(`recomputed activations differ from the scan by up to ${fmt(res.mismatch)}: is this the model and are these the texts the scan was made with?`, "error"));
  }
  const scale = res && !res.top?.[0]?.raw ? channelScale(ctx, res, channel) : d.scale;
  if (res && !res.top?.[0]?.raw) parts.push(legend(scale, label));
  for (const side of ["top", "bottom"]) {
    const rows = d[side];
    const title = side === "top" ? `highest activations (top ${rows.length} texts by max)`
      : `lowest activations (bottom ${rows.length} texts by min)`;
    const sec = h("div", { class: `nv-section nv-${side}` }, h("div", { class: "nv-box-title" }, title));
    rows.forEach((info, rank) => {
      const ex = res?.[side] ? res[side][rank] : null;
      const key = `${d.shown_layer}:${d.shown_neuron}:${side}:${rank}`;
      const expanded = ctx.state.expanded.has(key);
      const head = h("div", { class: "nv-head" },
        h("span", {}, `#${rank + 1}`), h("span", {}, `text ${info.text}`),
        h("span", {}, `${side === "top" ? "max" : "min"} ${fmt(info.value)} at token ${info.position}`));
      if (ex?.tokens) {
        const n = ex.tokens.length;
        const [before, after] = d.window;
        if (info.position - before > 0 || info.position + after + 1 < n) {
          head.appendChild(h("button", {
            class: "nv-expand", onclick: () => {
              if (ctx.state.expanded.has(key)) ctx.state.expanded.delete(key); else ctx.state.expanded.add(key);
              renderExamples(ctx, tip, res);
            },
          }, expanded ? "window" : `full text (${n} tokens)`));
        }
      }
      const body = !d.has_texts ? null
        : !res ? h("div", { class: "mri-muted nv-loading" }, "loading…")
          : ex?.tokens ? exampleTokens(ctx, tip, side, rank, info, ex, channel, scale)
            : ex && ex.raw != null ? h("div", { class: "nv-raw" }, ex.raw) : null;
      sec.appendChild(h("div", { class: "nv-example", "data-text": info.text }, head, body));
    });
    if (!rows.length) sec.appendChild(h("div", { class: "mri-muted" }, "no texts"));
    parts.push(sec);
  }
  holder.replaceChildren(...parts);
  markSelected(ctx, ctx.sel);
}

function markSelected(ctx, sel) {
  const holder = ctx.state.examplesEl;
  if (!holder) return;
  const c = ctx.state.clicked;
  for (const span of holder.querySelectorAll(".mri-tok")) {
    const on = !!(c && sel && span.dataset.key === c.key && Number(span.dataset.position) === sel.position
      && sel.position === c.position && sel.layer === ctx.data.shown_layer && sel.neuron === ctx.data.shown_neuron);
    span.classList.toggle("mri-selected", on);
  }
}

function loadExamples(ctx, tip) {
  const d = ctx.data;
  if (!d.has_texts) { renderExamples(ctx, tip, null); return; }
  const key = `${d.shown_layer}:${d.shown_neuron}`;
  const cache = ctx.state.cache;
  const hit = cache.get(key);
  if (hit && !(hit instanceof Promise)) { renderExamples(ctx, tip, hit); return; }
  renderExamples(ctx, tip, null);
  const p = hit || ctx.invoke("examples", { layer: d.shown_layer, neuron: d.shown_neuron });
  cache.set(key, p);
  p.then((res) => {
    cache.set(key, res);
    if (cache.size > 64) cache.delete(cache.keys().next().value);
    if (ctx.data && `${ctx.data.shown_layer}:${ctx.data.shown_neuron}` === key) renderExamples(ctx, tip, res);
  }, (err) => {
    cache.delete(key);
    if (ctx.data && `${ctx.data.shown_layer}:${ctx.data.shown_neuron}` === key && ctx.state.examplesEl) {
      ctx.state.examplesEl.replaceChildren(notice(`could not compute the examples: ${err.message}`, "error"));
    }
  });
}

// ---- the view ----------------------------------------------------------------------------------
function draw(ctx) {
  injectCss();
  const d = ctx.data;
  const st = ctx.state;
  st.cache ||= new Map();
  st.expanded ||= new Set();
  if (!d || d.shown_neuron == null) { ctx.root.appendChild(notice("no neuron yet")); return; }
  const tip = tooltip(ctx.root);
  ctx.root.appendChild(navBar(ctx));
  // with interventions: "ablate (zero / mean)" for the neuron shown
  st.ablate = ablateBar(ctx, () => (ctx.data?.shown_neuron == null ? null
    : { kind: "neuron", layer: ctx.data.shown_layer, index: ctx.data.shown_neuron }));
  ctx.root.appendChild(st.ablate.el);
  ctx.root.appendChild(h("div", { class: "nv-title" }, `Layer ${d.shown_layer} · Neuron ${d.shown_neuron}`,
    d.model_name ? h("span", { class: "mri-muted", style: { fontWeight: "normal", marginLeft: "8px" } }, d.model_name) : null));
  ctx.root.appendChild(h("div", { class: "nv-summary" }, statsTable(d), histogram(ctx, tip), effectBox(d)));
  if (d.note) ctx.root.appendChild(notice(d.note));
  st.examplesEl = h("div", { class: "nv-examples" });
  ctx.root.appendChild(st.examplesEl);
  if (!st.onChannel) {
    st.onChannel = () => {
      if (!ctx.data) return;
      for (const b of ctx.root.querySelectorAll(".nv-channel")) b.classList.toggle("nv-on", b.dataset.channel === ctx.model.get("channel"));
      loadExamples(ctx, st.tip);
    };
    st.onAblation = () => st.ablate?.update();
    ctx.model.on("change:channel", st.onChannel);
    ctx.model.on("change:ablation", st.onAblation);
    ctx.cleanup = () => {
      ctx.model.off("change:channel", st.onChannel);
      ctx.model.off("change:ablation", st.onAblation);
    };
  }
  st.tip = tip;
  loadExamples(ctx, tip);
}

function onSelection(ctx, sel) {
  markSelected(ctx, sel);
}

/** Traits of NeuronViewer (mri_widgets/widgets/neuron_viewer.py): the data, redrawn on change ... */
export const TRAITS = ["shown_layer", "shown_neuron", "model_name", "layers", "d_mlp", "gated", "channels", "channel_labels",
  "n_texts", "n_tokens", "k", "stats", "cases", "hist", "hist_edges", "top", "bottom", "scale", "effect", "effect_note",
  "has_texts", "has_model", "note", "window"];
/** ... and the parameters the view reads and sets itself. */
export const PARAMS = ["layer", "neuron", "channel", "ablation"];

export default defineView({ name: "neuron_viewer", traits: TRAITS, params: PARAMS, draw, onSelection });
