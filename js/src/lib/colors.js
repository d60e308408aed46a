// Colour scales shared by the views.

function lerp(a, b, t) { return a + (b - a) * t; }
function mix(c1, c2, t) { return [0, 1, 2].map((i) => Math.round(lerp(c1[i], c2[i], t))); }
const rgb = (c) => `rgb(${c[0]},${c[1]},${c[2]})`;

const WHITE = [255, 255, 255];
const BLUE = [33, 102, 172];
const RED = [178, 24, 43];
const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];

/** Sequential white -> blue for t in [0, 1]. */
export function sequential(t) {
  t = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0));
  return rgb(mix(WHITE, BLUE, t));
}

/** Diverging blue (negative) - white - red (positive) for v in [-1, 1]. */
export function diverging(v) {
  v = Math.min(1, Math.max(-1, Number.isFinite(v) ? v : 0));
  return v >= 0 ? rgb(mix(WHITE, RED, v)) : rgb(mix(WHITE, BLUE, -v));
}

/** Colour of a diverging-scale value that is not a number. */
export const NAN_COLOR = "rgb(200,200,200)";

/** Where a diverging scale saturates: 1 for "unit", the largest finite |value| of `arr` ({data}) for "max" (1 when all are 0). */
export function saturation(arr, scale) {
  if (scale !== "max") return 1;
  let m = 0;
  for (const v of arr.data) {
    const a = Math.abs(v);
    if (Number.isFinite(a) && a > m) m = a;
  }
  return m > 0 ? m : 1;
}

/** Diverging colour of a signed value: blue below 0, white at 0, red above, full at ±sat; grey for NaN. */
export function effectColor(v, sat = 1) {
  if (Number.isNaN(v)) return NAN_COLOR;
  return diverging(Math.max(-1, Math.min(1, v / sat)));
}

/** Viridis-like scale for t in [0, 1]. */
export function viridis(t) {
  t = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(t));
  return rgb(mix(VIRIDIS[i], VIRIDIS[i + 1], t - i));
}

/** Text colour readable on a background given as "rgb(r,g,b)". */
export function textOn(bg) {
  const m = /rgb\((\d+),(\d+),(\d+)\)/.exec(bg);
  if (!m) return "#111";
  const [r, g, b] = m.slice(1).map(Number);
  return 0.299 * r + 0.587 * g + 0.114 * b > 150 ? "#111" : "#fff";
}

/** Categorical palette (colour-blind friendly, Okabe-Ito) for labels, layers, ... */
export const CATEGORICAL = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"];
export function categorical(i) { return CATEGORICAL[((i % CATEGORICAL.length) + CATEGORICAL.length) % CATEGORICAL.length]; }
