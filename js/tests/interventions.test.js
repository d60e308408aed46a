import { describe, it, expect } from "vitest";
import interventions from "../src/views/interventions.js";
import headMap from "../src/views/head_map.js";
import graphView, { comparisonPanel, targetOf } from "../src/views/graph_view.js";
import { ablateBar, isActive, targetName } from "../src/lib/ablate.js";
import { MockModel, enc, mount, commandCalls, commandReply } from "./mock_model.js";

const tick = () => new Promise((r) => setTimeout(r, 0));

const ENTRIES = [
  { id: 3, label: "ablate head L2.H1 (zero)", kind: "ablate", enabled: true, target: ["head", 2, 1], mode: "zero" },
  { id: 5, label: "<img src=x onerror=alert(1)>", kind: "steer", enabled: false, target: null, mode: null },
];

async function setupList(entries) {
  const model = new MockModel({ entries, version: 1, has_corpus: false });
  const { el } = await mount(interventions, model);
  return { model, el };
}

describe("Interventions view", () => {
  it("says what to do when there is nothing", async () => {
    const { el } = await setupList([]);
    expect(el.querySelector(".mri-iv-empty").textContent).toMatch(/No interventions/);
    expect(el.querySelectorAll(".mri-iv-entry").length).toBe(0);
    expect(el.querySelector(".mri-iv-clear")).toBe(null);
  });

  it("lists entries as text with their state, toggles and removes by id", async () => {
    const { model, el } = await setupList(ENTRIES);
    const rows = el.querySelectorAll(".mri-iv-entry");
    expect(rows.length).toBe(2);
    expect(rows[0].querySelector(".mri-iv-label").textContent).toBe("ablate head L2.H1 (zero)");
    expect(rows[1].querySelector(".mri-iv-label").textContent).toBe("<img src=x onerror=alert(1)>");
    expect(el.querySelector("img")).toBe(null);
    const boxes = el.querySelectorAll("input.mri-iv-toggle");
    expect([boxes[0].checked, boxes[1].checked]).toEqual([true, false]);
    expect(rows[1].classList.contains("mri-iv-off")).toBe(true);
    expect(el.querySelector(".mri-iv-summary").textContent).toBe("1 of 2 active");
    boxes[0].checked = false;
    boxes[0].dispatchEvent(new Event("change"));
    expect(commandCalls(model).at(-1)).toMatchObject({ name: "toggle_entry", msg: { id: 3, enabled: false } });
    rows[1].querySelector(".mri-iv-remove").click();
    expect(commandCalls(model).at(-1)).toMatchObject({ name: "remove_entry", msg: { id: 5 } });
    el.querySelector(".mri-iv-clear").click();
    expect(commandCalls(model).at(-1)).toMatchObject({ name: "clear_entries" });
    // an error from Python is shown
    const last = commandCalls(model).at(-1);
    model.receive(...commandReply(last.id, { error: "IndexError: no intervention with id 5" }));
    await tick();
    expect(el.querySelector(".mri-iv-status").textContent).toMatch(/no intervention with id 5/);
    // Python's new entries redraw the list
    model.set("entries", [{ ...ENTRIES[0], enabled: false }]);
    expect(el.querySelectorAll(".mri-iv-entry").length).toBe(1);
    expect(el.querySelector("input.mri-iv-toggle").checked).toBe(false);
  });
});

describe("ablate buttons", () => {
  it("name targets and find active ablations", () => {
    expect(targetName({ kind: "head", layer: 2, index: 1 })).toBe("head L2.H1");
    expect(targetName({ kind: "neuron", layer: 0, index: 7 })).toBe("neuron L0.N7");
    const ab = { active: [["head", 2, 1, "zero"]] };
    expect(isActive(ab, { kind: "head", layer: 2, index: 1 }, "zero")).toBe(true);
    expect(isActive(ab, { kind: "head", layer: 2, index: 1 }, "mean")).toBe(false);
    expect(targetOf({ layer: 1, head: 2 })).toEqual({ kind: "head", layer: 1, index: 2 });
    expect(targetOf({ layer: 1, neuron: 9 })).toEqual({ kind: "neuron", layer: 1, index: 9 });
    expect(targetOf({ layer: 1 })).toBe(null);
  });

  it("are hidden without interventions or a target; mean is disabled without a corpus", () => {
    const model = new MockModel({ ablation: {} });
    let target = { kind: "head", layer: 1, index: 0 };
    const bar = ablateBar({ model, invoke: async () => ({}) }, () => target);
    expect(bar.el.style.display).toBe("none");
    model.set("ablation", { mean: false, mean_note: "needs a corpus", active: [] });
    bar.update();
    expect(bar.el.style.display).toBe("");
    const mean = bar.el.querySelector(".mri-ablate-mean");
    expect(mean.disabled).toBe(true);
    expect(mean.title).toBe("needs a corpus");
    target = null;
    bar.update();
    expect(bar.el.style.display).toBe("none");
  });

  it("in the HeadMap: the selected head is ablated through Python", async () => {
    const sel = new MockModel({ layer: null, head: null, position: null });
    const model = new MockModel({
      selection: "IPY_MODEL_s", x: enc(new Float32Array([0, 1])), y: enc(new Float32Array([0, 1])),
      layer: enc(new Int32Array([0, 0])), head: enc(new Int32Array([0, 1])),
      scores: { entropy: enc(new Float32Array([0, 0])), previous: enc(new Float32Array([0, 0])),
        first: enc(new Float32Array([0, 0])), self: enc(new Float32Array([0, 0])) },
      score_names: ["entropy", "previous", "first", "self"], score_help: ["", "", "", ""],
      n_layers: 1, n_heads: 2, n_examples: 1, examples: ["a"], model_name: "m",
      picked: [], example: 0, color_by: "layer", ablation: { mean: true, mean_note: "", active: [] },
    }, { models: { s: sel } });
    const { el } = await mount(headMap, model);
    const bar = el.querySelector(".mri-ablate");
    expect(bar.style.display).toBe("none"); // no head selected
    sel.set({ layer: 0, head: 1 });
    expect(bar.style.display).toBe("");
    expect(bar.querySelector(".mri-ablate-target").textContent).toBe("head L0.H1:");
    bar.querySelector(".mri-ablate-zero").click();
    expect(commandCalls(model).at(-1)).toMatchObject({ name: "ablate", msg: { kind: "head", layer: 0, index: 1, mode: "zero" } });
    model.set("ablation", { mean: true, mean_note: "", active: [["head", 0, 1, "zero"]] });
    expect(bar.querySelector(".mri-ablate-zero").classList.contains("mri-on")).toBe(true);
    expect(bar.querySelector(".mri-ablate-mean").classList.contains("mri-on")).toBe(false);
  });
});

describe("FlowGraph comparison", () => {
  const cmp = {
    position: 4, token: " is", target: " Paris", target_id: 9, interventions: ["ablate head L2.H1 (zero)"],
    clean: { prob: 0.5, rank: 1, prediction: " Paris", prediction_id: 9, prediction_prob: 0.5 },
    intervened: { prob: 0.125, rank: 3, prediction: " London", prediction_id: 8, prediction_prob: 0.25 },
  };

  it("shows the target's probability and rank before and after, with the change", () => {
    const el = comparisonPanel(cmp);
    const val = (run, field) => el.querySelector(`[data-run='${run}'][data-field='${field}']`);
    expect(val("clean", "prob").textContent).toBe("50.00%");
    expect(Number(val("intervened", "prob").dataset.value)).toBe(0.125);
    expect(val("clean", "rank").textContent).toBe("1");
    expect(val("intervened", "rank").textContent).toBe("3");
    expect(val("intervened", "prediction").textContent).toBe("' London' 25.00%");
    const deltas = el.querySelectorAll(".mri-cmp-delta");
    expect(deltas[0].textContent).toBe("\u221237.50%");
    expect(deltas[0].classList.contains("mri-cmp-down")).toBe(true);
    expect(deltas[1].textContent).toBe("+2");
    expect(el.querySelector(".mri-cmp-under").textContent).toBe("under: ablate head L2.H1 (zero)");
    expect(comparisonPanel({})).toBe(null);
  });

  it("appears in the graph view when Python sends one, and a clicked head node can be ablated", async () => {
    const sel = new MockModel({ layer: null, region: null, position: null, neuron: null, head: null, label: null });
    const model = new MockModel({
      selection: "IPY_MODEL_s", x: enc(new Float32Array([0, 100])), y: enc(new Float32Array([0, 0])),
      size: enc(new Float32Array([10, 10])), color: enc(new Uint8Array(6), [2, 3]), label: ["a", "b"],
      node_tooltip: null, shape: null, parts: null, select_keys: ["layer", "head"],
      select: enc(new Int32Array([1, 2, 1, 3]), [2, 2]), groups: [], parent: null,
      edge_source: enc(new Int32Array([0])), edge_target: enc(new Int32Array([1])), edge_weight: enc(new Float32Array([1])),
      edge_color: enc(new Uint8Array(3), [1, 3]), edge_width: null, edge_parts: null, edge_tooltip: null,
      part_names: [], part_colors: [], annotations: [], title: "flow", directed: true, weight_name: "w", height: 300,
      details_command: null, min_weight: 0, top_k: 0, highlight: {}, comparison: {}, ablation: { mean: false, mean_note: "no corpus", active: [] },
    }, { models: { s: sel } });
    const { el } = await mount(graphView, model);
    await tick();
    expect(el.querySelector(".mri-compare")).toBe(null);
    model.set("comparison", cmp);
    expect(el.querySelector(".mri-compare [data-run='intervened'][data-field='rank']").textContent).toBe("3");
    const bar = el.querySelector(".mri-ablate");
    expect(bar.style.display).toBe("none");
    sel.set({ layer: 1, head: 3 });
    expect(bar.style.display).toBe("");
    sel.set({ neuron: 5 }); // a neuron picked later is the target
    expect(bar.querySelector(".mri-ablate-target").textContent).toBe("neuron L1.N5:");
    bar.querySelector(".mri-ablate-zero").click();
    expect(commandCalls(model).at(-1)).toMatchObject({ name: "ablate", msg: { kind: "neuron", layer: 1, index: 5, mode: "zero" } });
    expect(bar.querySelector(".mri-ablate-mean").disabled).toBe(true);
  });
});
