// A static host for views saved with save_html (mri_widgets/widgets/share.py): the anywidget model
// interface (get / set / on / off / save_changes / send, widget_manager.get_model) over the state
// saved in the page, binary buffers base64 in the file. Linked views share one selection model in
// the page, so a click in one view moves the others. Nothing reaches Python: calls to it (commands,
// pieces of big traits, recomputing) answer with an error that says so, except the commands whose
// answers were baked into the page (mri_widgets/widgets/share.py, baked_rows): those answer from
// the saved data (e.g. the LensTable's cell_details, so its hover shows the top-k).
import { isEncoded, putBuffers } from "../lib/codec.js";

export const OFFLINE = "this is a saved page: it has no Python kernel to run this (open the notebook to use it)";

/** Decode base64 into a DataView. */
export function fromBase64(b64) {
  const s = atob(b64);
  const u8 = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) u8[i] = s.charCodeAt(i);
  return new DataView(u8.buffer);
}

function same(a, b) {
  if (a === b) return true;
  if (a == null || b == null || typeof a !== "object" || typeof b !== "object") return false;
  if (a instanceof DataView || b instanceof DataView || ArrayBuffer.isView(a) || ArrayBuffer.isView(b)) return false;
  try {
    return JSON.stringify(a) === JSON.stringify(b);
  } catch (_e) {
    return false;
  }
}

const BYTES = { float32: 4, float64: 8, int8: 1, uint8: 1, int16: 2, uint16: 2, int32: 4, uint32: 4 };

/** Row of a cell (a list of ints) in a row-major grid, or -1 when it is not a cell of the grid. */
export function gridRow(grid, cell) {
  if (!Array.isArray(cell) || cell.length !== grid.length) return -1;
  let row = 0;
  for (let d = 0; d < grid.length; d++) {
    const i = cell[d];
    if (!Number.isInteger(i) || i < 0 || i >= grid[d]) return -1;
    row = row * grid[d] + i;
  }
  return row;
}

/** The rows `rows` of a baked value with `n` rows: an encoded array, a string table, or (else) the value itself. */
function pickRows(value, rows, n) {
  if (isEncoded(value) && value.shape.length && value.shape[0] === n) {
    const per = value.shape.slice(1).reduce((a, b) => a * b, 1) * BYTES[value.dtype];
    const src = new Uint8Array(value.view.buffer, value.view.byteOffset, value.view.byteLength);
    const out = new Uint8Array(rows.length * per);
    rows.forEach((r, i) => out.set(src.subarray(r * per, (r + 1) * per), i * per));
    return { dtype: value.dtype, shape: [rows.length, ...value.shape.slice(1)], view: new DataView(out.buffer) };
  }
  if (value && typeof value === "object" && Array.isArray(value.mri_strings) && isEncoded(value.index)) {
    const picked = pickRows(value.index, rows, n);
    const Ctor = value.index.dtype === "uint16" ? Uint16Array : Int32Array;
    const idx = new Ctor(picked.view.buffer);
    const per = picked.shape.slice(1).reduce((a, b) => a * b, 1);
    return rows.map((_r, i) => Array.from(idx.subarray(i * per, (i + 1) * per), (j) => value.mri_strings[j]));
  }
  return value;
}

/**
 * The answer of command `name` called with `args`, from the answers baked into the page
 * (`baked[name]` = {arg, grid, echo, result}): with a grid, the rows of the cells listed in
 * `args[arg]`; without one, the saved result whole. Null when nothing was baked for `name`;
 * throws for a cell the page holds no answer for.
 */
export function bakedAnswer(baked, name, args) {
  const spec = baked?.[name];
  if (!spec) return null;
  if (!spec.grid) return spec.result;
  const cells = args?.[spec.arg];
  if (!Array.isArray(cells)) throw new Error(`${spec.arg} must be a list of cells`);
  const rows = cells.map((c) => {
    const r = gridRow(spec.grid, c);
    if (r < 0) throw new Error(`this saved page holds no answer for ${JSON.stringify(c)} (its table is ${spec.grid.join(" x ")})`);
    return r;
  });
  const n = spec.grid.reduce((a, b) => a * b, 1);
  const out = {};
  for (const [k, v] of Object.entries(spec.result)) out[k] = pickRows(v, rows, n);
  if (spec.echo) out[spec.echo] = cells;
  return out;
}

/** One widget model of the saved page (Backbone-like events, as ipywidgets' models fire them). */
export class StaticModel {
  constructor(id, state, manager, baked = {}) {
    this.model_id = id;
    this.attributes = { ...state };
    this.widget_manager = manager;
    this.handlers = new Map();
    this.baked = baked;
  }

  /**
   * A command call, answered like Python's @command: [{result, buffer_paths}, buffers] from the
   * baked answers, else [{error}] saying the page has no kernel.
   */
  command(name, args) {
    let response;
    try {
      const result = bakedAnswer(this.baked, name, args);
      response = result === null ? { error: `${name}: ${OFFLINE}` } : { result, buffer_paths: [] };
    } catch (e) {
      response = { error: `${name}: ${e.message}` };
    }
    return Promise.resolve([response, []]);
  }

  get(key) { return this.attributes[key]; }

  set(key, value) {
    const patch = typeof key === "object" && key !== null ? key : { [key]: value };
    const changed = [];
    for (const [k, v] of Object.entries(patch)) {
      if (!same(this.attributes[k], v)) { this.attributes[k] = v; changed.push(k); }
    }
    for (const k of changed) this.trigger(`change:${k}`, this, this.attributes[k]);
    if (changed.length) this.trigger("change", this);
  }

  save_changes() {} // nothing to sync: the page has no kernel

  on(event, fn) {
    if (!this.handlers.has(event)) this.handlers.set(event, new Set());
    this.handlers.get(event).add(fn);
  }

  off(event, fn) {
    if (!event) { this.handlers.clear(); return; }
    const hs = this.handlers.get(event);
    if (!hs) return;
    if (fn) hs.delete(fn); else hs.clear();
  }

  trigger(event, ...args) {
    for (const fn of [...(this.handlers.get(event) || [])]) {
      try { fn(...args); } catch (e) { console.error(e); }
    }
  }

  /** Messages to Python: a command is answered from the baked answers or with an error (no kernel); others are dropped. */
  send(content) {
    if (content && content.kind === "anywidget-command") {
      this.command(content.name, content.msg).then(([response]) => {
        const reply = { id: content.id, kind: "anywidget-command-response", response };
        setTimeout(() => this.trigger("msg:custom", reply, []), 0);
      });
    }
  }
}

/** A saved {key: JSON, buffers: [{path, data}]} with its base64 buffers put back as DataViews. */
function withBuffers(saved, key) {
  const value = JSON.parse(JSON.stringify(saved[key]));
  const bufs = saved.buffers || [];
  putBuffers(value, bufs.map((b) => b.path), bufs.map((b) => fromBase64(b.data)));
  return value;
}

/**
 * The models of a saved page, each created from {state, buffers: [{path, data}], commands?:
 * {name: {spec, buffers}}} (commands: the answers baked for the view's commands).
 */
export class StaticManager {
  constructor(saved) {
    this.models = new Map();
    for (const [id, m] of Object.entries(saved.models || {})) {
      const baked = {};
      for (const [name, c] of Object.entries(m.commands || {})) baked[name] = withBuffers(c, "spec");
      this.models.set(id, new StaticModel(id, withBuffers(m, "state"), this, baked));
    }
  }

  async get_model(id) {
    const m = this.models.get(id);
    if (!m) throw new Error(`no model ${id} in this page`);
    return m;
  }
}

/** anywidget's `experimental` for a view of a saved page: invoke answers from the model's baked answers, or with a note. */
export function offlineExperimental(model) {
  return { invoke: (name, msg) => model.command(name, msg) };
}

/**
 * Render the saved views: `saved` = {models, views: [{id, esm, title}]}; `host` receives one
 * element per view. `load(esmText)` imports a module (default: from a Blob URL).
 */
export async function boot(saved, host, load = importText) {
  const manager = new StaticManager(saved);
  const modules = new Map();
  for (const v of saved.views || []) {
    const box = document.createElement("div");
    box.className = "mri-share-view";
    if (v.title) {
      const cap = document.createElement("div");
      cap.className = "mri-share-title";
      cap.textContent = v.title;
      box.appendChild(cap);
    }
    const el = document.createElement("div");
    box.appendChild(el);
    host.appendChild(box);
    try {
      if (!modules.has(v.view)) modules.set(v.view, load(saved.esm[v.view]));
      const mod = await modules.get(v.view);
      const widget = mod.default ?? mod;
      const model = await manager.get_model(v.id);
      const experimental = offlineExperimental(model);
      if (widget.initialize) await widget.initialize({ model, experimental });
      await widget.render({ model, el, experimental });
    } catch (e) {
      console.error(e);
      const err = document.createElement("div");
      err.className = "mri-notice mri-error";
      err.textContent = `could not show this view: ${e.message}`;
      el.appendChild(err);
    }
  }
  return manager;
}

function importText(text) {
  const url = URL.createObjectURL(new Blob([text], { type: "text/javascript" }));
  return import(/* @vite-ignore */ url);
}
