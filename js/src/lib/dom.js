// DOM helpers. Text from models and corpora is always set as text, never parsed as HTML.

/** Create an element: h("div", {class: "x", onclick: f}, child, "text", ...). Strings become text nodes. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "style" && typeof v === "object") Object.assign(el.style, v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c == null || c === false) continue;
    el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Show a token string visibly: spaces as a dot-like marker at the start, newlines as the return sign. */
export function showToken(s) {
  if (s == null) return "";
  return String(s).replace(/\n/g, "\u21b5").replace(/\t/g, "\u21e5").replace(/^ /, "\u2423");
}

/** A token inside running text: spaces stay spaces (the element keeps white-space: pre), control characters show. */
export function showText(s) {
  if (s == null) return "";
  return String(s).replace(/\n/g, "\u21b5").replace(/\t/g, "\u21e5");
}

/** A floating tooltip attached to `root`. Content is built with h(), never innerHTML. */
export function tooltip(root) {
  const tip = h("div", { class: "mri-tooltip", role: "tooltip", style: { display: "none" } });
  root.appendChild(tip);
  return {
    el: tip,
    show(x, y, ...content) {
      tip.replaceChildren(...content.flat().map((c) => (c instanceof Node ? c : document.createTextNode(String(c)))));
      tip.style.display = "block";
      const rb = root.getBoundingClientRect();
      tip.style.left = `${Math.max(0, x - rb.left + 12)}px`;
      tip.style.top = `${Math.max(0, y - rb.top + 12)}px`;
    },
    hide() { tip.style.display = "none"; },
  };
}

/** A message box shown in place of a view (errors, "no data yet: do X"). */
export function notice(text, kind = "info") {
  return h("div", { class: `mri-notice mri-${kind}` }, text);
}

export function fmt(x, digits = 3) {
  if (x == null || Number.isNaN(x)) return "–";
  const a = Math.abs(x);
  if (a !== 0 && (a < 1e-3 || a >= 1e4)) return x.toExponential(2);
  return x.toFixed(digits);
}
