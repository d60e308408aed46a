import { describe, it, expect } from "vitest";
import { StaticManager, StaticModel, boot, fromBase64, OFFLINE, bakedAnswer, gridRow, offlineExperimental } from "../src/share/host.js";
import { connectSelection } from "../src/lib/selection.js";
import { invoke } from "../src/lib/invoke.js";

const b64 = (typed) => btoa(String.fromCharCode(...new Uint8Array(typed.buffer)));

function saved() {
  return {
    models: {
      s: { state: { layer: null, position: null }, buffers: [] },
      a: { state: { selection: "IPY_MODEL_s", _sel: {}, values: { dtype: "float32", shape: [3] } },
        buffers: [{ path: ["values", "view"], data: b64(Float32Array.from([1.5, -2, 3])) }] },
      b: { state: { selection: "IPY_MODEL_s", _sel: {} }, buffers: [] },
    },
    views: [{ id: "a", view: "v", title: "A" }, { id: "b", view: "v", title: "B" }],
    esm: { v: "unused" },
  };
}

// cell_details of a 2 x 3 grid baked as save_html writes it (share.baked_rows): row r = layer * 3 + pos
const PROBS = Float32Array.from({ length: 12 }, (_, i) => i / 100); // (6 cells, k = 2)
const INDEX = Uint16Array.from({ length: 12 }, (_, i) => (i * 5) % 4); // into STRINGS
const STRINGS = [" a", "<b>", "\n", " d"];
function bakedModel() {
  return {
    state: { selection: "IPY_MODEL_s", _sel: {} },
    buffers: [],
    commands: {
      cell_details: {
        spec: { arg: "cells", grid: [2, 3], echo: "cells", result: {
          version: 7, note: "top-1 only", clean_prob: null,
          probs: { dtype: "float32", shape: [6, 2] },
          tokens: { mri_strings: STRINGS, index: { dtype: "uint16", shape: [6, 2] } },
        } },
        buffers: [{ path: ["result", "probs", "view"], data: b64(PROBS) },
          { path: ["result", "tokens", "index", "view"], data: b64(INDEX) }],
      },
    },
  };
}

describe("answers baked into the page", () => {
  it("maps a cell to its row-major row, -1 outside the grid", () => {
    expect(gridRow([2, 3], [1, 2])).toBe(5);
    expect(gridRow([2, 3], [0, 0])).toBe(0);
    expect([[2, 0], [0, 3], [0], [0, 1.5], [-1, 0], "a"].map((c) => gridRow([2, 3], c))).toEqual([-1, -1, -1, -1, -1, -1]);
  });

  it("answers a command from the rows of the cells asked for, through invoke (both paths)", async () => {
    const mgr = new StaticManager({ models: { s: { state: {}, buffers: [] }, a: bakedModel() } });
    const m = await mgr.get_model("a");
    const cells = [[1, 2], [0, 0], [1, 2]];
    for (const experimental of [offlineExperimental(m), undefined]) {
      const r = await invoke(m, experimental, "cell_details", { cells, version: 7 });
      expect(r.cells).toEqual(cells);
      expect(r.version).toBe(7);
      expect(r.note).toBe("top-1 only");
      expect(r.clean_prob).toBe(null);
      expect(r.probs.shape).toEqual([3, 2]);
      expect(Array.from(r.probs.data)).toEqual([10, 11, 0, 1, 10, 11].map((i) => PROBS[i]));
      expect(r.tokens).toEqual([[STRINGS[INDEX[10]], STRINGS[INDEX[11]]], [STRINGS[INDEX[0]], STRINGS[INDEX[1]]],
        [STRINGS[INDEX[10]], STRINGS[INDEX[11]]]]);
    }
    // a cell outside the saved table, another command: an error that says why
    await expect(invoke(m, offlineExperimental(m), "cell_details", { cells: [[2, 0]] })).rejects.toThrow("no answer for [2,0]");
    await expect(invoke(m, offlineExperimental(m), "region_members", { layer: 0 })).rejects.toThrow(OFFLINE);
    await expect(invoke(m, undefined, "_mri_chunk", {})).rejects.toThrow(OFFLINE);
  });

  it("gives a baked answer without a grid whole, and null for commands nothing was baked for", () => {
    expect(bakedAnswer({ f: { result: { x: 1 } } }, "f", { any: 2 })).toEqual({ x: 1 });
    expect(bakedAnswer({ f: { result: { x: 1 } } }, "g", {})).toBe(null);
    expect(bakedAnswer(undefined, "g", {})).toBe(null);
  });
});

describe("the saved page's host", () => {
  it("puts base64 buffers back as DataViews at their paths", async () => {
    const m = await new StaticManager(saved()).get_model("a");
    const v = m.get("values").view;
    expect(v).toBeInstanceOf(DataView);
    expect(Array.from(new Float32Array(v.buffer, v.byteOffset, 3))).toEqual([1.5, -2, 3]);
    expect(new Uint8Array(fromBase64("AAEC").buffer)).toEqual(Uint8Array.from([0, 1, 2]));
  });

  it("fires change:<key> then one change, only for values that changed", () => {
    const m = new StaticModel("x", { a: 1, b: [1, 2] }, null);
    const seen = [];
    m.on("change:a", (_m, v) => seen.push(`a=${v}`));
    m.on("change:b", () => seen.push("b"));
    m.on("change", () => seen.push("change"));
    m.set({ a: 2, b: [1, 2] });
    m.set("a", 2);
    expect(seen).toEqual(["a=2", "change"]);
  });

  it("links views: a selection set in one reaches the other through the page's selection model", async () => {
    const mgr = new StaticManager(saved());
    const a = await mgr.get_model("a");
    const b = await mgr.get_model("b");
    const got = [];
    const sa = await connectSelection(a, () => {});
    const sb = await connectSelection(b, (s) => got.push(s));
    expect(sa.direct && sb.direct).toBe(true);
    sa.set({ layer: 3, region: 7 });
    expect(got.at(-1)).toMatchObject({ layer: 3, region: 7 });
    expect((await mgr.get_model("s")).get("layer")).toBe(3);
  });

  it("answers calls to Python with a note instead of waiting", async () => {
    const m = await new StaticManager(saved()).get_model("a");
    await expect(invoke(m, undefined, "_mri_chunk", { token: "t", index: 0 })).rejects.toThrow(OFFLINE);
  });

  it("renders each view with its model, one module load per kind", async () => {
    const host = document.createElement("div");
    let loads = 0;
    const rendered = [];
    const mod = { default: { render: ({ model, el }) => { rendered.push(model.model_id); el.textContent = "ok"; } } };
    await boot(saved(), host, () => { loads += 1; return Promise.resolve(mod); });
    expect(loads).toBe(1);
    expect(rendered).toEqual(["a", "b"]);
    expect([...host.querySelectorAll(".mri-share-title")].map((e) => e.textContent)).toEqual(["A", "B"]);
  });
});
