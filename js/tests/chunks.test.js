import { describe, it, expect } from "vitest";
import { isChunked, joinChunks, unpackValue, fetchChunked, joinedValue } from "../src/lib/chunks.js";
import { decodeTree } from "../src/lib/codec.js";
import { drawnHighlight, budgetText, nextBudget } from "../src/lib/graph.js";

// the layout of transport.pack_value, written by hand
function pack(value, buffers, paths) {
  const head = new TextEncoder().encode(JSON.stringify({ value, buffer_paths: paths, sizes: buffers.map((b) => b.byteLength) }));
  const pad = (k) => (8 - (k % 8)) % 8;
  let size = 4 + head.length + pad(4 + head.length);
  for (const b of buffers) size += b.byteLength + pad(b.byteLength);
  const out = new Uint8Array(size);
  new DataView(out.buffer).setUint32(0, head.length, true);
  out.set(head, 4);
  let off = 4 + head.length + pad(4 + head.length);
  for (const b of buffers) { out.set(new Uint8Array(b.buffer, b.byteOffset, b.byteLength), off); off += b.byteLength + pad(b.byteLength); }
  return out;
}

describe("traits sent in pieces", () => {
  const a = Float32Array.from([1.5, -2, 3, 4, 5]);
  const b = Int16Array.from([7, 8, 9]);
  const blob = pack({ a: { dtype: "float32", shape: [5] }, s: ["x", { b: { dtype: "int16", shape: [3] } }] },
    [a, b], [["a", "view"], ["s", 1, "b", "view"]]);

  it("joins pieces in order and checks the announced size", () => {
    const pieces = [blob.subarray(0, 7), blob.subarray(7, 40), blob.subarray(40)];
    expect(new Uint8Array(joinChunks(pieces, blob.length))).toEqual(blob);
    expect(() => joinChunks(pieces, blob.length + 1)).toThrow(/announced/);
    expect(() => joinChunks(pieces, blob.length - 1)).toThrow(/more than/);
  });

  it("unpacks arrays and JSON as if they had come in the state", () => {
    const v = decodeTree(unpackValue(joinChunks([blob], blob.length)));
    expect(Array.from(v.a.data)).toEqual([1.5, -2, 3, 4, 5]);
    expect(Array.from(v.s[1].b.data)).toEqual([7, 8, 9]);
    expect(v.s[0]).toBe("x");
  });

  it("fetches each piece once per model and token, whatever order they arrive in", async () => {
    const model = {};
    const size = 16;
    const n = Math.ceil(blob.length / size);
    const ph = { mri_chunked: "a-123", nbytes: blob.length, n_chunks: n };
    expect(isChunked(ph)).toBe(true);
    expect(isChunked({ dtype: "float32", shape: [1] })).toBe(false);
    const calls = [];
    const call = (name, { token, index }) => {
      calls.push([name, token, index]);
      const piece = blob.slice(index * size, (index + 1) * size);
      return new Promise((r) => setTimeout(() => r({ data: { data: piece } }), (n - index) * 2)); // last first
    };
    const [v1, v2] = await Promise.all([fetchChunked(model, ph, call), fetchChunked(model, ph, call)]);
    expect(v1).toBe(v2);
    expect(calls.length).toBe(n);
    expect(calls.every(([name, token]) => name === "_mri_chunk" && token === "a-123")).toBe(true);
    expect(Array.from(decodeTree(joinedValue(model, ph)).a.data)).toEqual([1.5, -2, 3, 4, 5]);
    // a newer token of the same trait replaces the old one
    const ph2 = { ...ph, mri_chunked: "a-456" };
    await fetchChunked(model, ph2, call);
    expect(joinedValue(model, ph)).toBeUndefined();
    expect(joinedValue(model, ph2)).toBeDefined();
  });

  it("a failed piece fails the trait and lets it be fetched again", async () => {
    const model = {};
    const ph = { mri_chunked: "b-1", nbytes: blob.length, n_chunks: 1 };
    await expect(fetchChunked(model, ph, () => Promise.reject(new Error("gone")))).rejects.toThrow("gone");
    const v = await fetchChunked(model, ph, () => Promise.resolve({ data: { data: blob } }));
    expect(v.s[0]).toBe("x");
  });
});

describe("edge budget", () => {
  const arr = (C, xs) => ({ data: C.from(xs), shape: [xs.length] });
  const data = {
    x: arr(Float32Array, [0, 1, 2]), edge_source: arr(Int32Array, [0, 1]),
    node_ids: arr(Int32Array, [4, 7, 9]), edge_ids: arr(Int32Array, [10, 3]),
    budget_info: { nodes: 12, edges: 20000 },
  };

  it("maps highlight indices of the whole graph to the drawn ones, weights kept aligned", () => {
    const hl = { nodes: arr(Int32Array, [9, 5, 4]), node_weight: arr(Float32Array, [1, 2, 3]),
      edges: arr(Int32Array, [3, 99]), edge_weight: arr(Float32Array, [6, 7]) };
    const d = drawnHighlight(hl, data);
    expect(Array.from(d.nodes.data)).toEqual([2, 0]);
    expect(Array.from(d.node_weight.data)).toEqual([1, 3]);
    expect(Array.from(d.edges.data)).toEqual([1]);
    expect(Array.from(d.edge_weight.data)).toEqual([6]);
    const all = { ...data, node_ids: null, edge_ids: null };
    expect(drawnHighlight(hl, all)).toBe(hl);
  });

  it("says how much is drawn and offers more", () => {
    expect(budgetText(data)).toBe("Showing the 2 heaviest of 20,000 edges (3 of 12 nodes).");
    expect(budgetText({ ...data, budget_info: {} })).toBeNull();
    expect(nextBudget(5000, 714048)).toBe(20000);
    expect(nextBudget(500000, 714048)).toBe(714048);
  });
});
