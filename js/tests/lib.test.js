import { describe, it, expect } from "vitest";
import { decodeArray, decodeTree, hasMissing, putBuffers, at } from "../src/lib/codec.js";
import { connectSelection } from "../src/lib/selection.js";
import { invoke } from "../src/lib/invoke.js";
import { h } from "../src/lib/dom.js";
import tokenHeat from "../src/views/token_heat.js";
import { MockModel, enc, mount } from "./mock_model.js";

describe("codec", () => {
  it("decodes typed arrays with shape and indexes them", () => {
    const a = decodeArray(enc(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3]));
    expect(Array.from(a.data)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(at(a, 1, 2)).toBe(6);
    expect(Array.from(at(a, 1))).toEqual([4, 5, 6]);
  });
  it("copies misaligned buffers", () => {
    const raw = new Uint8Array(9);
    new Float32Array(raw.buffer.slice(0, 8)).forEach(() => {});
    const f = new Float32Array([1.5, -2]);
    raw.set(new Uint8Array(f.buffer), 1);
    const a = decodeArray({ view: new DataView(raw.buffer, 1, 8), dtype: "float32", shape: [2] });
    expect(Array.from(a.data)).toEqual([1.5, -2]);
  });
  it("rejects a shape that does not match", () => {
    expect(() => decodeArray(enc(new Float32Array(3), [2, 2]))).toThrow(/shape/);
  });
  it("detects buffers dropped by Colab", () => {
    const tree = { a: { dtype: "float32", shape: [2] }, b: [1, 2] };
    expect(hasMissing(tree)).toBe(true);
    expect(decodeTree(tree).a).toBe(null);
    expect(hasMissing({ a: enc(new Float32Array(2)) })).toBe(false);
  });
  it("puts buffers back at their paths", () => {
    const obj = putBuffers({ result: { y: { dtype: "float32", shape: [1] } } }, [["result", "y", "view"]], [new Float32Array([7]).buffer]);
    expect(decodeTree(obj.result).y.data[0]).toBe(7);
  });
});

describe("selection", () => {
  it("sets the shared Selection model directly when reachable", async () => {
    const sel = new MockModel({ layer: null, position: null });
    const view = new MockModel({ selection: "IPY_MODEL_abc" }, { models: { abc: sel } });
    const seen = [];
    const s = await connectSelection(view, (x) => seen.push(x));
    expect(s.direct).toBe(true);
    s.set({ layer: 3, bogus: 1 });
    expect(sel.get("layer")).toBe(3);
    expect(sel.get("bogus")).toBe(undefined);
    sel.set("position", 5);
    expect(seen.at(-1).position).toBe(5);
  });
  it("falls back to the view's mirror when the Selection cannot be reached (Colab)", async () => {
    const view = new MockModel({ selection: "IPY_MODEL_missing" });
    const seen = [];
    const s = await connectSelection(view, (x) => seen.push(x));
    expect(s.direct).toBe(false);
    s.set({ neuron: 7 });
    expect(view.get("_sel").neuron).toBe(7);
    expect(view.saved).toBe(1);
    view.set("_sel", { neuron: 7, layer: 2 });
    expect(seen.at(-1)).toMatchObject({ neuron: 7, layer: 2 });
  });
});

describe("invoke", () => {
  const reply = (id, response, buffers = []) => [{ id, kind: "anywidget-command-response", response }, buffers];
  it("speaks anywidget's command protocol without experimental.invoke, and rejects errors", async () => {
    const m = new MockModel();
    const p = invoke(m, undefined, "double", { x: 1 });
    const msg = m.sent[0];
    expect(msg).toMatchObject({ kind: "anywidget-command", name: "double", msg: { x: 1 } });
    m.receive({ id: "other", kind: "anywidget-command-response", response: { result: 0 } });
    m.receive(...reply(msg.id, { result: { y: { dtype: "float32", shape: [1] } }, buffer_paths: [["result", "y", "view"]] },
      [new DataView(new Float32Array([2]).buffer)]));
    expect((await p).y.data[0]).toBe(2);
    const q = invoke(m, undefined, "boom");
    m.receive(...reply(m.sent[1].id, { error: "ValueError: nope" }));
    await expect(q).rejects.toThrow(/nope/);
    const r = invoke(m, undefined, "slow", {}, { timeout: 20 });
    await expect(r).rejects.toThrow(/slow timed out/);
  });
  it("uses anywidget's experimental.invoke when the front end provides it, with a long timeout", async () => {
    const m = new MockModel();
    const seen = [];
    const experimental = {
      invoke: async (name, msg, opts) => {
        seen.push({ name, msg, aborted: opts.signal.aborted });
        return [{ result: { z: { dtype: "int32", shape: [2] } }, buffer_paths: [["result", "z", "view"]] },
          [new DataView(new Int32Array([4, 5]).buffer)]];
      },
    };
    const out = await invoke(m, experimental, "pattern", { layer: 1 });
    expect(Array.from(out.z.data)).toEqual([4, 5]);
    expect(seen).toEqual([{ name: "pattern", msg: { layer: 1 }, aborted: false }]);
    expect(m.sent).toEqual([]); // nothing went through the fallback
  });
  it("hands the view's ctx.invoke the front end's experimental.invoke", async () => {
    const { defineView } = await import("../src/lib/widget.js");
    let ctx;
    const mod = defineView({ name: "t", traits: ["a"], draw: (c) => { ctx = c; } });
    const model = new MockModel({ a: 1 });
    const calls = [];
    const el = document.createElement("div");
    await mod.render({ model, el, experimental: { invoke: async (n, _m) => { calls.push(n); return [{ result: 7 }, []]; } } });
    expect(await ctx.invoke("f", {})).toBe(7);
    expect(calls).toEqual(["f"]);
  });
  it("draws once per message, whatever the number of its traits, and not for other traits", async () => {
    const { defineView } = await import("../src/lib/widget.js");
    let draws = 0;
    const mod = defineView({ name: "t", traits: ["a", "b", "c"], params: ["p"], draw: () => { draws++; } });
    const model = new MockModel({ a: 1, b: 2, c: 3, p: 0 });
    await mod.render({ model, el: document.createElement("div") });
    expect(draws).toBe(1);
    model.set({ a: 5, b: 6, c: 7 });
    expect(draws).toBe(2);
    model.set({ p: 1 });
    expect(draws).toBe(2);
  });
});

describe("dom", () => {
  it("never parses text as HTML", () => {
    const el = h("div", {}, "<img src=x onerror=alert(1)>");
    expect(el.querySelector("img")).toBe(null);
    expect(el.textContent).toBe("<img src=x onerror=alert(1)>");
  });
});

describe("TokenHeat view", () => {
  it("renders tokens as text and selects a position on click", async () => {
    const sel = new MockModel({ position: null });
    const model = new MockModel({
      selection: "IPY_MODEL_s",
      tokens: ["<b>x</b>", " y"], values: enc(new Float32Array([1, -1])), title: "t", value_name: "v",
    }, { models: { s: sel } });
    const { el } = await mount(tokenHeat, model);
    const toks = el.querySelectorAll(".mri-tok");
    expect(toks.length).toBe(2);
    expect(el.querySelector("b")).toBe(null);
    expect(toks[0].textContent).toBe("<b>x</b>");
    toks[1].click();
    expect(sel.get("position")).toBe(1);
    expect(toks[1].classList.contains("mri-selected")).toBe(true);
  });
  it("asks Python for the arrays when Colab dropped them", async () => {
    const model = new MockModel({ tokens: ["a"], values: { dtype: "float32", shape: [1] }, title: "", value_name: "v" });
    const { el } = await mount(tokenHeat, model);
    expect(model.sent).toEqual([{ type: "request_state", keys: ["values"] }]); // only the trait that lost its buffer
    expect(el.textContent).toMatch(/Loading/);
    model.set({ values: enc(new Float32Array([0.5])) });
    expect(el.querySelectorAll(".mri-tok").length).toBe(1);
  });
  it("redraws once for several traits changed by one message", async () => {
    const model = new MockModel({ tokens: ["a"], values: enc(new Float32Array([1])), title: "", value_name: "v" });
    const { el } = await mount(tokenHeat, model);
    const first = el.querySelector(".mri-tok");
    model.set({ tokens: ["a", "b"], values: enc(new Float32Array([1, 2])), title: "new" });
    expect(el.querySelectorAll(".mri-tok").length).toBe(2);
    expect(el.querySelector(".mri-title").textContent).toBe("new");
    expect(first.isConnected).toBe(false);
    model.set("title", "newer"); // another message: another redraw
    expect(el.querySelector(".mri-title").textContent).toBe("newer");
  });
});
