// "ablate (zero)" / "ablate (mean)" buttons for a selected head or neuron: the counterpart of
// AblationControls in mri_widgets/widgets/interventions.py. The view's `ablation` trait is {} when
// it has no Interventions (no buttons), else {mean, mean_note, active: [[kind, layer, index, mode]]}.
import { h } from "./dom.js";

/** The name of a target as the Interventions list shows it: "head L2.H1", "neuron L0.N5". */
export function targetName(t) {
  return t ? `${t.kind} L${t.layer}.${t.kind === "head" ? "H" : "N"}${t.index}` : "";
}

/** Whether `ablation.active` holds (target, mode). */
export function isActive(ablation, t, mode) {
  return !!t && (ablation?.active || []).some(([k, l, i, m]) => k === t.kind && l === t.layer && i === t.index && m === mode);
}

/**
 * A bar with the two buttons. `get()` returns the current target {kind, layer, index} or null.
 * Returns {el, update()}: call update() when the target or the model's `ablation` changes.
 * The buttons call the view's @command `ablate` (kind, layer, index, mode).
 */
export function ablateBar(ctx, get) {
  const { model } = ctx;
  const what = h("span", { class: "mri-ablate-target mri-muted" });
  const status = h("span", { class: "mri-ablate-status mri-muted" });
  const buttons = {};
  const click = async (mode) => {
    const t = get();
    if (!t) return;
    status.textContent = "…";
    try {
      const entry = await ctx.invoke("ablate", { kind: t.kind, layer: t.layer, index: t.index, mode });
      status.textContent = entry?.label ? `added: ${entry.label}` : "";
    } catch (e) {
      status.textContent = String(e.message || e);
      status.classList.add("mri-ablate-error");
    }
  };
  for (const mode of ["zero", "mean"]) {
    buttons[mode] = h("button", { class: `mri-ablate-${mode}`, onclick: () => click(mode) }, `ablate (${mode})`);
  }
  const el = h("div", { class: "mri-toolbar mri-ablate" }, what, buttons.zero, buttons.mean, status);
  const update = () => {
    const ab = model.get("ablation") || {};
    const t = get();
    const show = !!(ab && Object.keys(ab).length) && !!t;
    el.style.display = show ? "" : "none";
    if (!show) return;
    const name = `${targetName(t)}:`;
    if (what.textContent !== name) { // another target: the last message was about the previous one
      status.textContent = "";
      status.classList.remove("mri-ablate-error");
    }
    what.textContent = name;
    buttons.zero.title = `zero ${targetName(t)} in every run that uses the interventions`;
    buttons.mean.disabled = !ab.mean;
    buttons.mean.title = ab.mean ? `replace ${targetName(t)} by its mean over the corpus` : (ab.mean_note || "no corpus for mean ablation");
    for (const mode of ["zero", "mean"]) {
      const on = isActive(ab, t, mode);
      buttons[mode].classList.toggle("mri-on", on);
      buttons[mode].setAttribute("aria-pressed", on ? "true" : "false");
    }
  };
  update();
  return { el, update, status };
}
