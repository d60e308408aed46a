// Traits that Python sent in pieces (mri_widgets/widgets/transport.py, offload_state): the state
// holds {mri_chunked: token, nbytes, n_chunks}; the view fetches each piece with the
// `_mri_chunk` command, joins them and unpacks the trait as if it had come in the state.
// Joined values are kept per model and token, so several views of one widget fetch once.
import { putBuffers } from "./codec.js";

/** True for the placeholder of a trait sent in pieces. */
export function isChunked(x) {
  return x != null && typeof x === "object" && typeof x.mri_chunked === "string"
    && Number.isInteger(x.n_chunks) && Number.isInteger(x.nbytes);
}

/** Join pieces (Uint8Array / DataView / ArrayBuffer) into one ArrayBuffer of `nbytes` bytes. */
export function joinChunks(pieces, nbytes) {
  const out = new Uint8Array(nbytes);
  let off = 0;
  for (const p of pieces) {
    const u8 = p instanceof Uint8Array ? p
      : new Uint8Array(p.buffer ?? p, p.byteOffset ?? 0, p.byteLength);
    if (off + u8.length > nbytes) throw new Error(`pieces hold more than the ${nbytes} bytes announced`);
    out.set(u8, off);
    off += u8.length;
  }
  if (off !== nbytes) throw new Error(`pieces hold ${off} bytes, ${nbytes} announced`);
  return out.buffer;
}

/** Inverse of transport.pack_value: the trait value with DataViews at its buffer paths. */
export function unpackValue(buffer) {
  const dv = new DataView(buffer);
  const n = dv.getUint32(0, true);
  const head = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, n)));
  const pad = (k) => (8 - (k % 8)) % 8;
  let off = 4 + n + pad(4 + n);
  const bufs = head.sizes.map((size) => {
    const v = new DataView(buffer, off, size);
    off += size + pad(size);
    return v;
  });
  const holder = { v: head.value };
  putBuffers(holder, head.buffer_paths.map((p) => ["v", ...p]), bufs);
  return holder.v;
}

const cache = new WeakMap(); // model -> Map(token -> {promise, value, error, done})

const traitOf = (token) => token.slice(0, token.lastIndexOf("-"));

/**
 * Fetch a chunked trait's pieces with `call("_mri_chunk", {token, index})` (each resolving to
 * {data: Uint8Array-like}), once per model and token; resolves with the unpacked trait value
 * (arrays as {view: DataView, dtype, shape}, ready for decodeTree).
 */
export function fetchChunked(model, placeholder, call, onProgress) {
  let m = cache.get(model);
  if (!m) { m = new Map(); cache.set(model, m); }
  const { mri_chunked: token, n_chunks: n, nbytes } = placeholder;
  if (!m.has(token)) {
    const entry = { done: false, value: undefined, error: null, promise: null };
    let got = 0;
    entry.promise = Promise.all(Array.from({ length: n }, (_, index) => call("_mri_chunk", { token, index })
      .then((r) => {
        got += 1;
        if (onProgress) onProgress(got, n);
        const d = r.data;
        return d && d.data !== undefined ? d.data : d;
      })))
      .then((pieces) => {
        entry.value = unpackValue(joinChunks(pieces, nbytes));
        entry.done = true;
        return entry.value;
      }, (e) => {
        entry.error = e;
        m.delete(token);
        throw e;
      });
    m.set(token, entry);
    for (const k of [...m.keys()]) if (k !== token && traitOf(k) === traitOf(token)) m.delete(k);
  }
  return m.get(token).promise;
}

/** The joined value of a chunked trait if it has arrived, else undefined. */
export function joinedValue(model, placeholder) {
  const m = cache.get(model);
  const e = m?.get(placeholder.mri_chunked);
  return e?.done ? e.value : undefined;
}
