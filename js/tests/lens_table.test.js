import { describe, it, expect } from "vitest";
import lensTable, {
  metricScale, cellColor, visibleRange, moveCell, cellToLP, lpToCell, scrollToShow, positionLabel,
  legendLabels, CELL_H, CELL_W, isGenerated, commitmentAt, genClasses, hasClean, metricsFor, effectiveMetric,
  metricValue, beforeAfter, splitDetails, detailCache,
} from "../src/views/lens_table.js";
import { sequential, effectColor, NAN_COLOR } from "../src/lib/colors.js";
import { MockModel, enc, mount, commandCalls, commandReply } from "./mock_model.js";

/**
 * Fake lens content, as Python holds it (a LensResult): L layers, S positions, k tokens; top-1
 * prob grows with the layer. `toState` gives what Python sends up front, `fakePython` answers the
 * view's calls (top-k on demand) and metric changes like LensTable does.
 */
function fakeData(L, S, k = 3, { tokens, image } = {}) {
  const topIdx = new Int32Array(L * S * k);
  const topP = new Float32Array(L * S * k);
  for (let l = 0; l < L; l++) for (let s = 0; s < S; s++) for (let j = 0; j < k; j++) {
    const f = (l * S + s) * k + j;
    topIdx[f] = (l + s + j) % 7;
    topP[f] = ((l + 1) / (L + 1)) / (j + 1);
  }
  const ent = new Float32Array(L * S).map((_, i) => (i % 5) * 0.5);
  const tp = new Float32Array(L * S).fill(0.1);
  const tr = new Int32Array(L * S).map((_, i) => i % 9);
  return {
    L, S, k, topIdx, topP, ent, tp, tr, cp: null, cr: null,
    model_name: "fake", vocab_size: 100,
    tokens: tokens || Array.from({ length: S }, (_, i) => ` t${i}`),
    layer_names: ["emb", ...Array.from({ length: L - 1 }, (_, i) => String(i + 1))],
    vocab: ["<img src=x onerror=alert(1)>", " a", " b", "\n", " c", "d", "e"],
    target_idx: enc(new Int32Array(S).fill(1), [S]),
    target_mode: "own", best_layer: enc(new Int32Array(S).fill(L - 1), [S]),
    image: image || null,
  };
}

/** The (L, S) values of one metric (LensTable._metric_values). */
function metricArr(full, metric) {
  const n = full.L * full.S;
  if (metric === "rank") return full.tr;
  if (metric === "entropy") return full.ent;
  if (metric === "diff") return new Float32Array(n).map((_, i) => full.tp[i] - full.cp[i]);
  return new Float32Array(n).map((_, i) => full.topP[i * full.k]);
}

const PASS = ["model_name", "vocab_size", "tokens", "layer_names", "vocab", "target_idx", "target_mode", "best_layer",
  "image", "n_prompt", "commitment_layer"];

/** What Python sends up front: top-1 index of each cell, one metric's values, per-position arrays. */
function toState(full, metric = "prob", version = 1) {
  const out = {};
  for (const key of PASS) if (full[key] !== undefined) out[key] = full[key];
  const top1 = new Int32Array(full.L * full.S).map((_, i) => full.topIdx[i * full.k]);
  return { ...out, top1_idx: enc(top1, [full.L, full.S]), values: enc(metricArr(full, metric), [full.L, full.S]),
    values_metric: metric, has_clean: !!full.cp, lens_version: version };
}

/** LensTable.cell_details on the fake content. */
function details(full, model, cells) {
  const { S, k } = full;
  const n = cells.length;
  const ids = new Int32Array(n * k), probs = new Float32Array(n * k);
  const pick = (arr, T) => new T(cells.map(([l, p]) => arr[l * S + p]));
  cells.forEach(([l, p], i) => {
    for (let j = 0; j < k; j++) { ids[i * k + j] = full.topIdx[(l * S + p) * k + j]; probs[i * k + j] = full.topP[(l * S + p) * k + j]; }
  });
  return {
    version: model.get("lens_version"), cells, tokens: cells.map((_, i) => Array.from(ids.subarray(i * k, (i + 1) * k), (x) => full.vocab[x])),
    ids: enc(ids, [n, k]), probs: enc(probs, [n, k]), entropy: enc(pick(full.ent, Float32Array)),
    target_prob: enc(pick(full.tp, Float32Array)), target_rank: enc(pick(full.tr, Int32Array)),
    clean_prob: full.cp ? enc(pick(full.cp, Float32Array)) : null, clean_rank: full.cr ? enc(pick(full.cr, Int32Array)) : null,
    ...(full.note ? { note: full.note } : {}),
  };
}

/** Python's side of the model: answers cell_details and sends a changed metric's values. */
function fakePython(model, full) {
  const send = model.send.bind(model);
  model.send = (msg, cbs, bufs) => {
    send(msg, cbs, bufs);
    if (msg.kind === "anywidget-command" && msg.name === "cell_details") {
      queueMicrotask(() => model.receive(...commandReply(msg.id, { result: details(model.full, model, msg.msg.cells), buffer_paths: [] })));
    }
  };
  model.full = full;
  model.on("change:metric", () => {
    const m = model.get("metric");
    if (m === "diff" && !model.full.cp) return;
    queueMicrotask(() => model.set({ values: enc(metricArr(model.full, m), [model.full.L, model.full.S]), values_metric: m }));
  });
}

/** Python sends a new result (a new prompt): the whole state, a new version. */
function newResult(model, full) {
  model.full = full;
  model.set(toState(full, model.get("values_metric"), model.get("lens_version") + 1));
}

const tick = () => new Promise((r) => setTimeout(r, 0));

function setup(full, extra = {}) {
  const sel = new MockModel({ position: null, layer: null });
  const model = new MockModel({ selection: "IPY_MODEL_s", ...toState(full), metric: "prob", transpose: false, prompt: "p", k: full.k,
    norm: true, height: 300, ...extra },
    { models: { s: sel } });
  fakePython(model, full);
  return { sel, model };
}

const cell = (el, layer, pos) => el.querySelector(`.mri-lens-cell[data-layer="${layer}"][data-pos="${pos}"]`);

describe("lens table logic", () => {
  it("maps metrics to colour intensities", () => {
    expect(metricScale("prob", 0.25, 100)).toBe(0.25);
    expect(metricScale("rank", 0, 100)).toBe(1);
    expect(metricScale("rank", 99, 100)).toBeCloseTo(0, 6);
    expect(metricScale("rank", 9, 100)).toBeCloseTo(0.5, 6);
    expect(metricScale("entropy", 0, 100)).toBe(1);
    expect(metricScale("entropy", Math.log(100), 100)).toBeCloseTo(0, 6);
    expect(metricScale("prob", NaN, 100)).toBe(0);
    expect(metricScale("prob", 3, 100)).toBe(1);
    expect(cellColor("prob", 1, 100)).toBe(sequential(1));
    expect(legendLabels("rank", 100)[1]).toMatch(/rank 0/);
  });
  it("computes the visible window with overscan and clamping", () => {
    expect(visibleRange(0, 100, 20, 512, 0)).toEqual({ start: 0, end: 5 });
    expect(visibleRange(210, 100, 20, 512, 0)).toEqual({ start: 10, end: 16 });
    expect(visibleRange(210, 100, 20, 512, 3)).toEqual({ start: 7, end: 19 });
    expect(visibleRange(100000, 100, 20, 512, 2)).toEqual({ start: 509, end: 512 });
    expect(visibleRange(0, 100, 20, 0)).toEqual({ start: 0, end: 0 });
  });
  it("moves a cell with keys and clamps at the edges", () => {
    expect(moveCell({ r: 0, c: 0 }, "ArrowUp", 5, 4)).toEqual({ r: 0, c: 0 });
    expect(moveCell({ r: 0, c: 0 }, "ArrowDown", 5, 4)).toEqual({ r: 1, c: 0 });
    expect(moveCell({ r: 2, c: 3 }, "ArrowRight", 5, 4)).toEqual({ r: 2, c: 3 });
    expect(moveCell({ r: 2, c: 3 }, "ArrowLeft", 5, 4)).toEqual({ r: 2, c: 2 });
    expect(moveCell({ r: 2, c: 1 }, "End", 5, 4)).toEqual({ r: 2, c: 3 });
    expect(moveCell({ r: 2, c: 1 }, "PageDown", 50, 4, 10)).toEqual({ r: 12, c: 1 });
    expect(moveCell({ r: 2, c: 1 }, "a", 5, 4)).toBe(null);
  });
  it("transposes cell coordinates and scrolls minimally", () => {
    expect(cellToLP(3, 1, false)).toEqual({ layer: 1, pos: 3 });
    expect(cellToLP(3, 1, true)).toEqual({ layer: 3, pos: 1 });
    expect(lpToCell(1, 3, false)).toEqual({ r: 3, c: 1 });
    expect(lpToCell(1, 3, true)).toEqual({ r: 1, c: 3 });
    expect(scrollToShow(100, 200, 150, 20)).toBe(100);
    expect(scrollToShow(100, 200, 40, 20)).toBe(40);
    expect(scrollToShow(100, 200, 400, 20)).toBe(220);
  });
  it("labels image tokens by patch", () => {
    const d = { tokens: ["<image>", "<image>", "x"], image: { grid: [1, 2], positions: { data: new Int32Array([0, 1]) } } };
    expect(positionLabel(d, 1)).toBe("IMG002 (0,1)");
    expect(positionLabel(d, 2)).toBe("x");
  });
});

/** fakeData with generation: positions n_prompt.. are generated, with these commitment layers. */
function genData(L, S, nPrompt, commit) {
  const d = fakeData(L, S);
  const c = new Int32Array(S).fill(-1);
  commit.forEach((v, i) => { c[nPrompt + i] = v; });
  return { ...d, n_prompt: nPrompt, commitment_layer: enc(c, [S]) };
}

describe("lens table generation marks", () => {
  it("finds generated positions and the commitment of the token predicted at each row", () => {
    // decoded as the view sees it: arrays as {data, shape}
    const d = { tokens: Array(6).fill("x"), n_prompt: 3,
      commitment_layer: { data: new Int32Array([-1, -1, -1, 2, -1, 0]), shape: [6] } };
    expect([0, 1, 2, 3, 4, 5].map((p) => isGenerated(d, p))).toEqual([false, false, false, true, true, true]);
    expect(commitmentAt(d, 1)).toBe(null); // predicts a prompt token
    expect(commitmentAt(d, 2)).toEqual({ next: 3, layer: 2 }); // the last prompt row predicts the first generated token
    expect(commitmentAt(d, 3)).toEqual({ next: 4, layer: -1 });
    expect(commitmentAt(d, 5)).toBe(null); // nothing generated after the last token
    expect(genClasses(d, 2, 2, false)).toBe(" mri-lens-commit");
    expect(genClasses(d, 1, 2, false)).toBe("");
    expect(genClasses(d, null, 3, false)).toBe(" mri-lens-gen mri-lens-gensep-r");
    expect(genClasses(d, null, 3, true)).toBe(" mri-lens-gen mri-lens-gensep-c");
    expect(genClasses(d, null, 4, false)).toBe(" mri-lens-gen");
    // no generation (old payloads without the fields, or n_prompt = all tokens): no marks
    const plain = { tokens: d.tokens };
    expect(isGenerated(plain, 5)).toBe(false);
    expect(commitmentAt(plain, 2)).toBe(null);
    expect(isGenerated({ ...plain, n_prompt: 6 }, 5)).toBe(false);
  });
  it("marks generated rows, the separator and the commitment cells; the tooltip names the layer", async () => {
    const { model } = setup(genData(4, 6, 3, [2, -1, 0]));
    const { el } = await mount(lensTable, model);
    const heads = [...el.querySelectorAll(".mri-lens-rowhead .mri-lens-h")];
    expect(heads.map((x) => x.classList.contains("mri-lens-gen"))).toEqual([false, false, false, true, true, true]);
    expect(heads.filter((x) => x.classList.contains("mri-lens-gensep-r")).map((x) => x.dataset.row)).toEqual(["3"]);
    expect(cell(el, 0, 3).classList.contains("mri-lens-gensep-r")).toBe(true);
    expect(cell(el, 0, 4).classList.contains("mri-lens-gensep-r")).toBe(false);
    const commits = [...el.querySelectorAll(".mri-lens-cell.mri-lens-commit")].map((x) => [x.dataset.layer, x.dataset.pos]);
    expect(commits.sort()).toEqual([["0", "4"], ["2", "2"]]);
    cell(el, 1, 2).dispatchEvent(new MouseEvent("mousemove", { bubbles: true, clientX: 5, clientY: 5 }));
    const tip = el.querySelector(".mri-tooltip");
    expect(tip.textContent).toContain(`generated next: " t3" · committed from layer 2`);
    cell(el, 1, 3).dispatchEvent(new MouseEvent("mousemove", { bubbles: true, clientX: 5, clientY: 5 }));
    expect(tip.textContent).toContain("(generated)");
    expect(tip.textContent).toContain("not the top-1 at the last layer");
    cell(el, 1, 1).dispatchEvent(new MouseEvent("mousemove", { bubbles: true, clientX: 5, clientY: 5 }));
    expect(tip.textContent).not.toContain("generated");
    expect(el.textContent).toContain("3 generated (greedy)");
    // transposed: the generated tokens are columns, the separator on their left
    model.set("transpose", true);
    const cols = [...el.querySelectorAll(".mri-lens-colhead .mri-lens-h")];
    expect(cols.filter((x) => x.classList.contains("mri-lens-gen")).length).toBe(3);
    expect(cell(el, 0, 3).classList.contains("mri-lens-gensep-c")).toBe(true);
    expect(cell(el, 2, 2).classList.contains("mri-lens-commit")).toBe(true);
  });
  it("a table without generation has no marks, and the generate box asks Python for tokens", async () => {
    const { model } = setup(fakeData(4, 6), { generate: 0 });
    const { el } = await mount(lensTable, model);
    expect(el.querySelector(".mri-lens-gen, .mri-lens-commit, .mri-lens-gensep-r")).toBe(null);
    expect(el.querySelector(".mri-lens-tri")).toBe(null);
    const gen = el.querySelector("input.mri-lens-generate");
    gen.value = "7";
    gen.dispatchEvent(new Event("change"));
    expect(model.get("generate")).toBe(7);
  });
});

describe("LensTable view", () => {
  it("renders only the visible part of 512 tokens x 33 layers", async () => {
    const { model } = setup(fakeData(33, 512, 5));
    const { el } = await mount(lensTable, model);
    const n = el.querySelectorAll(".mri-lens-cell").length;
    expect(n).toBeGreaterThan(10);
    expect(n).toBeLessThan(1500); // not 512 * 33 = 16896
    expect(el.querySelectorAll(".mri-lens-rowhead .mri-lens-h").length).toBeLessThan(40);
    // scrolling brings later rows in
    const body = el.querySelector(".mri-lens-body");
    body.scrollTop = 400 * CELL_H;
    body.dispatchEvent(new Event("scroll"));
    await new Promise((r) => setTimeout(r, 30));
    expect(cell(el, 0, 400)).not.toBe(null);
    expect(cell(el, 0, 0)).toBe(null);
  });
  it("shows tokens as text, marks the best layer and shows top-k on hover", async () => {
    const { model } = setup(fakeData(4, 6, 3, { tokens: ["<img src=x onerror=alert(1)>", " b", "c", "d", "e", "f"] }));
    const { el } = await mount(lensTable, model);
    expect(el.querySelector("img")).toBe(null);
    expect(el.querySelector(".mri-lens-rowhead").textContent).toContain("<img src=x onerror=alert(1)>");
    expect(cell(el, 0, 0).textContent).toBe("<img src=x onerror=alert(1)>"); // vocab[0]
    expect(cell(el, 3, 2).classList.contains("mri-lens-best")).toBe(true);
    expect(cell(el, 2, 2).classList.contains("mri-lens-best")).toBe(false);
    cell(el, 1, 2).dispatchEvent(new MouseEvent("mousemove", { bubbles: true, clientX: 5, clientY: 5 }));
    const tip = el.querySelector(".mri-tooltip");
    expect(tip.style.display).toBe("block");
    expect(tip.textContent).toContain("layer 1 (after block 1)");
    // the top-k list is not in the page yet: asked from Python, "loading..." meanwhile
    expect(tip.textContent).toContain("loading...");
    const calls = commandCalls(model);
    expect(calls.map((c) => [c.name, c.msg])).toEqual([["cell_details", { cells: [[1, 2]], version: 1 }]]);
    await tick();
    expect(tip.textContent).not.toContain("loading...");
    expect(tip.querySelectorAll("tr").length).toBe(3);
    expect([...tip.querySelectorAll("tr")].map((r) => r.cells[0].textContent)).toEqual(['"\\n"', '" c"', '"d"']); // vocab[(1 + 2 + j) % 7]
    expect(tip.textContent).toContain("0.400"); // (1+1)/(4+1) top-1 probability
    expect(tip.textContent).toContain("rank");
    // hovering it again uses the cached list: no new call, no "loading..."
    cell(el, 0, 0).dispatchEvent(new MouseEvent("mousemove", { bubbles: true, clientX: 5, clientY: 5 }));
    cell(el, 1, 2).dispatchEvent(new MouseEvent("mousemove", { bubbles: true, clientX: 5, clientY: 5 }));
    expect(tip.querySelectorAll("tr").length).toBe(3);
    expect(commandCalls(model).length).toBe(2);
    // a new result (another prompt or k) drops the cache: the cell is asked again
    newResult(model, fakeData(4, 6, 2));
    await tick();
    cell(el, 1, 2).dispatchEvent(new MouseEvent("mousemove", { bubbles: true, clientX: 5, clientY: 5 }));
    const tip2 = el.querySelector(".mri-tooltip");
    expect(tip2.textContent).toContain("loading...");
    expect(commandCalls(model).at(-1).msg).toEqual({ cells: [[1, 2]], version: 2 });
    await tick();
    expect(tip2.querySelectorAll("tr").length).toBe(2);
  });
  it("shows the note of an answer that lacks the top-k (a big table's saved page), as text", async () => {
    const { model } = setup({ ...fakeData(4, 6, 1), note: "only the top-1 <b>saved</b>" });
    const { el } = await mount(lensTable, model);
    cell(el, 1, 2).dispatchEvent(new MouseEvent("mousemove", { bubbles: true, clientX: 5, clientY: 5 }));
    await tick();
    const tip = el.querySelector(".mri-tooltip");
    expect(tip.querySelectorAll("tr").length).toBe(1);
    expect(tip.querySelector(".mri-lens-note").textContent).toBe("only the top-1 <b>saved</b>");
    expect(tip.querySelector("b")).toBe(null);
  });
  it("pins a cell on click, sets the selection, and moves with arrow keys", async () => {
    const { model, sel } = setup(fakeData(4, 6));
    const { el } = await mount(lensTable, model);
    cell(el, 2, 3).click();
    expect(sel.get("layer")).toBe(2);
    expect(sel.get("position")).toBe(3);
    // the pinned cell's top-k is fetched right away
    expect(commandCalls(model).map((c) => c.msg.cells)).toEqual([[[2, 3]]]);
    expect(cell(el, 2, 3).classList.contains("mri-lens-pinned")).toBe(true);
    const body = el.querySelector(".mri-lens-body");
    body.dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowRight", bubbles: true }));
    expect(sel.get("layer")).toBe(3);
    body.dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowDown", bubbles: true }));
    expect(sel.get("position")).toBe(4);
    expect(cell(el, 3, 4).classList.contains("mri-lens-pinned")).toBe(true);
    expect(body.getAttribute("data-lm-suppress-shortcuts")).toBe("true");
  });
  it("follows the selection set elsewhere", async () => {
    const { model, sel } = setup(fakeData(4, 60));
    const { el } = await mount(lensTable, model);
    sel.set({ layer: 1, position: 50 });
    expect(cell(el, 1, 50).classList.contains("mri-lens-pinned")).toBe(true);
    sel.set({ layer: 99, position: 2 }); // a layer this table does not have: keep the pinned layer
    expect(cell(el, 1, 2).classList.contains("mri-lens-pinned")).toBe(true);
    // no pinned cell: a position alone highlights its row
    cell(el, 1, 2).click(); // unpin
    expect(el.querySelector(".mri-lens-pinned")).toBe(null);
    sel.set({ layer: null, position: 4 });
    expect(cell(el, 0, 4).classList.contains("mri-lens-rowhi")).toBe(true);
    expect(cell(el, 0, 3).classList.contains("mri-lens-rowhi")).toBe(false);
  });
  it("recolours on a metric change and transposes in place", async () => {
    const { model } = setup(fakeData(4, 6));
    const { el } = await mount(lensTable, model);
    const before = cell(el, 1, 1).style.background;
    model.set("metric", "rank");
    await tick(); // Python sends the rank values
    expect(model.get("values_metric")).toBe("rank");
    const after = cell(el, 1, 1).style.background;
    expect(after).not.toBe(before);
    expect(el.querySelector(".mri-lens-legend").textContent).toMatch(/rank 0/);
    model.set("transpose", true);
    const c = cell(el, 1, 5);
    expect(c.style.top).toBe(`${1 * CELL_H}px`);
    expect(c.style.left).toBe(`${5 * CELL_W}px`);
    // new data from Python redraws the same view
    newResult(model, fakeData(5, 3));
    await Promise.resolve(); // the traits of one message redraw once, after all of them changed
    expect(el.querySelectorAll(".mri-lens-grid").length).toBe(1);
    expect(cell(el, 4, 2)).not.toBe(null);
  });
  it("sends toolbar changes to Python", async () => {
    const { model } = setup(fakeData(4, 6));
    const { el } = await mount(lensTable, model);
    const sel = el.querySelector("select.mri-lens-metric");
    sel.value = "entropy";
    sel.dispatchEvent(new Event("change"));
    expect(model.get("metric")).toBe("entropy");
    const input = el.querySelector("input.mri-lens-prompt");
    input.value = "new prompt";
    input.dispatchEvent(new KeyboardEvent("keydown", { key: "Enter" }));
    expect(model.get("prompt")).toBe("new prompt");
  });
  it("image mode: hovering a patch highlights its token row, click locks and pins", async () => {
    const image = {
      png: enc(new Uint8Array([137, 80, 78, 71])), width: 28, height: 28, grid: [2, 2],
      positions: enc(new Int32Array([0, 1, 2, 3])), blank: enc(new Uint8Array([1, 0, 0, 1])),
    };
    const { model, sel } = setup(fakeData(4, 6, 3, { image }));
    const { el } = await mount(lensTable, model);
    const patches = el.querySelectorAll(".mri-lens-patch");
    expect(patches.length).toBe(4);
    expect(el.querySelectorAll(".mri-lens-patch.mri-lens-blank").length).toBe(2);
    expect(el.querySelector(".mri-lens-rowhead").textContent).toContain("IMG003 (1,0)");
    patches[2].dispatchEvent(new MouseEvent("mousemove", { bubbles: true }));
    expect(cell(el, 0, 2).classList.contains("mri-lens-rowhi")).toBe(true);
    expect(el.querySelector(".mri-lens-info").textContent).toContain("best layer 3");
    patches[2].click();
    expect(sel.get("position")).toBe(2);
    expect(sel.get("layer")).toBe(3);
    patches[1].dispatchEvent(new MouseEvent("mousemove", { bubbles: true }));
    expect(cell(el, 0, 2).classList.contains("mri-lens-rowhi")).toBe(true); // locked
    const mask = el.querySelector("input.mri-lens-mask");
    mask.checked = true;
    mask.dispatchEvent(new Event("change"));
    expect(el.querySelector(".mri-lens-imgbox").classList.contains("mri-lens-masked")).toBe(true);
  });
});

/** fakeData under interventions: the clean run's target probabilities and ranks beside it. */
function ivData(L, S) {
  const d = fakeData(L, S);
  const tp = new Float32Array(L * S), cp = new Float32Array(L * S), cr = new Int32Array(L * S);
  for (let i = 0; i < L * S; i++) {
    cp[i] = 0.5;
    tp[i] = 0.5 + ((i % 5) - 2) * 0.1; // changes of -0.2 .. +0.2
    cr[i] = i % 4;
  }
  cp[L * S - 1] = NaN; // a position the clean run lacks
  cr[L * S - 1] = -1;
  return { ...d, tp, cp, cr };
}

const CMP = {
  position: 2, token: " t2", target: " a", target_id: 1, rank_base: 0, layer: "3", interventions: ["steer resid"],
  clean: { prob: 0.5, rank: 0, prediction: " a", prediction_id: 1, prediction_prob: 0.5 },
  intervened: { prob: 0.25, rank: 2, prediction: " b", prediction_id: 2, prediction_prob: 0.3 },
};

describe("lens table under interventions", () => {
  const decodedState = (full, metric) => {
    const st = toState(full, metric);
    const v = st.values.view;
    const T = st.values.dtype === "int32" ? Int32Array : Float32Array;
    return { ...st, values: { data: new T(v.buffer, v.byteOffset, v.byteLength / 4), shape: st.values.shape } };
  };
  it("offers the diff metric only with a clean run; reads the one metric Python sent", () => {
    const plain = decodedState(fakeData(2, 3), "prob");
    expect(hasClean(plain)).toBe(false);
    expect(metricsFor(plain)).toEqual(["prob", "rank", "entropy"]);
    expect(effectiveMetric(plain, "diff")).toBe("prob");
    expect(metricValue(plain, "prob", 1, 2)).toBe(Math.fround(2 / 3));
    expect(Number.isNaN(metricValue(plain, "rank", 1, 2))).toBe(true); // not sent (yet)
    const d = decodedState(ivData(4, 5), "diff");
    expect(hasClean(d)).toBe(true);
    expect(metricsFor(d)).toEqual(["prob", "rank", "entropy", "diff"]);
    expect(effectiveMetric(d, "diff")).toBe("diff");
    // cell (layer 1, pos 2) is flat index 7: 0.5 + (7 % 5 - 2) * 0.1 = 0.5, minus 0.5
    expect(metricValue(d, "diff", 1, 2)).toBe(0);
    expect(metricValue(d, "diff", 0, 4)).toBe(Math.fround(Math.fround(0.7) - 0.5));
    expect(Number.isNaN(metricValue(d, "diff", 3, 4))).toBe(true);
  });
  it("splits Python's cell_details answer per cell and keeps a cache per version", () => {
    const full = ivData(4, 5);
    const model = new MockModel({ lens_version: 3 });
    const res = details(full, model, [[0, 1], [3, 4]]);
    const dec = {};
    for (const [key, v] of Object.entries(res)) {
      dec[key] = v?.view ? { data: new (v.dtype === "int32" ? Int32Array : Float32Array)(v.view.buffer), shape: v.shape } : v;
    }
    const cells = splitDetails(dec);
    expect(cells.map((c) => [c.layer, c.pos])).toEqual([[0, 1], [3, 4]]);
    expect(cells[0].tokens).toEqual([full.vocab[1], full.vocab[2], full.vocab[3]]);
    expect(cells[0].probs).toEqual(Array.from(full.topP.subarray(3, 6)));
    expect(cells[1].clean_rank).toBe(-1);
    expect(detailCache(3)).toEqual({ version: 3, cells: new Map() });
  });
  it("colours diff cells on the shared diverging scale, saturating at the largest change", () => {
    expect(cellColor("diff", 0, 100, 0.2)).toBe("rgb(255,255,255)");
    expect(cellColor("diff", 0.2, 100, 0.2)).toBe(effectColor(1));
    expect(cellColor("diff", -0.1, 100, 0.2)).toBe(effectColor(-0.5));
    expect(cellColor("diff", NaN, 100, 0.2)).toBe(NAN_COLOR);
    expect(legendLabels("diff", 100, 0.2)).toEqual(["\u22120.200 (p fell)", "+0.200 (p rose)"]);
  });
  it("hover lines give the clean and intervened values of the cell", () => {
    const full = ivData(4, 5);
    const data = { has_clean: true };
    // the fetched details of a cell (flat index i = layer * S + pos)
    const det = (i) => ({ target_prob: full.tp[i], target_rank: full.tr[i], clean_prob: full.cp[i], clean_rank: full.cr[i] });
    const div = document.createElement("div");
    div.append(...beforeAfter(data, det(1)));
    const num = (run, field) => div.querySelector(`[data-run='${run}'][data-field='${field}']`);
    expect(Number(num("clean", "prob").dataset.value)).toBe(0.5);
    expect(num("clean", "rank").textContent).toBe("1");
    expect(Number(num("intervened", "prob").dataset.value)).toBe(Math.fround(0.4));
    expect(num("diff", "prob").textContent).toBe("\u22120.1000");
    const none = document.createElement("div");
    none.append(...beforeAfter(data, det(19)));
    expect(none.textContent).toContain("no such position");
    expect(beforeAfter({ has_clean: false }, det(1))).toEqual([]);
    expect(beforeAfter(data, { ...det(1), clean_prob: null })).toEqual([]);
  });
  it("shows Python's comparison above the table, the diff colours, and before/after on hover", async () => {
    const { model } = setup(ivData(4, 5), { comparison: CMP });
    const { el } = await mount(lensTable, model);
    const panel = el.querySelector(".mri-lens-cmpbox .mri-compare");
    expect(panel).not.toBe(null);
    const val = (run, field) => panel.querySelector(`[data-run='${run}'][data-field='${field}']`);
    expect(val("clean", "prob").textContent).toBe("50.00%");
    expect(val("intervened", "rank").textContent).toBe("2");
    expect(val("intervened", "prediction").textContent).toBe("' b' 30.00%");
    expect(panel.textContent).toContain("rank of ' a' (0 = top)");
    expect(panel.textContent).toContain("at position 2 ' t2' (output, layer 3)");
    // the toolbar offers diff; choosing it recolours the cells by the change
    const select = el.querySelector("select.mri-lens-metric");
    expect([...select.options].map((o) => o.value)).toContain("diff");
    select.value = "diff";
    select.dispatchEvent(new Event("change"));
    expect(model.get("metric")).toBe("diff");
    await tick(); // Python sends the diff values
    const bg = (layer, pos) => cell(el, layer, pos).style.background.replace(/ /g, "");
    expect(bg(0, 0)).toBe(effectColor(-1)); // -0.2 of at most 0.2
    expect(bg(0, 4)).toBe(effectColor(1));
    expect(bg(1, 2)).toBe("rgb(255,255,255)");
    expect(bg(3, 4)).toBe(NAN_COLOR);
    expect(el.querySelector(".mri-lens-legend").textContent).toContain("(p fell)");
    cell(el, 0, 1).dispatchEvent(new MouseEvent("mousemove", { bubbles: true, clientX: 5, clientY: 5 }));
    await tick();
    const tip = el.querySelector(".mri-tooltip");
    expect(tip.textContent).toContain("clean p = 0.5000, rank 1 \u2192 intervened p = 0.4000, rank 1");
    // Python moves the comparison to another position: only the panel changes
    const body = el.querySelector(".mri-lens-body");
    model.set("comparison", { ...CMP, position: 4, token: " t4" });
    expect(el.querySelector(".mri-compare").dataset.position).toBe("4");
    expect(el.querySelector(".mri-lens-body")).toBe(body);
    // interventions off: no clean run, no panel, no diff option, colours back to prob
    model.full = { ...model.full, cp: null, cr: null };
    model.set({ has_clean: false, comparison: {}, metric: "prob", values: enc(metricArr(model.full, "prob"), [4, 5]), values_metric: "prob" });
    expect(el.querySelector(".mri-compare")).toBe(null);
    expect([...el.querySelector("select.mri-lens-metric").options].map((o) => o.value)).not.toContain("diff");
    expect(el.querySelector(".mri-lens-under")).toBe(null);
  });
});

describe("comparison panel text", () => {
  it("quotes tokens with control characters escaped", async () => {
    const { quoted } = await import("../src/lib/compare.js");
    expect(quoted(" Paris")).toBe("' Paris'");
    expect(quoted("a\nb\tc")).toBe("'a\\nb\\tc'");
    expect(quoted("\u001c")).toBe("'\\u001c'");
  });
});
