// A stand-in for an anywidget model, for unit tests of views without a notebook.
export class MockModel {
  constructor(state = {}, { models = {} } = {}) {
    this.state = { _sel: {}, error: "", ...state };
    this.handlers = {};
    this.sent = [];
    this.saved = 0;
    this.widget_manager = { get_model: async (id) => { if (!models[id]) throw new Error("no model"); return models[id]; } };
  }
  get(k) { return this.state[k]; }
  /** Like Backbone: change:<key> for each changed key, then one "change" per call. */
  set(k, v) {
    const patch = typeof k === "object" ? k : { [k]: v };
    let changed = false;
    for (const [a, b] of Object.entries(patch)) {
      const old = this.state[a];
      this.state[a] = b;
      if (old !== b) { changed = true; this.emit(`change:${a}`); }
    }
    if (changed) this.emit("change");
  }
  save_changes() { this.saved++; }
  on(ev, cb) {
    if (!this.handlers[ev]) this.handlers[ev] = [];
    this.handlers[ev].push(cb);
  }
  off(ev, cb) { this.handlers[ev] = (this.handlers[ev] || []).filter((f) => f !== cb); }
  emit(ev, ...args) { for (const cb of this.handlers[ev] || []) cb(...args); }
  send(msg, _cbs, _buffers) { this.sent.push(msg); }
  /** Simulate a custom message from Python. */
  receive(msg, buffers = []) { this.emit("msg:custom", msg, buffers); }
}

/** The calls a view made to Python (anywidget's invoke protocol). */
export function commandCalls(model) {
  return model.sent.filter((m) => m.kind === "anywidget-command");
}

/** Python's answer to a call: {result, buffer_paths} (arrays at those paths as buffers) or {error}. */
export function commandReply(id, response, buffers = []) {
  return [{ id, kind: "anywidget-command-response", response }, buffers];
}

/** Encode a typed array like mri_widgets.widgets.transport.encode_array. */
export function enc(typed, shape) {
  const dtype = { Float32Array: "float32", Int32Array: "int32", Uint8Array: "uint8", Float64Array: "float64" }[typed.constructor.name];
  return { view: new DataView(typed.buffer, typed.byteOffset, typed.byteLength), dtype, shape: shape || [typed.length] };
}

/** Render an anywidget module into a fresh element. */
export async function mount(mod, model) {
  const el = document.createElement("div");
  document.body.appendChild(el);
  const cleanup = await mod.render({ model, el });
  return { el, cleanup };
}
