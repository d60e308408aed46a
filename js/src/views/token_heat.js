// TokenHeat: a text's tokens coloured by one value each; click a token to select its position.
import { defineView } from "../lib/widget.js";
import { h, showText, tooltip, fmt } from "../lib/dom.js";
import { diverging, sequential, textOn } from "../lib/colors.js";

function draw(ctx) {
  const { data, root } = ctx;
  const tokens = data.tokens || [];
  const values = data.values ? data.values.data : new Float32Array(tokens.length);
  let maxAbs = 0;
  for (const v of values) maxAbs = Math.max(maxAbs, Math.abs(v));
  const signed = values.some((v) => v < 0);
  const tip = tooltip(root);
  if (data.title) root.appendChild(h("div", { class: "mri-title" }, data.title));
  const line = h("div", { class: "mri-tokens" });
  ctx.spans = tokens.map((tok, i) => {
    const v = values[i];
    const bg = signed ? diverging(maxAbs ? v / maxAbs : 0) : sequential(maxAbs ? v / maxAbs : 0);
    const span = h("span", {
      class: "mri-tok", style: { background: bg, color: textOn(bg) }, "data-position": i,
      onmouseenter: (e) => tip.show(e.clientX, e.clientY, `#${i} ${JSON.stringify(tok)}\n${data.value_name || "value"}: ${fmt(v)}`),
      onmouseleave: () => tip.hide(),
      onclick: () => ctx.selection.set({ position: i }),
    }, showText(tok));
    line.appendChild(span);
    return span;
  });
  root.appendChild(line);
}

function onSelection(ctx, sel) {
  (ctx.spans || []).forEach((s, i) => s.classList.toggle("mri-selected", sel.position === i));
}

/** Traits of TokenHeat (mri_widgets/widgets/token_heat.py); all of them redraw the view. */
export const TRAITS = ["tokens", "values", "title", "value_name"];
export const PARAMS = [];

export default defineView({ name: "token_heat", traits: TRAITS, params: PARAMS, draw, onSelection });
