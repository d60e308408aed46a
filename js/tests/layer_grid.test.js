import { describe, it, expect } from "vitest";
import layerGrid, { colourer, denseCounts, tint } from "../src/views/layer_grid.js";
import { decodeTree } from "../src/lib/codec.js";
import { MockModel, enc, mount, commandCalls, commandReply } from "./mock_model.js";

const tick = () => new Promise((r) => setTimeout(r, 0));

// 2 layers, 2 labels, grid 2 (4 regions); 4 documents: labels a, a, b, b
// regions per layer: layer 0 -> [0, 0, 3, 1]; layer 1 -> [2, 1, 1, 1]
function data() {
  const regions = new Int16Array([0, 0, 3, 1, 2, 1, 1, 1]);
  const counts = new Int32Array(2 * 2 * 4);
  const labels = [0, 0, 1, 1];
  for (let l = 0; l < 2; l++) for (let d = 0; d < 4; d++) counts[(l * 2 + labels[d]) * 4 + regions[l * 4 + d]]++;
  // sparse, as Python sends it: non-empty (layer, region) cells and their counts per label
  // layer 0: r0 = (2, 0), r1 = (0, 1), r3 = (0, 1); layer 1: r1 = (1, 2), r2 = (1, 0)
  return {
    cells: enc(new Int32Array([0, 1, 3, 5, 6])),
    cell_counts: enc(new Int32Array([2, 0, 0, 1, 0, 1, 1, 2, 1, 0]), [5, 2]),
    dense: counts,
    label_names: ["a", "<b>"], label_colors: ["#0072b2", "#e69f00"], label_totals: [2, 2],
    layer_names: ["embeddings", "layer 1"], layer_ids: [0, 1], grid: 2, cell: 10, title: "t",
  };
}

async function setup(state = {}) {
  const sel = new MockModel({ layer: null, region: null, position: null, neuron: null, head: null, label: null });
  const model = new MockModel({ selection: "IPY_MODEL_s", ...data(), mode: "label", label: null, labels: ["a", "<b>"], ...state },
    { models: { s: sel } });
  const { el } = await mount(layerGrid, model);
  await tick();
  return { el, root: el.querySelector(".mri-layer_grid"), model, sel };
}

const cell = (root, layer, region) => root.querySelector(`rect[data-layer="${layer}"][data-region="${region}"]`);

// Python's answer to region_members(layer, region): the documents and their regions in each layer
function membersReply(id, docs, regions) {
  const arrays = [new Int32Array(docs), ...regions.map((r) => new Int32Array(r))];
  const result = { docs: { dtype: "int32", shape: [docs.length] },
    regions: regions.map((r) => ({ dtype: "int32", shape: [r.length] })) };
  const paths = [["result", "docs", "view"], ...regions.map((_, i) => ["result", "regions", i, "view"])];
  return commandReply(id, { result, buffer_paths: paths }, arrays.map((a) => new DataView(a.buffer)));
}

describe("LayerGrid sparse counts", () => {
  it("rebuild the dense counts", () => {
    const d = decodeTree(data());
    const dense = denseCounts(d.cells, d.cell_counts, 2, 2);
    expect(dense.shape).toEqual([2, 2, 2, 2]);
    expect(Array.from(dense.data)).toEqual(Array.from(d.dense));
  });
});

describe("LayerGrid colours", () => {
  const d = decodeTree(data());
  d.counts = denseCounts(d.cells, d.cell_counts, 2, 2);
  it("one label: intensity by count, empty cells pale", () => {
    const c = colourer(d, "label", "a", null);
    expect(c.fill(0, 0)).toBe(tint("#0072b2", 1)); // 2 docs of a = max
    expect(c.fill(0, 2)).toBe("#f6f6f6");
    const all = colourer(d, "label", null, null);
    expect(all.fill(1, 1)).toBe(tint("#3b5b92", 1)); // 3 docs
  });
  it("all labels: dominant label's colour", () => {
    const c = colourer(d, "all", null, null);
    expect(c.fill(0, 0)).toBe(tint("#0072b2", 0.25 + 0.75 * Math.sqrt(2 / 3)));
    expect(c.fill(0, 3)).toBe(tint("#e69f00", 0.25 + 0.75 * Math.sqrt(1 / 3)));
  });
  it("difference of shares", () => {
    const c = colourer(d, "diff", null, ["a", "<b>"]);
    expect(c.value(0, 0)).toBe(1);
    expect(c.value(0, 3)).toBe(-0.5);
    expect(c.value(1, 1)).toBe(0.5 - 1);
  });
});

describe("LayerGrid view", () => {
  it("draws one heatmap per layer, row 0 at the bottom, names as text", async () => {
    const { root } = await setup();
    expect(root.querySelectorAll("svg").length).toBe(2);
    expect(root.querySelectorAll("rect.mri-cell").length).toBe(8);
    expect(Number(cell(root, 0, 0).getAttribute("y"))).toBe(10); // row 0 at the bottom of a 2x2 grid
    expect(Number(cell(root, 0, 3).getAttribute("y"))).toBe(0);
    expect(Array.from(root.querySelectorAll("figcaption")).map((f) => f.textContent)).toEqual(["embeddings", "layer 1"]);
    expect(root.querySelector("option[value='<b>']").textContent).toBe("<b>");
    expect(root.querySelector("b")).toBe(null);
  });

  it("a click sets layer and region; the selection is outlined and its documents followed", async () => {
    const { root, model, sel } = await setup();
    cell(root, 0, 0).dispatchEvent(new MouseEvent("click", { bubbles: true }));
    expect(sel.get("layer")).toBe(0);
    expect(sel.get("region")).toBe(0);
    await tick();
    expect(cell(root, 0, 0).classList.contains("mri-selected")).toBe(true);
    // the documents' regions are asked of Python on demand
    const ask = commandCalls(model).filter((c) => c.name === "region_members");
    expect(ask.map((c) => c.msg)).toEqual([{ layer: 0, region: 0 }]);
    expect(cell(root, 1, 2).classList.contains("mri-follow")).toBe(false);
    model.receive(...membersReply(ask[0].id, [0, 1], [[0], [1, 2]]));
    await tick();
    // docs 0, 1 are in region 0 at layer 0; at layer 1 they are in regions 2 and 1
    expect(cell(root, 1, 2).classList.contains("mri-follow")).toBe(true);
    expect(cell(root, 1, 1).classList.contains("mri-follow")).toBe(true);
    expect(cell(root, 1, 0).classList.contains("mri-follow")).toBe(false);
    expect(root.querySelector("figure[data-layer='0']").classList.contains("mri-sel-layer")).toBe(true);
    // the selection from elsewhere moves the outline
    sel.set({ layer: 1, region: 1 });
    expect(cell(root, 0, 0).classList.contains("mri-selected")).toBe(false);
    expect(cell(root, 1, 1).classList.contains("mri-selected")).toBe(true);
    const ask2 = commandCalls(model).filter((c) => c.name === "region_members");
    expect(ask2[1].msg).toEqual({ layer: 1, region: 1 });
    model.receive(...membersReply(ask2[1].id, [1, 2, 3], [[0, 1, 3], [1]]));
    await tick();
    expect(cell(root, 0, 3).classList.contains("mri-follow")).toBe(true);
    expect(cell(root, 0, 2).classList.contains("mri-follow")).toBe(false);
    // back to the first region: known already, outlined at once without asking again
    sel.set({ layer: 0, region: 0 });
    expect(cell(root, 1, 2).classList.contains("mri-follow")).toBe(true);
    expect(commandCalls(model).filter((c) => c.name === "region_members").length).toBe(2);
  });

  it("switches modes from the toolbar and from Python, keeping the selection", async () => {
    const { root, model, sel } = await setup();
    sel.set({ layer: 0, region: 0 });
    const mode = root.querySelector("select.mri-mode");
    mode.value = "diff";
    mode.dispatchEvent(new Event("change"));
    expect(model.get("mode")).toBe("diff");
    expect(root.querySelector("select.mri-diff-1")).not.toBe(null);
    expect(cell(root, 0, 0).getAttribute("fill")).toBe("rgb(178,24,43)"); // all of a, none of b
    expect(cell(root, 0, 0).classList.contains("mri-selected")).toBe(true);
    model.set("mode", "label");
    model.set("label", "<b>");
    expect(root.querySelector("select.mri-label").value).toBe("<b>");
    expect(cell(root, 0, 0).getAttribute("fill")).toBe("#f6f6f6");
  });

  it("hover shows counts per label and asks Python for example texts", async () => {
    const { root, model } = await setup();
    const rc = cell(root, 0, 0);
    rc.dispatchEvent(new MouseEvent("mousemove", { bubbles: true, clientX: 5, clientY: 5 }));
    const tip = root.querySelector(".mri-tooltip");
    expect(tip.textContent).toContain("a: 2");
    expect(tip.textContent).toContain("total: 2");
    const call = commandCalls(model)[0];
    expect(call.name).toBe("region_examples");
    expect(call.msg).toEqual({ layer: 0, region: 0, k: 3 });
    model.receive(...commandReply(call.id, { result: [{ text: "<script>x</script>", label: "a" }], buffer_paths: [] }));
    await tick();
    expect(tip.textContent).toContain("[a] <script>x</script>");
    expect(tip.querySelector("script")).toBe(null);
  });
});
