// Themes: the view root carries the theme= trait, view CSS uses the --mri-* variables (no
// hard-coded chrome colours), both colour sets in style.css are complete and readable, and text
// on data cells takes its colour from the cell, whatever the theme.
import { describe, it, expect } from "vitest";
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { MockModel } from "./mock_model.js";
import { applyTheme, defineView } from "../src/lib/widget.js";
import { textOn } from "../src/lib/colors.js";
import { graphStyle, GRAPH_LIGHT } from "../src/lib/graph.js";

const src = join(import.meta.dirname, "..", "src");
const css = readFileSync(join(src, "style.css"), "utf8");

describe("theme attribute", () => {
  it("theme= sets data-mri-theme on the view root, follows changes with one redraw, auto removes it", async () => {
    let draws = 0;
    const mod = defineView({ name: "t", traits: ["a"], draw: () => { draws++; } });
    const model = new MockModel({ a: 1, theme: "dark" });
    const el = document.createElement("div");
    await mod.render({ model, el });
    const root = el.querySelector(".mri-view");
    expect(root.getAttribute("data-mri-theme")).toBe("dark");
    expect(draws).toBe(1);
    model.set("theme", "light");
    expect(root.getAttribute("data-mri-theme")).toBe("light");
    expect(draws).toBe(2);
    model.set("theme", "auto");
    expect(root.hasAttribute("data-mri-theme")).toBe(false);
    expect(draws).toBe(3);
  });
  it("applyTheme ignores unknown values", () => {
    const d = document.createElement("div");
    applyTheme(d, "dark");
    applyTheme(d, "blue");
    expect(d.hasAttribute("data-mri-theme")).toBe(false);
  });
});

// the colour values of `--mri-*` declared in the rule whose selector list contains `sel`
function block(sel) {
  const i = css.indexOf(sel);
  expect(i).toBeGreaterThan(-1);
  const body = css.slice(css.indexOf("{", i) + 1, css.indexOf("}", i));
  return Object.fromEntries([...body.matchAll(/(--mri-[\w-]+):\s*([^;]+);/g)].map((m) => [m[1], m[2].trim()]));
}
const resolveJp = (v) => v.replace(/^var\(--jp-[\w-]+,\s*(.+)\)$/, "$1");
function rgbOf(c) {
  let m = /^#([0-9a-f]{3})$/i.exec(c);
  if (m) return [...m[1]].map((x) => parseInt(x + x, 16));
  m = /^#([0-9a-f]{6})$/i.exec(c);
  if (m) return [0, 2, 4].map((k) => parseInt(m[1].slice(k, k + 2), 16));
  m = /^rgba?\(([^)]+)\)$/.exec(c);
  if (m) return m[1].split(",").slice(0, 3).map(Number);
  throw new Error(`cannot read colour ${c}`);
}
function contrast(a, b) {
  const lum = (c) => {
    const [r, g, bl] = rgbOf(c).map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * r + 0.7152 * g + 0.0722 * bl;
  };
  const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p);
  return (x + 0.05) / (y + 0.05);
}

describe("style.css colour sets", () => {
  const sets = {
    light: { ...block('html[theme="light"] .mri-view,'), ...block('.mri-view.mri-view[data-mri-theme="light"] {') },
    dark: { ...block('html[theme="dark"] .mri-view,'), ...block('.mri-view.mri-view[data-mri-theme="dark"] {') },
  };
  it("light and dark define the same variables, and every --mri-* a view uses is defined", () => {
    expect(Object.keys(sets.dark).sort()).toEqual(Object.keys(sets.light).sort());
    const files = [...readdirSync(join(src, "views")).map((f) => join(src, "views", f)),
      ...readdirSync(join(src, "lib")).map((f) => join(src, "lib", f)), join(src, "style.css")];
    const used = new Set(files.flatMap((f) => [...readFileSync(f, "utf8").matchAll(/var\((--mri-[\w-]+)/g)].map((m) => m[1])));
    const missing = [...used].filter((v) => !(v in sets.light));
    expect(missing).toEqual([]);
  });
  it("text is readable in both sets (WCAG contrast >= 4.5)", () => {
    const pairs = [["--mri-fg", "--mri-bg"], ["--mri-muted", "--mri-bg"], ["--mri-tip-fg", "--mri-tip-bg"], ["--mri-tip-muted", "--mri-tip-bg"],
      ["--mri-notice-fg", "--mri-notice-bg"], ["--mri-error-fg", "--mri-error-bg"], ["--mri-hi-fg", "--mri-hi-bg"], ["--mri-on-fg", "--mri-on-bg"],
      ["--mri-up", "--mri-bg"], ["--mri-down", "--mri-bg"], ["--mri-link", "--mri-bg"], ["--mri-error-fg", "--mri-bg"]];
    for (const [name, set] of Object.entries(sets)) {
      for (const [fg, bg] of pairs) {
        const c = contrast(resolveJp(set[fg]), resolveJp(set[bg]));
        expect(c, `${name}: ${fg} on ${bg}`).toBeGreaterThanOrEqual(4.5);
      }
    }
    // the dark set really is dark, the light one light
    expect(contrast(resolveJp(sets.dark["--mri-bg"]), "#000")).toBeLessThan(2);
    expect(contrast(resolveJp(sets.light["--mri-bg"]), "#fff")).toBeLessThan(1.1);
  });
  it("tooltips and notices use the variables", () => {
    const rule = (sel) => css.slice(css.indexOf(sel), css.indexOf("}", css.indexOf(sel)));
    expect(rule(".mri-tooltip {")).toMatch(/background: var\(--mri-tip-bg\); color: var\(--mri-tip-fg\)/);
    expect(rule(".mri-notice {")).toMatch(/background: var\(--mri-notice-bg\)/);
    expect(rule(".mri-notice.mri-error {")).toMatch(/background: var\(--mri-error-bg\)/);
  });
});

describe("no hard-coded chrome colours in view CSS", () => {
  // highlight marks drawn over data cells and images, readable on both themes
  const DATA_MARKS = new Set(["#0072b2", "#f0b400", "#ffd400"]);
  const files = [...readdirSync(join(src, "views")).map((f) => join("views", f)),
    ...readdirSync(join(src, "lib")).filter((f) => f !== "colors.js").map((f) => join("lib", f))];
  it.each(files)("%s", (f) => {
    const text = readFileSync(join(src, f), "utf8");
    const strings = [...text.matchAll(/`[^`]*`/gs)].map((m) => m[0]).filter((s) => /[.#][\w-]+[^{}]*\{[^}]*:/.test(s));
    for (const s of strings) {
      expect(s, f).not.toMatch(/background(-color)?:\s*(#fff\b|#ffffff\b|#000\b|#000000\b|white\b|black\b)/i);
      expect(s, f).not.toMatch(/(^|[\s:;])color:\s*(#|white\b|black\b)/i);
      const hex = [...s.matchAll(/#[0-9a-f]{3,8}\b/gi)].map((m) => m[0].toLowerCase()).filter((h) => !DATA_MARKS.has(h));
      expect(hex, f).toEqual([]);
    }
  });
});

describe("text on data cells", () => {
  it("comes from the cell's colour, not the theme", () => {
    expect(textOn("rgb(20,20,20)")).toBe("#fff");
    expect(textOn("rgb(250,250,250)")).toBe("#111");
  });
  it("graph labels take the palette's colours", () => {
    const dark = { ...GRAPH_LIGHT, fg: "#e0e0e0", bg: "#1e1e1e" };
    const st = graphStyle({ directed: false, label_position: "right" }, false, dark).find((r) => r.selector === "node.node").style;
    expect(st.color).toBe("#e0e0e0");
    expect(st["text-background-color"]).toBe("#1e1e1e");
    expect(graphStyle({}, false).find((r) => r.selector === "node.node").style.color).toBe(GRAPH_LIGHT.fg);
  });
});
