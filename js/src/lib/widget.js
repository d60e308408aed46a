// Glue every view uses: its declared traits decoded, the Colab buffer fallback, error display,
// selection, calls to Python.
import { decodeTree, hasMissing } from "./codec.js";
import { fetchChunked, isChunked, joinedValue } from "./chunks.js";
import { connectSelection } from "./selection.js";
import { invoke } from "./invoke.js";
import { h, notice } from "./dom.js";

/**
 * Set a view root's theme: "light" or "dark" set data-mri-theme (style.css maps it to the --mri-*
 * colours, over the page's theme); anything else ("auto", unset) removes it, so the view follows
 * the page (JupyterLab's theme, else prefers-color-scheme).
 */
export function applyTheme(root, theme) {
  if (theme === "light" || theme === "dark") root.dataset.mriTheme = theme;
  else delete root.dataset.mriTheme;
}

/**
 * Define an anywidget view.
 *
 * `traits` are the synced traits (declared on the Python class) whose change redraws the view:
 * `ctx.data` holds them decoded, `{name: value}`. `params` are the other traits of the Python
 * class that the view reads or writes itself (model.get / model.set); both lists together are
 * the view's contract with Python, checked by tests/test_transport.py.
 *
 * `draw(ctx)` is called with ctx = {model, el, root, data, sel, selection, invoke} on first
 * render and whenever one of `traits` changes (several changes in one message: one redraw);
 * `onSelection(ctx, sel)` on selection changes. `ctx.invoke(name, args)` calls a Python
 * @command. Returns the anywidget module object {render}.
 */
export function defineView({ name, traits = [], params: _params = [], draw, onSelection }) {
  async function render({ model, el, experimental }) {
    const root = h("div", { class: `mri-view mri-${name}` });
    applyTheme(root, model.get("theme"));
    el.appendChild(root);
    const ctx = {
      model, el, root, data: null, state: {}, selection: null,
      invoke: (fn, args, opts) => invoke(model, experimental, fn, args, opts),
    };
    const requested = new Set();
    const redraw = () => {
      const raw = {};
      for (const k of traits) raw[k] = model.get(k);
      const err = model.get("error");
      // traits Python sent in pieces (large states): fetch, join, then draw
      const chunked = traits.filter((k) => isChunked(raw[k]));
      const pending = [];
      for (const k of chunked) {
        const v = joinedValue(model, raw[k]);
        if (v !== undefined) raw[k] = v;
        else pending.push(k);
      }
      if (pending.length) {
        const total = pending.reduce((s, k) => s + raw[k].nbytes, 0);
        const msg = notice(`Loading ${(total / 2 ** 20).toFixed(1)} MiB in pieces…`);
        root.replaceChildren(msg);
        const call = (n, a) => ctx.invoke(n, a);
        Promise.all(pending.map((k) => fetchChunked(model, raw[k], call)))
          .then(() => redraw(), (e) => {
            root.replaceChildren(notice(`mri_widgets ${name}: could not load the data: ${e.message}`, "error"));
          });
        return;
      }
      const missing = traits.filter((k) => hasMissing(raw[k]));
      if (missing.length) {
        // Colab's widget manager drops binary buffers sent with comm_open: ask Python again.
        const ask = missing.filter((k) => !requested.has(k));
        if (ask.length) {
          ask.forEach((k) => requested.add(k));
          model.send({ type: "request_state", keys: ask });
        }
        root.replaceChildren(notice("Loading arrays…"));
        return;
      }
      ctx.data = decodeTree(raw);
      root.replaceChildren();
      if (err) root.appendChild(notice(err, "error"));
      try {
        draw(ctx);
      } catch (e) {
        console.error(e);
        root.appendChild(notice(`mri_widgets ${name}: ${e.message}`, "error"));
      }
    };
    // One message from Python sets several traits: Backbone fires change:<trait> for each, then
    // one "change"; redraw once, on that "change", if one of our traits changed.
    let dirty = false;
    const mark = () => { dirty = true; };
    const flush = () => { if (dirty) { dirty = false; redraw(); } };
    const events = [...traits, "error"].map((k) => `change:${k}`);
    for (const ev of events) model.on(ev, mark);
    model.on("change", flush);
    // the theme: CSS follows the attribute; a redraw for what reads colours once (graphs)
    const onTheme = () => { applyTheme(root, model.get("theme")); dirty = true; };
    model.on("change:theme", onTheme);
    ctx.selection = await connectSelection(model, (s) => {
      ctx.sel = s;
      if (onSelection && ctx.data) onSelection(ctx, s);
    });
    ctx.sel = ctx.selection.get();
    redraw();
    if (onSelection && ctx.data) onSelection(ctx, ctx.sel);
    return () => {
      for (const ev of events) model.off(ev, mark);
      model.off("change", flush);
      model.off("change:theme", onTheme);
      ctx.selection.dispose();
      if (ctx.cleanup) ctx.cleanup();
    };
  }
  return { render };
}
