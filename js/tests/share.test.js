import { describe, it, expect } from "vitest";
import { StaticManager, StaticModel, boot, fromBase64, OFFLINE } from "../src/share/host.js";
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
