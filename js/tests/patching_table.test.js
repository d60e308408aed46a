import { describe, it, expect } from "vitest";
import patchingTable, {
  effectColor, effectText, saturation, cellToRC, rcToCell, selectionOf, cellOfSelection, layerDescription, metricDescription,
  NAN_COLOR, TRAITS, PARAMS,
} from "../src/views/patching_table.js";
import { MockModel, enc, mount } from "./mock_model.js";
import { CELL_H, CELL_W } from "../src/lib/token_table.js";

// effect (3 layers x 4 positions); raw = 10 * effect - 1
const EFFECT = [0, 0.5, -0.25, 1, 2, NaN, 0.1, -1, 0.3, 0.2, 0, 0.75];

function fakeData({ kind = "position", positions = [0, 1, 2, 3] } = {}) {
  const eff = new Float32Array(EFFECT);
  const raw = eff.map((v) => 10 * v - 1);
  return {
    model_name: "fake", site: kind === "head" ? "z" : "resid", kind, metric: "logit_diff", answer: " Paris", wrong: " Rome",
    clean_metric: 9, corrupt_metric: -1,
    layers: enc(new Int32Array(kind === "head" ? [3, 4, 5] : [0, 1, 2]), [3]),
    layer_names: kind === "head" ? ["3", "4", "5"] : ["emb", "1", "2"],
    columns: kind === "head" ? ["h0", "h1", "h2", "h3"] : ["<img src=x onerror=alert(1)>", " Col", "osse", "um"],
    positions: enc(new Int32Array(kind === "head" ? [] : positions), [kind === "head" ? 0 : 4]),
    clean_tokens: ["<img src=x onerror=alert(1)>", " Eiff", "el", "um"],
    corrupt_tokens: ["<img src=x onerror=alert(1)>", " Col", "osse", "um"],
    effect: enc(eff, [3, 4]), raw: enc(raw, [3, 4]),
  };
}

function setup(data, extra = {}) {
  const sel = new MockModel({ position: null, layer: null, head: null });
  const model = new MockModel({ selection: "IPY_MODEL_s", ...data, transpose: false, height: 300, scale: "unit", ...extra },
    { models: { s: sel } });
  return { sel, model };
}
const cell = (el, row, col) => el.querySelector(`.mri-patch-cell[data-row="${row}"][data-col="${col}"]`);

describe("patching table logic", () => {
  it("colours effects on a diverging scale (hand-computed)", () => {
    expect(effectColor(0)).toBe("rgb(255,255,255)");
    expect(effectColor(1)).toBe("rgb(178,24,43)");
    expect(effectColor(-1)).toBe("rgb(33,102,172)");
    // white + 0.5 (red - white) = (255 - 77/2, 255 - 231/2, 255 - 212/2), rounded
    expect(effectColor(0.5)).toBe("rgb(217,140,149)");
    // white + 0.25 (blue - white) = (255 - 222/4, 255 - 153/4, 255 - 83/4)
    expect(effectColor(-0.25)).toBe("rgb(200,217,234)");
    expect(effectColor(3)).toBe("rgb(178,24,43)"); // saturates
    expect(effectColor(Infinity)).toBe("rgb(178,24,43)");
    expect(effectColor(-Infinity)).toBe("rgb(33,102,172)");
    expect(effectColor(NaN)).toBe(NAN_COLOR);
    expect(effectColor(1, 2)).toBe("rgb(217,140,149)");
    expect(effectColor(0.5, 2)).toBe("rgb(236,197,202)");
  });
  it("writes effects with two decimals, without a minus zero", () => {
    expect(effectText(0.756)).toBe("0.76");
    expect(effectText(-0.004)).toBe("0.00");
    expect(effectText(-0.006)).toBe("-0.01");
    expect(effectText(NaN)).toBe("–");
  });
  it("saturates at 1 or at the largest finite |effect|", () => {
    const e = { data: new Float32Array([0.5, -3, NaN, Infinity, 2]) };
    expect(saturation(e, "unit")).toBe(1);
    expect(saturation(e, "max")).toBe(3);
    expect(saturation({ data: new Float32Array([0, 0]) }, "max")).toBe(1);
  });
  it("maps cells, selections and labels", () => {
    expect(cellToRC(1, 3, false)).toEqual({ row: 1, col: 3 });
    expect(cellToRC(1, 3, true)).toEqual({ row: 3, col: 1 });
    expect(rcToCell(3, 1, true)).toEqual({ r: 1, c: 3 });
    const d = fakeData({ positions: [2, 4, 5, 7] });
    const dd = { ...d, layers: { data: new Int32Array([0, 1, 2]) }, positions: { data: new Int32Array([2, 4, 5, 7]) } };
    expect(selectionOf(dd, 1, 2)).toEqual({ layer: 1, position: 5 });
    expect(cellOfSelection(dd, { layer: 2, position: 7 })).toEqual({ row: 2, col: 3 });
    expect(cellOfSelection(dd, { layer: 9, position: 3 })).toEqual({ row: -1, col: -1 });
    const hd = { kind: "head", columns: ["h0", "h1"], layers: { data: new Int32Array([3, 4]) }, positions: { data: new Int32Array(0) } };
    expect(selectionOf(hd, 1, 1)).toEqual({ layer: 4, head: 1 });
    expect(cellOfSelection(hd, { layer: 3, head: 1, position: 0 })).toEqual({ row: 0, col: 1 });
    expect(cellOfSelection(hd, { layer: 3, head: 2 })).toEqual({ row: 0, col: -1 });
    expect(layerDescription("resid", 0)).toBe("embeddings");
    expect(layerDescription("resid", 3)).toBe("after block 3");
    expect(layerDescription("mlp_out", 3)).toBe("block 3");
    expect(metricDescription({ metric: "logit_diff", answer: " Paris", wrong: " Rome" })).toBe('logit_diff (" Paris" − " Rome")');
    expect(metricDescription({ metric: "prob", answer: " Paris", wrong: null })).toBe('prob (" Paris")');
  });
  it("declares its traits", () => {
    expect(TRAITS).toContain("effect");
    expect(PARAMS).toEqual(["transpose", "height", "scale"]);
  });
});

describe("PatchingTable view", () => {
  it("draws layers x tokens with effect colours, tokens as text, and a legend", async () => {
    const { model } = setup(fakeData());
    const { el } = await mount(patchingTable, model);
    expect(el.querySelectorAll(".mri-patch-cell").length).toBe(12);
    expect(el.querySelector("img")).toBe(null);
    expect(el.querySelector(".mri-patch-colhead").textContent).toContain("<img src=x onerror=alert(1)>");
    expect(el.querySelector(".mri-patch-rowhead").textContent).toBe("emb12");
    expect(cell(el, 0, 1).style.background).toBe("rgb(217, 140, 149)");
    expect(cell(el, 0, 1).textContent).toBe("0.50");
    expect(cell(el, 1, 1).textContent).toBe("–");
    expect(cell(el, 1, 3).style.background).toBe("rgb(33, 102, 172)");
    expect(cell(el, 1, 2).style.top).toBe(`${1 * CELL_H}px`);
    expect(cell(el, 1, 2).style.left).toBe(`${2 * CELL_W}px`);
    const legend = el.querySelector(".mri-toolbar").textContent;
    expect(legend).toContain("-1.00");
    expect(legend).toContain("0 = corrupted run (logit_diff (\" Paris\" − \" Rome\") -1.000)");
    expect(legend).toContain("1 = clean run (9.000)");
  });
  it("shows layer, token, effect, raw and both metrics on hover", async () => {
    const { model } = setup(fakeData());
    const { el } = await mount(patchingTable, model);
    cell(el, 2, 3).dispatchEvent(new MouseEvent("mousemove", { bubbles: true, clientX: 5, clientY: 5 }));
    const tip = el.querySelector(".mri-tooltip");
    expect(tip.style.display).toBe("block");
    expect(tip.textContent).toContain("layer 2 (after block 2) · resid");
    expect(tip.textContent).toContain('#3 "um"');
    expect(tip.textContent).toContain("effect 0.750");
    expect(tip.textContent).toContain("patched 6.500");
    expect(tip.textContent).toContain("clean 9.000 · corrupted -1.000");
    cell(el, 0, 1).dispatchEvent(new MouseEvent("mousemove", { bubbles: true, clientX: 5, clientY: 5 }));
    expect(tip.textContent).toContain('#1 " Col" (clean " Eiff")'); // the token the corruption changed
    cell(el, 0, 0).dispatchEvent(new MouseEvent("mousemove", { bubbles: true, clientX: 5, clientY: 5 }));
    expect(tip.textContent).toContain("layer emb (embeddings)");
    expect(tip.textContent).not.toContain("clean \"");
    expect(tip.querySelector("img")).toBe(null);
  });
  it("click pins and sets layer + position; keys move; Python's selection moves the pin", async () => {
    const { model, sel } = setup(fakeData({ positions: [1, 2, 3, 4] }));
    const { el } = await mount(patchingTable, model);
    cell(el, 1, 2).click();
    expect(sel.get("layer")).toBe(1);
    expect(sel.get("position")).toBe(3); // positions[2]
    expect(cell(el, 1, 2).classList.contains("mri-patch-pinned")).toBe(true);
    const body = el.querySelector(".mri-patch-body");
    body.dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowDown", bubbles: true }));
    expect(sel.get("layer")).toBe(2);
    body.dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowRight", bubbles: true }));
    expect(sel.get("position")).toBe(4);
    sel.set({ layer: 0, position: 1 });
    expect(cell(el, 0, 0).classList.contains("mri-patch-pinned")).toBe(true);
    expect(el.querySelectorAll(".mri-patch-pinned").length).toBe(1);
    sel.set({ layer: 99, position: 2 }); // a layer this table lacks: keep the pinned row
    expect(cell(el, 0, 1).classList.contains("mri-patch-pinned")).toBe(true);
    cell(el, 0, 1).click(); // unpin
    expect(el.querySelector(".mri-patch-pinned")).toBe(null);
    sel.set({ layer: 2, position: null });
    expect(cell(el, 2, 0).classList.contains("mri-patch-linehi")).toBe(true);
    expect(el.querySelector(".mri-patch-rowhead .mri-patch-h[data-row='2']").classList.contains("mri-patch-hi")).toBe(true);
  });
  it("head kind: click sets layer + head", async () => {
    const { model, sel } = setup(fakeData({ kind: "head" }));
    const { el } = await mount(patchingTable, model);
    expect(el.querySelector(".mri-patch-corner").textContent).toBe("layer \\ head");
    cell(el, 2, 1).click();
    expect(sel.get("layer")).toBe(5);
    expect(sel.get("head")).toBe(1);
    expect(sel.get("position")).toBe(null);
    cell(el, 2, 1).dispatchEvent(new MouseEvent("mousemove", { bubbles: true }));
    expect(el.querySelector(".mri-tooltip").textContent).toContain("head 1 (h1)");
    expect(el.querySelector(".mri-tooltip").textContent).toContain("layer 5 (block 5) · z");
    sel.set({ layer: 3, head: 3 });
    expect(cell(el, 0, 3).classList.contains("mri-patch-pinned")).toBe(true);
  });
  it("rescales and transposes in place; toolbar changes go to Python", async () => {
    const { model } = setup(fakeData());
    const { el } = await mount(patchingTable, model);
    model.set("scale", "max");
    expect(cell(el, 0, 3).style.background).toBe("rgb(217, 140, 149)"); // 1 / max|effect| = 1 / 2
    expect(el.querySelector(".mri-patch-legend").textContent).toContain("2.00");
    model.set("transpose", true);
    const c = cell(el, 1, 2);
    expect(c.style.top).toBe(`${2 * CELL_H}px`);
    expect(c.style.left).toBe(`${1 * CELL_W}px`);
    expect(el.querySelector(".mri-patch-corner").textContent).toBe("token \\ layer");
    const scale = el.querySelector("select.mri-patch-scale");
    scale.value = "unit";
    scale.dispatchEvent(new Event("change"));
    expect(model.get("scale")).toBe("unit");
    const tr = el.querySelector("input.mri-patch-transpose");
    expect(tr.checked).toBe(true);
    tr.checked = false;
    tr.dispatchEvent(new Event("change"));
    expect(model.get("transpose")).toBe(false);
    // new data from Python redraws the same view
    model.set({ ...fakeData(), effect: enc(new Float32Array(12).fill(1), [3, 4]) });
    await Promise.resolve();
    expect(el.querySelectorAll(".mri-patch-grid").length).toBe(1);
    expect(cell(el, 2, 2).style.background).toBe("rgb(178, 24, 43)");
  });
});
