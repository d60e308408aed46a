// A static host for views saved with save_html (mri_widgets/widgets/share.py): the anywidget model
// interface (get / set / on / off / save_changes / send, widget_manager.get_model) over the state
// saved in the page, binary buffers base64 in the file. Linked views share one selection model in
// the page, so a click in one view moves the others. Nothing reaches Python: calls to it (commands,
// pieces of big traits, recomputing) answer with an error that says so.
import { putBuffers } from "../lib/codec.js";

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

/** One widget model of the saved page (Backbone-like events, as ipywidgets' models fire them). */
export class StaticModel {
  constructor(id, state, manager) {
    this.model_id = id;
    this.attributes = { ...state };
    this.widget_manager = manager;
    this.handlers = new Map();
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

  /** Messages to Python: a command is answered with an error (no kernel); others are dropped. */
  send(content) {
    if (content && content.kind === "anywidget-command") {
      const reply = { id: content.id, kind: "anywidget-command-response", response: { error: `${content.name}: ${OFFLINE}` } };
      setTimeout(() => this.trigger("msg:custom", reply, []), 0);
    }
  }
}

/** The models of a saved page, each created from {state, buffers: [{path, data}]}. */
export class StaticManager {
  constructor(saved) {
    this.models = new Map();
    for (const [id, m] of Object.entries(saved.models || {})) {
      const state = JSON.parse(JSON.stringify(m.state));
      putBuffers(state, (m.buffers || []).map((b) => b.path), (m.buffers || []).map((b) => fromBase64(b.data)));
      this.models.set(id, new StaticModel(id, state, this));
    }
  }

  async get_model(id) {
    const m = this.models.get(id);
    if (!m) throw new Error(`no model ${id} in this page`);
    return m;
  }
}

/** anywidget's `experimental` for a saved page: invoke fails with a note. */
export const offlineExperimental = {
  invoke: (name) => Promise.reject(new Error(`${name}: ${OFFLINE}`)),
};

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
      if (widget.initialize) await widget.initialize({ model, experimental: offlineExperimental });
      await widget.render({ model, el, experimental: offlineExperimental });
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
