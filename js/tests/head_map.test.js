import { describe, it, expect } from "vitest";
import headMap, { centredWindow, layoutPoints, pointsInRect } from "../src/views/head_map.js";
import { MockModel, enc, mount, commandCalls, commandReply } from "./mock_model.js";

// 2 layers x 2 heads at the corners of a square
function data() {
  return {
    x: enc(new Float32Array([-1, 1, -1, 1])),
    y: enc(new Float32Array([-1, -1, 1, 1])),
    layer: enc(new Int32Array([0, 0, 1, 1])),
    head: enc(new Int32Array([0, 1, 0, 1])),
    scores: {
      entropy: enc(new Float32Array([0.1, 0.2, 0.3, 0.4])),
      previous: enc(new Float32Array([0.9, 0, 0, 0])),
      first: enc(new Float32Array([0, 0.8, 0, 0])),
      self: enc(new Float32Array([0, 0, 0.7, 0])),
    },
    score_names: ["entropy", "previous", "first", "self"],
    score_help: ["e", "p", "f", "s"],
    n_layers: 2, n_heads: 2, n_examples: 2,
    examples: ["The cat sat", "<b>bold</b>"],
    model_name: "tiny",
  };
}

function mouse(el, type, x, y, extra = {}) {
  el.dispatchEvent(new MouseEvent(type, { bubbles: true, clientX: x, clientY: y, button: 0, ...extra }));
}

async function setup() {
  const sel = new MockModel({ layer: null, head: null, position: null });
  const model = new MockModel({ selection: "IPY_MODEL_s", ...data(), picked: [], example: 0, color_by: "layer" },
    { models: { s: sel } });
  const { el } = await mount(headMap, model);
  return { sel, model, el };
}

function replyPattern(model, msg, tokens) {
  const n = tokens.length;
  const a = new Float32Array(n * n);
  for (let q = 0; q < n; q++) a[q * n + Math.max(0, q - 1)] = 1; // previous-token head
  model.receive(...commandReply(msg.id, { result: { tokens, attn: { dtype: "float32", shape: [n, n] }, n_tokens: n, truncated: false },
    buffer_paths: [["result", "attn", "view"]] }, [new DataView(a.buffer)]));
}

const tick = () => new Promise((r) => setTimeout(r, 0));

describe("head_map helpers", () => {
  it("fits points into the square keeping the aspect, y up", () => {
    const { px, py } = layoutPoints([0, 2, 1], [0, 0, 1], 100, 10);
    expect(Array.from(px)).toEqual([10, 90, 50]);
    expect(py[2]).toBeLessThan(py[0]); // higher y is drawn higher
    expect(pointsInRect(px, py, { x: 0, y: 0 }, { x: 60, y: 100 })).toEqual([0, 2]);
    expect(pointsInRect(px, py, { x: 100, y: 100 }, { x: 60, y: 0 })).toEqual([1]);
  });
});

describe("HeadMap view", () => {
  it("draws one point per head coloured by layer, scores on hover", async () => {
    const { el } = await setup();
    const pts = el.querySelectorAll("circle.mri-hm-pt");
    expect(pts.length).toBe(4);
    expect(pts[0].getAttribute("fill")).toBe(pts[1].getAttribute("fill")); // same layer
    expect(pts[0].getAttribute("fill")).not.toBe(pts[2].getAttribute("fill"));
    mouse(pts[0], "mousemove", 5, 5);
    const tip = el.querySelector(".mri-tooltip");
    expect(tip.textContent).toMatch(/L0 H0/);
    expect(tip.textContent).toMatch(/previous: 0\.900/);
    // example texts are text, not HTML
    expect(el.querySelector("b")).toBe(null);
    expect(el.querySelector(".mri-hm-example").textContent).toMatch(/<b>bold<\/b>/);
  });

  it("click selects the head and shows its pattern asked from Python", async () => {
    const { sel, model, el } = await setup();
    const pt = el.querySelectorAll("circle.mri-hm-pt")[3]; // layer 1, head 1
    mouse(pt, "mousedown", 10, 10);
    mouse(pt, "mouseup", 10, 10);
    expect(sel.get("layer")).toBe(1);
    expect(sel.get("head")).toBe(1);
    const calls = commandCalls(model);
    expect(calls.length).toBe(1);
    expect(calls[0]).toMatchObject({ name: "pattern", msg: { layer: 1, head: 1, example: 0 } });
    replyPattern(model, calls[0], ["The", " cat", " sat"]);
    await tick();
    const cells = el.querySelectorAll("rect.mri-hm-cell");
    expect(cells.length).toBe(9);
    expect(Array.from(el.querySelectorAll(".mri-hm-qlabel")).map((t) => t.textContent)).toEqual(["The", "␣cat", "␣sat"]);
    expect(el.textContent).toMatch(/Layer 1, head 1/);
    // the selected head gets a ring
    expect(el.querySelector("[data-ring='1,1']")).not.toBe(null);
    // choosing another example fetches the pattern again
    const ex = el.querySelector(".mri-hm-example");
    ex.value = "1";
    ex.dispatchEvent(new Event("change"));
    expect(model.get("example")).toBe(1);
    const again = commandCalls(model);
    expect(again.at(-1)).toMatchObject({ name: "pattern", msg: { layer: 1, head: 1, example: 1 } });
  });

  it("a long text: overview canvas, the window's exact tile fetched with pattern_tile, click moves it", async () => {
    const { model, el } = await setup();
    const pt = el.querySelectorAll("circle.mri-hm-pt")[1]; // layer 0, head 1
    mouse(pt, "mousedown", 10, 10);
    mouse(pt, "mouseup", 10, 10);
    const n = 300, m = 150;
    const tokens = Array.from({ length: n }, (_, i) => `t${i}`);
    const ov = new Float32Array(m * m).fill(0.5);
    model.receive(...commandReply(commandCalls(model)[0].id, { result: { tokens, attn: null, overview: { dtype: "float32", shape: [m, m] },
      block: 2, n_tokens: n, truncated: false, layer: 0, head: 1, example: 0 }, buffer_paths: [["result", "overview", "view"]] },
    [new DataView(ov.buffer)]));
    await tick();
    expect(el.querySelector("canvas.mri-hm-overview").dataset.n).toBe("300");
    let call = commandCalls(model).at(-1);
    expect(call).toMatchObject({ name: "pattern_tile", msg: { layer: 0, head: 1, example: 0, q0: 0, q1: 64, k0: 0, k1: 64 } });
    const tile = new Float32Array(64 * 64).map((_, i) => i / 4096);
    model.receive(...commandReply(call.id, { result: { attn: { dtype: "float32", shape: [64, 64] }, q0: 0, k0: 0, q1: 64, k1: 64 },
      buffer_paths: [["result", "attn", "view"]] }, [new DataView(tile.buffer)]));
    await tick();
    expect(el.querySelectorAll("rect.mri-hm-cell").length).toBe(64 * 64);
    expect(el.querySelector(".mri-hm-qlabel").textContent).toBe("t0");
    // pan right by half a window
    el.querySelectorAll("button.mri-hm-pan")[1].click();
    call = commandCalls(model).at(-1);
    expect(call.msg).toMatchObject({ q0: 0, q1: 64, k0: 32, k1: 96 });
    model.receive(...commandReply(call.id, { result: { attn: { dtype: "float32", shape: [64, 64] }, q0: 0, k0: 32, q1: 64, k1: 96 },
      buffer_paths: [["result", "attn", "view"]] }, [new DataView(tile.buffer)]));
    await tick();
    const first = el.querySelector("rect.mri-hm-cell");
    expect([first.dataset.q, first.dataset.k]).toEqual(["0", "32"]);
    expect(el.querySelector(".mri-hm-klabel").textContent).toBe("t32");
  });

  it("centres windows inside the pattern", () => {
    expect(centredWindow(0, 0, 64, 300)).toEqual({ q0: 0, k0: 0, size: 64 });
    expect(centredWindow(299, 150, 64, 300)).toEqual({ q0: 236, k0: 118, size: 64 });
    expect(centredWindow(5, 5, 64, 40)).toEqual({ q0: 0, k0: 0, size: 40 });
  });

  it("follows a head selected elsewhere", async () => {
    const { sel, model, el } = await setup();
    sel.set({ layer: 0, head: 1 });
    expect(el.querySelector("[data-ring='0,1']")).not.toBe(null);
    expect(commandCalls(model).at(-1)).toMatchObject({ msg: { layer: 0, head: 1 } });
    sel.set({ head: null });
    expect(el.querySelectorAll(".mri-hm-ring.mri-hm-layer").length).toBe(2); // the layer's heads
  });

  it("drag picks the heads inside the rectangle; shift adds; Python changes show", async () => {
    const { model, el } = await setup();
    const svgEl = el.querySelector("svg.mri-hm-scatter");
    // jsdom: zero-size bounding box -> client coordinates are viewBox coordinates
    mouse(svgEl, "mousedown", 0, 0);
    mouse(window, "mousemove", 420, 200);
    mouse(window, "mouseup", 420, 200);
    expect(model.get("picked")).toEqual([[1, 0], [1, 1]]); // upper half = larger y = layer 1
    expect(el.querySelectorAll(".mri-hm-picked").length).toBe(2);
    mouse(svgEl, "mousedown", 0, 420, { shiftKey: true });
    mouse(window, "mousemove", 200, 250, { shiftKey: true });
    mouse(window, "mouseup", 200, 250, { shiftKey: true });
    expect(model.get("picked")).toEqual([[0, 0], [1, 0], [1, 1]]);
    model.set("picked", [[0, 1]]);
    expect(Array.from(el.querySelectorAll(".mri-hm-picked")).map((c) => c.dataset.index)).toEqual(["1"]);
    expect(el.textContent).toMatch(/1 head picked/);
    el.querySelector(".mri-hm-clear").click();
    expect(model.get("picked")).toEqual([]);
  });

  it("colours by a score when asked", async () => {
    const { model, el } = await setup();
    model.set("color_by", "previous");
    const pts = el.querySelectorAll("circle.mri-hm-pt");
    expect(pts[0].getAttribute("fill")).not.toBe(pts[1].getAttribute("fill"));
    expect(pts[1].getAttribute("fill")).toBe(pts[2].getAttribute("fill"));
  });
});
