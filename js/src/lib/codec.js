// Binary array codec: the counterpart of mri_widgets/widgets/transport.py.
// An array arrives as {view: DataView, dtype, shape}; we turn it into {data: TypedArray, shape}.

const TYPED = {
  float32: Float32Array, float64: Float64Array, int8: Int8Array, uint8: Uint8Array,
  int16: Int16Array, uint16: Uint16Array, int32: Int32Array, uint32: Uint32Array,
};

/** True for an encoded array whose binary buffer is present. */
export function isEncoded(x) {
  return x != null && typeof x === "object" && typeof x.dtype === "string" && Array.isArray(x.shape)
    && x.view !== undefined;
}

/** True for an encoded array whose buffer was dropped (Colab drops buffers sent at comm_open). */
export function isMissing(x) {
  return x != null && typeof x === "object" && typeof x.dtype === "string" && Array.isArray(x.shape)
    && (x.view === undefined || x.view === null);
}

/** Decode one {view, dtype, shape} into {data, shape, dtype}. Copies when the offset is misaligned. */
export function decodeArray(x) {
  const Ctor = TYPED[x.dtype];
  if (!Ctor) throw new Error(`unsupported dtype ${x.dtype}`);
  const v = x.view;
  const buffer = v.buffer ?? v; // DataView / TypedArray / ArrayBuffer
  const offset = v.byteOffset ?? 0;
  const bytes = v.byteLength ?? buffer.byteLength;
  const n = bytes / Ctor.BYTES_PER_ELEMENT;
  let data;
  if (offset % Ctor.BYTES_PER_ELEMENT === 0) {
    data = new Ctor(buffer, offset, n);
  } else {
    data = new Ctor(buffer.slice(offset, offset + bytes));
  }
  const expected = x.shape.reduce((a, b) => a * b, 1);
  if (data.length !== expected) throw new Error(`array of shape [${x.shape}] has ${data.length} values`);
  return { data, shape: x.shape, dtype: x.dtype };
}

/** Decode every encoded array inside nested objects / arrays. Missing buffers become null. */
export function decodeTree(value) {
  if (isEncoded(value)) return decodeArray(value);
  if (isMissing(value)) return null;
  if (Array.isArray(value)) return value.map(decodeTree);
  if (value && typeof value === "object" && !(value instanceof DataView) && !ArrayBuffer.isView(value)) {
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = decodeTree(v);
    return out;
  }
  return value;
}

/** True when some encoded array inside `value` lost its buffer. */
export function hasMissing(value) {
  if (isMissing(value)) return true;
  if (isEncoded(value)) return false;
  if (Array.isArray(value)) return value.some(hasMissing);
  if (value && typeof value === "object" && !(value instanceof DataView) && !ArrayBuffer.isView(value)) {
    return Object.values(value).some(hasMissing);
  }
  return false;
}

/** Put binary buffers back at their paths (ipywidgets' buffer_paths convention). */
export function putBuffers(obj, paths, buffers) {
  (paths || []).forEach((path, i) => {
    let o = obj;
    for (let j = 0; j < path.length - 1; j++) o = o[path[j]];
    const b = buffers[i];
    o[path[path.length - 1]] = b instanceof DataView ? b : new DataView(b.buffer ?? b, b.byteOffset ?? 0, b.byteLength);
  });
  return obj;
}

/** Element (i, j, ...) of a decoded array. */
export function at(arr, ...idx) {
  let flat = 0;
  for (let d = 0; d < idx.length; d++) flat = flat * arr.shape[d] + idx[d];
  const rest = arr.shape.slice(idx.length).reduce((a, b) => a * b, 1);
  return rest === 1 ? arr.data[flat] : arr.data.subarray(flat * rest, (flat + 1) * rest);
}
