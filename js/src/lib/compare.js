// The clean run beside the run under the interventions: the target's probability and rank, and
// the prediction, before and after (FlowGraph's and LensTable's `comparison`, computed in Python).
import { h } from "./dom.js";

const CSS = `
.mri-view .mri-compare { margin: 4px 0 8px; padding: 6px 8px; border: 1px solid var(--mri-border); border-radius: 3px; display: inline-block; }
.mri-view .mri-cmp-title { font-weight: 600; margin-bottom: 4px; }
.mri-view .mri-cmp-table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
.mri-view .mri-cmp-table th, .mri-view .mri-cmp-table td { padding: 1px 10px 1px 0; text-align: left; }
.mri-view .mri-cmp-table th { color: var(--mri-muted); font-weight: normal; }
.mri-view .mri-cmp-down { color: var(--mri-down); font-weight: 600; }
.mri-view .mri-cmp-up { color: var(--mri-up); font-weight: 600; }
`;

function injectCss() {
  if (typeof document === "undefined" || document.getElementById("mri-compare-css")) return;
  document.head.appendChild(h("style", { id: "mri-compare-css" }, CSS));
}

/** A token as visible text: quotes keep leading spaces visible; control characters escaped. */
export function quoted(s) {
  const esc = (c) => ({ "\n": "\\n", "\t": "\\t", "\r": "\\r" })[c]
    ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`;
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it escapes
  return `'${String(s ?? "").replace(/[\u0000-\u001f\u007f]/g, esc)}'`;
}

/** A probability as a percentage: 4 decimals below 0.1 %, else 2. */
export function pct(p) {
  return `${(100 * p).toFixed(p < 0.001 ? 4 : 2)}%`;
}

/**
 * The panel of a comparison {position, token, target, interventions, rank_base, layer,
 * clean: {prob, rank, prediction, prediction_id, prediction_prob}, intervened: {...}}: the
 * target's probability and rank, and the prediction, clean vs intervened, with the change.
 * `rank_base` is the rank of the top token (1 unless given; the lens table counts from 0).
 * Each number's cell carries data-run, data-field and data-value. Empty comparison: null.
 */
export function comparisonPanel(cmp) {
  if (!cmp?.clean || !cmp.intervened) return null;
  injectCss();
  const c = cmp.clean, v = cmp.intervened;
  const base = cmp.rank_base ?? 1;
  const cell = (run, field, value, text) => h("td", { class: `mri-cmp-${field}`, "data-run": run, "data-field": field,
    "data-value": String(value) }, text);
  const dp = v.prob - c.prob;
  const delta = h("td", { class: `mri-cmp-delta ${dp < 0 ? "mri-cmp-down" : dp > 0 ? "mri-cmp-up" : ""}`, "data-value": String(dp) },
    `${dp >= 0 ? "+" : "\u2212"}${pct(Math.abs(dp))}`);
  const dr = v.rank - c.rank;
  const rankDelta = h("td", { class: `mri-cmp-delta ${dr > 0 ? "mri-cmp-down" : dr < 0 ? "mri-cmp-up" : ""}` },
    dr === 0 ? "=" : `${dr > 0 ? "+" : "\u2212"}${Math.abs(dr)}`);
  const table = h("table", { class: "mri-cmp-table" },
    h("tr", {}, h("th", {}, ""), h("th", {}, "clean"), h("th", {}, "intervened"), h("th", {}, "change")),
    h("tr", {}, h("th", {}, `p(${quoted(cmp.target)})`), cell("clean", "prob", c.prob, pct(c.prob)),
      cell("intervened", "prob", v.prob, pct(v.prob)), delta),
    h("tr", {}, h("th", { title: `rank ${base} = the most probable token` }, `rank of ${quoted(cmp.target)} (${base} = top)`),
      cell("clean", "rank", c.rank, String(c.rank)), cell("intervened", "rank", v.rank, String(v.rank)), rankDelta),
    h("tr", {}, h("th", {}, "prediction"),
      cell("clean", "prediction", c.prediction, `${quoted(c.prediction)} ${pct(c.prediction_prob)}`),
      cell("intervened", "prediction", v.prediction, `${quoted(v.prediction)} ${pct(v.prediction_prob)}`), h("td", {},
        c.prediction_id === v.prediction_id ? "same" : "changed")));
  const under = (cmp.interventions || []).map(String).join(" \u00b7 ");
  const where = cmp.layer != null ? ` (output, layer ${cmp.layer})` : "";
  return h("div", { class: "mri-compare", "data-position": String(cmp.position) },
    h("div", { class: "mri-cmp-title" }, `Clean run vs. under the interventions, at position ${cmp.position} ${quoted(cmp.token)}${where}`),
    table, h("div", { class: "mri-cmp-under mri-muted" }, `under: ${under}`));
}
