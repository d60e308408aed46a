import { describe, it, expect } from "vitest";
import neuronViewer from "../src/views/neuron_viewer.js";
import { MockModel, enc, mount, commandCalls, commandReply } from "./mock_model.js";

const tick = () => new Promise((r) => setTimeout(r, 0));

function data(over = {}) {
  const hist = new Float32Array(37);
  hist[18] = 5; hist[20] = 10; hist[10] = 2;
  const edges = [];
  for (let e = 7; e >= -10; e--) edges.push(-(2 ** e));
  for (let e = -10; e <= 7; e++) edges.push(2 ** e);
  return {
    model_name: "tiny", shown_layer: 1, shown_neuron: 3, layers: [0, 1, 2], d_mlp: 8, gated: true,
    channels: ["mlp", "gate", "up", "act"], channel_labels: ["act(gate)·up", "gate", "up", "act(gate)"],
    n_texts: 4, n_tokens: 17, k: 2,
    stats: { max: 2, min: -1, mean: 0.1, freq_positive: 0.5 },
    cases: [{ name: "gate+ up+", freq: 0.25, mean: 1 }, { name: "gate+ up-", freq: 0.25, mean: -0.5 },
      { name: "gate- up+", freq: 0.25, mean: 0 }, { name: "gate- up-", freq: 0.25, mean: null }],
    hist: enc(hist), hist_edges: edges,
    top: [{ value: 2, text: 2, position: 1 }, { value: 1, text: 0, position: 0 }],
    bottom: [{ value: -1, text: 1, position: 2 }],
    scale: 2, effect: { promoted: [[" Paris", 1.5]], suppressed: [["<b>x</b>", -0.7]] }, effect_note: "",
    has_texts: true, has_model: true, note: "", window: [50, 10],
    ...over,
  };
}

function examplesReply(id) {
  const acts = (vals) => ({ mlp: enc(new Float32Array(vals)), gate: enc(new Float32Array(vals.map((v) => v * 10))),
    up: enc(new Float32Array(vals)), act: enc(new Float32Array(vals)) });
  // encode like Python: arrays become {view, dtype, shape} with buffers at paths
  const result = {
    layer: 1, neuron: 3, mismatch: 0,
    top: [{ text: 2, tokens: ["A", "<img src=x onerror=alert(1)>", "c"], acts: acts([0.5, 2, -1]) },
      { text: 0, tokens: ["x", "y"], acts: acts([1, 0]) }],
    bottom: [{ text: 1, tokens: ["p", "q", "r"], acts: acts([0, 0.2, -1]) }],
  };
  const paths = [], buffers = [];
  const walk = (o, path) => {
    if (o && o.view instanceof DataView) { paths.push([...path, "view"]); buffers.push(o.view); o.view = undefined; return; }
    if (o && typeof o === "object") for (const [k, v] of Object.entries(o)) walk(v, [...path, k]);
  };
  walk(result, ["result"]);
  return commandReply(id, { result, buffer_paths: paths }, buffers);
}

async function setup(over) {
  const sel = new MockModel({ layer: null, neuron: null, position: null });
  const model = new MockModel({ ...data(over), selection: "IPY_MODEL_sel", channel: "mlp", layer: 1, neuron: 3 },
    { models: { sel } });
  const { el } = await mount(neuronViewer, model);
  return { el, model, sel };
}

describe("neuron_viewer", () => {
  it("shows the neuron, stats, histogram and effect, with tokens as text", async () => {
    const { el } = await setup();
    expect(el.querySelector(".nv-title").textContent).toContain("Layer 1 · Neuron 3");
    expect(el.querySelector(".nv-stats").textContent).toContain("50.0%");
    expect(el.querySelectorAll(".nv-cases tr").length).toBe(5);
    expect(el.querySelectorAll(".nv-hist rect").length).toBe(37);
    const effect = el.querySelector(".nv-effectbox");
    expect(effect.textContent).toContain("<b>x</b>");
    expect(effect.querySelector("b")).toBe(null);
  });

  it("navigates: next / prev wrap around and set the model's traits", async () => {
    const { el, model } = await setup();
    el.querySelector(".nv-next").click();
    expect(model.get("neuron")).toBe(4);
    expect(model.saved).toBeGreaterThan(0);
    model.set(data({ shown_neuron: 4 }));
    expect(el.querySelector(".nv-title").textContent).toContain("Neuron 4");
    model.set(data({ shown_neuron: 7 }));
    el.querySelector(".nv-next").click();
    expect(model.get("neuron")).toBe(0);
    model.set(data({ shown_neuron: 0 }));
    el.querySelector(".nv-prev").click();
    expect(model.get("neuron")).toBe(7);
    // go-to clamps to the layer's neurons and keeps scanned layers only
    const input = el.querySelector(".nv-neuron");
    input.value = "99";
    el.querySelector(".nv-go").click();
    expect(model.get("neuron")).toBe(7);
    el.querySelector(".nv-layer").value = "2";
    input.value = "5";
    el.querySelector(".nv-go").click();
    expect(model.get("layer")).toBe(2);
    expect(model.get("neuron")).toBe(5);
    el.querySelector(".nv-random").click();
    expect([0, 1, 2]).toContain(model.get("layer"));
    expect(model.get("neuron")).toBeGreaterThanOrEqual(0);
    expect(model.get("neuron")).toBeLessThan(8);
  });

  it("asks Python for the examples, colours tokens, selects positions, switches channel", async () => {
    const { el, model, sel } = await setup();
    const call = commandCalls(model)[0];
    expect(call).toMatchObject({ name: "examples", msg: { layer: 1, neuron: 3 } });
    expect(el.querySelectorAll(".nv-loading").length).toBe(3);
    model.receive(...examplesReply(call.id));
    await tick();
    const tops = el.querySelectorAll(".nv-top .nv-example");
    expect(tops.length).toBe(2);
    const toks = tops[0].querySelectorAll(".mri-tok");
    expect(toks.length).toBe(3);
    expect(toks[1].textContent).toBe("<img src=x onerror=alert(1)>");
    expect(el.querySelector("img")).toBe(null);
    expect(toks[1].classList.contains("nv-peak")).toBe(true);
    // the peak (2 = scale) is full red, -1 half blue: one shared scale
    expect(toks[1].style.background).toBe("rgb(178, 24, 43)");
    const bottomTok = el.querySelectorAll(".nv-bottom .mri-tok")[2];
    expect(bottomTok.style.background).not.toBe("rgb(33, 102, 172)");
    const before0 = toks[0].style.background;
    expect(before0).not.toBe("rgb(178, 24, 43)");
    toks[2].click();
    expect(sel.get("position")).toBe(2);
    expect(sel.get("neuron")).toBe(3);
    expect(sel.get("layer")).toBe(1);
    expect(toks[2].classList.contains("mri-selected")).toBe(true);
    expect(toks[0].classList.contains("mri-selected")).toBe(false);
    sel.set("position", 0); // another view moves the position: the highlight goes
    expect(toks[2].classList.contains("mri-selected")).toBe(false);
    // channel switch: buttons set the trait; the gate channel has its own scale (max |gate| = 20)
    el.querySelector('.nv-channel[data-channel="gate"]').click();
    expect(model.get("channel")).toBe("gate");
    const gateToks = el.querySelectorAll(".nv-top .nv-example")[0].querySelectorAll(".mri-tok");
    expect(gateToks[1].style.background).toBe("rgb(178, 24, 43)");
    expect(gateToks[0].style.background).toBe(before0); // 5 / 20 on the gate scale == 0.5 / 2
    expect(el.querySelector(".nv-legend").textContent).toContain("20");
    expect(commandCalls(model).length).toBe(1); // served from the cache
  });

  it("windows long texts around the extreme token and expands them", async () => {
    const { el, model } = await setup({ window: [1, 0] });
    const call = commandCalls(model)[0];
    model.receive(...examplesReply(call.id));
    await tick();
    let first = el.querySelector(".nv-top .nv-example");
    expect(first.querySelectorAll(".mri-tok").length).toBe(2); // tokens 0..1 (peak at 1)
    first.querySelector(".nv-expand").click();
    first = el.querySelector(".nv-top .nv-example");
    expect(first.querySelectorAll(".mri-tok").length).toBe(3);
  });

  it("reports errors of calls to Python and missing texts", async () => {
    const { el, model } = await setup();
    const call = commandCalls(model)[0];
    model.receive(...commandReply(call.id, { error: "ValueError: boom" }));
    await tick();
    expect(el.querySelector(".nv-examples").textContent).toContain("boom");
    const m2 = await setup({ has_texts: false, note: "pass texts=" });
    expect(commandCalls(m2.model).length).toBe(0);
    expect(m2.el.textContent).toContain("pass texts=");
  });
});
