import { describe, it, expect } from "vitest";
import graphView from "../src/views/graph_view.js";
import { patchIndex, patchOf, edgeWidths, buildElements, graphStyle, homeView, rendererOptions, NO_VALUE } from "../src/lib/graph.js";
import { MockModel, enc, mount } from "./mock_model.js";

const tick = () => new Promise((r) => setTimeout(r, 0));

// 2 layers x 2 regions: n0 (0,0) n1 (0,1) | n2 (1,0) n3 (1,1); edges n0->n2 (3), n0->n3 (1), n1->n3 (2)
function graphData(extra = {}) {
  return {
    x: enc(new Float32Array([0, 0, 100, 100])), y: enc(new Float32Array([0, 20, 0, 20])),
    size: enc(new Float32Array([10, 10, 10, 10])),
    color: enc(new Uint8Array([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9]), [4, 3]),
    label: ["a", "b", "c", "<b>d</b>"], node_tooltip: null, shape: null,
    parts: enc(new Float32Array([3, 1, 0, 2, 3, 0, 1, 3]), [4, 2]),
    select_keys: ["layer", "region"],
    select: enc(new Int32Array([0, 0, 0, 1, 1, 0, 1, 1]), [4, 2]),
    groups: [], parent: null,
    edge_source: enc(new Int32Array([0, 0, 1])), edge_target: enc(new Int32Array([2, 3, 3])),
    edge_weight: enc(new Float32Array([3, 1, 2])),
    edge_color: enc(new Uint8Array(9).fill(100), [3, 3]), edge_width: null, edge_parts: null, edge_tooltip: null,
    part_names: ["joy", "fear"], part_colors: ["#0072b2", "#e69f00"],
    annotations: [{ x: 0, y: -30, text: "layer 0", select: { layer: 0 } }, { x: 100, y: -30, text: "layer 1" }],
    title: "test graph", directed: false, weight_name: "documents", height: 300, details_command: null,
    ...extra,
  };
}

async function setup(extra = {}, state = {}) {
  const sel = new MockModel({ layer: null, region: null, position: null, neuron: null, head: null, label: null });
  const model = new MockModel({ selection: "IPY_MODEL_s", ...graphData(extra), min_weight: 0, top_k: 0, highlight: {}, ...state },
    { models: { s: sel } });
  const { el } = await mount(graphView, model);
  await tick();
  const root = el.querySelector(".mri-graph_view");
  return { el, root, cy: root.__cy, model, sel };
}

describe("graph lib", () => {
  it("decodes selection patches with the NO_VALUE sentinel", () => {
    const d = { select_keys: ["layer", "head"], select: { data: new Int32Array([2, NO_VALUE, 3, 4]), shape: [2, 2] } };
    expect(patchOf(d, 0)).toEqual({ layer: 2 });
    expect(patchOf(d, 1)).toEqual({ layer: 3, head: 4 });
  });
  it("matches the most specific patch", () => {
    const idx = patchIndex([{ id: "a", patch: { layer: 1 } }, { id: "b", patch: { layer: 1, region: 5 } }, { id: "c", patch: null }]);
    expect(idx.match({ layer: 1, region: 5 })).toEqual(["b"]);
    expect(idx.match({ layer: 1, region: 6 })).toEqual(["a"]);
    expect(idx.match({ layer: 1, region: null })).toEqual(["a"]);
    expect(idx.match({ layer: 2 })).toEqual([]);
  });
  it("scales edge widths by weight unless given", () => {
    const d = { edge_source: { data: new Int32Array(2) }, edge_weight: { data: new Float32Array([2, -4]) } };
    expect(Array.from(edgeWidths(d))).toEqual([3.5, 6.5]);
    expect(Array.from(edgeWidths({ ...d, edge_width: { data: new Float32Array([1, 2]) } }))).toEqual([1, 2]);
  });
  it("builds nodes, pies, annotations and edges", () => {
    const dec = { ...graphData() };
    // decode the few arrays buildElements reads
    for (const k of ["x", "y", "size", "color", "parts", "select", "edge_source", "edge_target", "edge_weight", "edge_color"]) {
      const v = dec[k];
      const C = { float32: Float32Array, int32: Int32Array, uint8: Uint8Array }[v.dtype];
      dec[k] = { data: new C(v.view.buffer), shape: v.shape };
    }
    const els = buildElements(dec);
    expect(els.filter((e) => e.group === "nodes").length).toBe(6);
    const n0 = els.find((e) => e.data.id === "n0");
    expect(n0.data.p1).toBeCloseTo(75);
    expect(n0.data.color).toBe("rgb(255,0,0)");
    expect(n0.classes).toContain("pie");
    expect(els.find((e) => e.data.id === "e2").data.source).toBe("n1");
  });
});

describe("readable first view", () => {
  it("fits when the fit keeps the minimum zoom, else starts at the top at that zoom", () => {
    const bb = { x1: -10, y1: -50, w: 1000, h: 3000 };
    // fit zoom = min(952/1000, 672/3000) = 0.224
    expect(homeView(bb, 1000, 720, 0)).toBe(null); // no minimum: plain fit
    expect(homeView(bb, 1000, 720, 0.2)).toBe(null); // the fit is readable enough
    expect(homeView(bb, 0, 0, 0.85)).toBe(null); // hidden canvas: nothing to compute
    const v = homeView(bb, 1000, 720, 0.85);
    expect(v.zoom).toBe(0.85);
    // 850 px wide < 1000 - 48: centred horizontally; the top of the graph 24 px under the canvas top
    expect(v.pan.x).toBeCloseTo((1000 - 850) / 2 + 10 * 0.85);
    expect(v.pan.y).toBeCloseTo(24 + 50 * 0.85);
    // wider than the canvas: from the left edge
    const wide = homeView({ x1: 0, y1: 0, w: 2000, h: 3000 }, 1000, 720, 0.85);
    expect(wide.pan).toEqual({ x: 24, y: 24 });
  });

  it("styles labels beside the nodes, cut with an ellipsis, and left-aligned plain headers", () => {
    const base = graphStyle({ directed: false }, false).find((r) => r.selector === "node.node").style;
    expect(base["font-size"]).toBe(8);
    expect(base["text-valign"]).toBe("bottom");
    const st = graphStyle({ directed: true, label_size: 12, label_position: "right", label_width: 120 }, false);
    const node = st.find((r) => r.selector === "node.node").style;
    expect(node["font-size"]).toBe(12);
    expect([node["text-halign"], node["text-valign"]]).toEqual(["right", "center"]);
    expect([node["text-wrap"], node["text-max-width"]]).toEqual(["ellipsis", "120px"]);
    expect(node["text-background-opacity"]).toBeGreaterThan(0.5);
    expect(st.find((r) => r.selector === "node.annot.left").style["text-halign"]).toBe("right");
    const els = buildElements({
      x: { data: new Float32Array([0]) }, y: { data: new Float32Array([0]) }, label: ["a"],
      edge_source: { data: new Int32Array(0) }, edge_target: { data: new Int32Array(0) }, edge_weight: { data: new Float32Array(0) },
      annotations: [{ x: 0, y: 0, text: "layer 3", align: "left", select: { layer: 3 } },
        { x: 0, y: 9, text: "note", align: "left", bold: false, color: "#777777" }],
    });
    const [h3, note] = els.filter((e) => e.data.kind === "annotation");
    expect(h3.classes.split(" ").sort()).toEqual(["annot", "left", "selectable"]);
    expect(note.classes.split(" ").sort()).toEqual(["annot", "colored", "left", "plain"]);
    expect(note.data.color).toBe("#777777");
  });

  it("a 'start' button comes back to the first view only where the graph has a minimum zoom", async () => {
    const { root } = await setup();
    expect(root.querySelector("button.mri-home")).toBe(null);
    expect(root.querySelector("button.mri-fit").textContent).toBe("fit");
    const zoomed = await setup({ min_zoom: 0.9, label_position: "right", label_size: 12 });
    const btn = zoomed.root.querySelector("button.mri-home");
    expect(btn.textContent).toBe("start");
    btn.click(); // headless cytoscape: runs the fit without a canvas, must not throw
    expect(zoomed.cy.nodes(".node").length).toBe(4);
  });
});

describe("GraphView", () => {
  it("draws every node and edge, labels as text", async () => {
    const { root, cy } = await setup();
    expect(cy.nodes(".node").length).toBe(4);
    expect(cy.edges().length).toBe(3);
    expect(cy.getElementById("n3").data("label")).toBe("<b>d</b>");
    expect(root.querySelector(".mri-title").textContent).toBe("test graph");
    expect(root.querySelector("b")).toBe(null);
    expect(root.querySelector(".mri-status").textContent).toContain("3/3 edges");
    expect(Array.from(root.querySelectorAll(".mri-legend span")).map((s) => s.textContent)).toContain("joy");
  });

  it("a click on a node sets its selection patch; the selection outlines the matching node", async () => {
    const { root, cy, sel } = await setup();
    cy.getElementById("n3").emit("tap");
    expect(sel.get("layer")).toBe(1);
    expect(sel.get("region")).toBe(1);
    await tick();
    expect(cy.getElementById("n3").hasClass("sel")).toBe(true);
    expect(root.dataset.selected).toBe("n3");
    sel.set({ layer: 0, region: 1 });
    await tick();
    expect(cy.getElementById("n3").hasClass("sel")).toBe(false);
    expect(cy.getElementById("n1").hasClass("sel")).toBe(true);
    // a header with a {layer} patch matches when no region node does
    sel.set({ layer: 0, region: 7 });
    expect(cy.getElementById("a0").hasClass("sel")).toBe(true);
    cy.getElementById("a1").emit("tap"); // no patch: nothing changes
    expect(sel.get("layer")).toBe(0);
  });

  it("filters edges by minimum weight and top-k, from Python traits", async () => {
    const { root, cy, model } = await setup();
    model.set("min_weight", 2);
    expect(cy.getElementById("e1").hasClass("filtered")).toBe(true);
    expect(cy.getElementById("e0").hasClass("filtered")).toBe(false);
    expect(root.querySelector(".mri-status").textContent).toContain("2/3 edges");
    model.set("min_weight", 0);
    model.set("top_k", 1);
    expect(cy.edges(".filtered").map((e) => e.id()).sort()).toEqual(["e1", "e2"]);
    expect(root.querySelector("input.mri-top-k").value).toBe("1");
  });

  it("the toolbar sets the filter traits", async () => {
    const { root, model } = await setup();
    const input = root.querySelector("input.mri-top-k");
    input.value = "2";
    input.dispatchEvent(new Event("change"));
    expect(model.get("top_k")).toBe(2);
    const range = root.querySelector("input.mri-min-weight");
    range.value = "3";
    range.dispatchEvent(new Event("input"));
    expect(model.get("min_weight")).toBe(3);
  });

  it("highlights what Python says, dims the rest, and keeps highlighted edges through filters", async () => {
    const { root, cy, model } = await setup();
    model.set("highlight", { nodes: enc(new Int32Array([0, 3])), edges: enc(new Int32Array([1])), edge_weight: enc(new Float32Array([5])) });
    expect(cy.getElementById("n0").hasClass("hl")).toBe(true);
    expect(cy.getElementById("n1").hasClass("dim")).toBe(true);
    expect(cy.getElementById("e1").hasClass("hl")).toBe(true);
    expect(cy.getElementById("e1").data("hw")).toBe(10);
    expect(cy.getElementById("e0").hasClass("dim")).toBe(true);
    expect(root.dataset.highlightNodes).toBe("2");
    model.set("min_weight", 3);
    expect(cy.getElementById("e1").hasClass("filtered")).toBe(false); // weight 1 but highlighted
    model.set("highlight", {});
    expect(cy.elements(".dim").length).toBe(0);
    expect(cy.getElementById("e1").hasClass("filtered")).toBe(true);
  });

  it("shows node and edge tooltips as text", async () => {
    const { root, cy } = await setup({ node_tooltip: ["A", "B", "C", "<i>D</i>"] });
    cy.getElementById("n3").emit("mouseover");
    const tip = root.querySelector(".mri-tooltip");
    expect(tip.style.display).toBe("block");
    expect(tip.textContent).toContain("<i>D</i>");
    expect(tip.textContent).toContain("fear: 3");
    expect(tip.querySelector("i")).toBe(null);
    cy.getElementById("e0").emit("mouseover");
    expect(tip.textContent).toContain("a \u2192 c");
    expect(tip.textContent).toContain("documents: 3");
    cy.getElementById("e0").emit("mouseout");
    expect(tip.style.display).toBe("none");
  });

  it("redraws in place when the data changes", async () => {
    const { root, model } = await setup();
    const d = graphData({ edge_source: enc(new Int32Array([0])), edge_target: enc(new Int32Array([1])),
      edge_weight: enc(new Float32Array([1])), edge_color: enc(new Uint8Array(3), [1, 3]) });
    model.set(d); // Python sets the traits in one message: one redraw, after all of them
    await tick();
    const cy = root.__cy;
    expect(cy.edges().length).toBe(1);
  });

  it("collapses a group on double-click", async () => {
    const { cy } = await setup({ groups: [{ label: "layer 0" }], parent: enc(new Int32Array([0, 0, -1, -1])) });
    expect(cy.getElementById("n0").parent().id()).toBe("g0");
    cy.getElementById("g0").emit("dbltap");
    expect(cy.getElementById("n0").hasClass("hidden")).toBe(true);
    cy.getElementById("g0").emit("dbltap");
    expect(cy.getElementById("n0").hasClass("hidden")).toBe(false);
  });
});

describe("GraphView controls", () => {
  it("renders Python's controls and sets their traits", async () => {
    const controls = [
      { name: "position", label: "position", type: "select", value: 1, options: [[0, "0 'The'"], [1, "1 ' <b>cat</b>'"]] },
      { name: "target", label: "target", type: "text", value: "", placeholder: "prediction" },
      { name: "k", label: "k", type: "number", value: 3 },
    ];
    const { root, model } = await setup({ controls });
    const sel = root.querySelector(".mri-controls select.mri-control-position");
    expect(sel.value).toBe("1");
    expect(sel.options[1].textContent).toBe("1 ' <b>cat</b>'");
    sel.value = "0";
    sel.dispatchEvent(new Event("change"));
    expect(model.get("position")).toBe(0);
    const text = root.querySelector("input.mri-control-target");
    expect(text.placeholder).toBe("prediction");
    text.value = " Paris";
    text.dispatchEvent(new Event("change"));
    expect(model.get("target")).toBe(" Paris");
    text.value = " Rome";
    const key = new KeyboardEvent("keydown", { key: "Enter", bubbles: true });
    let leaked = false;
    root.parentNode.addEventListener("keydown", () => { leaked = true; });
    text.dispatchEvent(key);
    expect(model.get("target")).toBe(" Rome");
    expect(leaked).toBe(false); // notebook shortcuts never see keys typed in a control
    const num = root.querySelector("input.mri-control-k");
    num.value = "7";
    num.dispatchEvent(new Event("change"));
    expect(model.get("k")).toBe(7);
    expect(root.querySelector("b")).toBe(null);
  });
  it("has no controls row without controls", async () => {
    const { root } = await setup();
    expect(root.querySelector(".mri-controls")).toBe(null);
  });
});

describe("renderer for big graphs", () => {
  it("WebGL past 2,000 elements where WebGL2 exists, canvas otherwise", () => {
    expect(rendererOptions(3000, 5000, { webgl: true }).renderer).toMatchObject({ name: "canvas", webgl: true });
    expect(rendererOptions(3000, 5000, { webgl: false }).renderer.webgl).toBe(false);
    expect(rendererOptions(3000, 5000, { webgl: false }).textureOnViewport).toBe(true);
    expect(rendererOptions(10, 20, { webgl: true }).renderer.webgl).toBe(false);
    expect(rendererOptions(3000, 5000, { webgl: true, headless: true }).renderer).toBe(undefined);
    let asked = 0;
    rendererOptions(10, 20, { webgl: () => { asked++; return true; } });
    expect(asked).toBe(0); // small graphs never probe WebGL
  });
  it("edges hidden while panning past 1,000 edges", () => {
    expect(rendererOptions(3000, 5000, { webgl: true }).hideEdgesOnViewport).toBe(true);
    expect(rendererOptions(100, 900, { webgl: false }).hideEdgesOnViewport).toBe(false);
  });
  it("labels of big graphs only past zoom 1.5; graphs with a readable first zoom keep them", () => {
    const d = { x: enc(new Float32Array([0])), y: enc(new Float32Array([0])), label_size: 10 };
    const nodeStyle = (data, big) => graphStyle(data, big).find((s) => s.selector === "node.node").style;
    expect(nodeStyle(d, true)["min-zoomed-font-size"]).toBe(15);
    expect(nodeStyle(d, false)["min-zoomed-font-size"]).toBe(7);
    expect(nodeStyle({ ...d, min_zoom: 0.8 }, true)["min-zoomed-font-size"]).toBe(7);
  });
});
