// Glue every view uses: decoded data, the Colab buffer fallback, error display, selection.
import { decodeTree, hasMissing } from "./codec.js";
import { connectSelection } from "./selection.js";
import { h, notice } from "./dom.js";

/**
 * Define an anywidget view. `draw(ctx)` is called with
 *   ctx = {model, el, root, data, sel, selection, rpc}
 * on first render and whenever `data` changes; `onSelection(ctx, sel)` on selection changes.
 * Returns the anywidget module object {render}.
 */
export function defineView({ name, draw, onSelection }) {
  async function render({ model, el }) {
    const root = h("div", { class: `mri-view mri-${name}` });
    el.appendChild(root);
    const ctx = { model, el, root, data: null, state: {}, selection: null };
    let requested = false;
    const redraw = () => {
      const raw = model.get("data") || {};
      const err = model.get("error");
      if (hasMissing(raw)) {
        // Colab's widget manager drops binary buffers sent with comm_open: ask Python again.
        if (!requested) {
          requested = true;
          model.send({ type: "request_state", keys: ["data"] });
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
    model.on("change:data", redraw);
    model.on("change:error", redraw);
    ctx.selection = await connectSelection(model, (s) => {
      ctx.sel = s;
      if (onSelection && ctx.data) onSelection(ctx, s);
    });
    ctx.sel = ctx.selection.get();
    redraw();
    if (onSelection && ctx.data) onSelection(ctx, ctx.sel);
    return () => {
      model.off("change:data", redraw);
      model.off("change:error", redraw);
      ctx.selection.dispose();
      if (ctx.cleanup) ctx.cleanup();
    };
  }
  return { render };
}
