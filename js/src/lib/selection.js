// The shared selection in the front end: counterpart of mri_widgets/widgets/selection.py.
// Views talk to the Selection widget model directly when the widget manager can reach it; where
// it cannot (Colab's separate output frames), they write their own `_sel` mirror, which Python
// forwards to the Selection and to every other view.

export const KEYS = ["layer", "position", "neuron", "head", "region", "label"];

async function resolveModel(model) {
  const ref = model.get("selection");
  if (typeof ref !== "string" || !ref.startsWith("IPY_MODEL_")) return null;
  const mgr = model.widget_manager;
  if (!mgr || typeof mgr.get_model !== "function") return null;
  try {
    return await mgr.get_model(ref.slice("IPY_MODEL_".length));
  } catch (_e) {
    return null;
  }
}

/**
 * Connect a view to the shared selection.
 * @param model the view's widget model
 * @param onChange called with the whole selection {layer, position, ...} on every change
 * @returns {Promise<{get(): object, set(patch: object): void, direct: boolean, dispose(): void}>}
 */
export async function connectSelection(model, onChange) {
  const sel = await resolveModel(model);
  let current = { ...(model.get("_sel") || {}) };
  const emit = (next) => {
    const changed = KEYS.some((k) => (next[k] ?? null) !== (current[k] ?? null));
    current = { ...current, ...next };
    if (changed) onChange({ ...current });
  };
  const fromMirror = () => emit(model.get("_sel") || {});
  const fromSel = () => {
    const next = {};
    for (const k of KEYS) next[k] = sel.get(k) ?? null;
    emit(next);
  };
  model.on("change:_sel", fromMirror);
  if (sel) sel.on("change", fromSel);
  if (sel) fromSel();
  return {
    direct: !!sel,
    get: () => ({ ...current }),
    set(patch) {
      const clean = {};
      for (const k of Object.keys(patch)) if (KEYS.includes(k)) clean[k] = patch[k];
      if (sel) {
        sel.set(clean);
        sel.save_changes();
      } else {
        model.set("_sel", { ...current, ...clean });
        model.save_changes();
      }
      emit(clean);
    },
    dispose() {
      model.off("change:_sel", fromMirror);
      if (sel) sel.off("change", fromSel);
    },
  };
}
