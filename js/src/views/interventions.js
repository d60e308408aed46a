// Interventions: the shared list of ablations (patches, steering) in effect. A checkbox per entry
// enables / disables it, a button removes it; both call Python (invoke "toggle_entry",
// "remove_entry"), which updates `entries` and every view that recomputes under them.
// Labels are set as text.
import { defineView } from "../lib/widget.js";
import { h, notice } from "../lib/dom.js";

const CSS = `
.mri-interventions .mri-iv-list { list-style: none; margin: 0; padding: 0; }
.mri-interventions .mri-iv-entry { display: flex; gap: 8px; align-items: center; padding: 2px 0; border-top: 1px solid var(--mri-border); }
.mri-interventions .mri-iv-entry:first-child { border-top: none; }
.mri-interventions .mri-iv-entry.mri-iv-off .mri-iv-label { color: var(--mri-muted); text-decoration: line-through; }
.mri-interventions .mri-iv-remove { padding: 0 6px; }
.mri-interventions .mri-iv-error { color: var(--mri-error-fg); }
`;

function injectCss() {
  if (typeof document === "undefined" || document.getElementById("mri-interventions-css")) return;
  document.head.appendChild(h("style", { id: "mri-interventions-css" }, CSS));
}

function draw(ctx) {
  injectCss();
  const { data, root } = ctx;
  const entries = Array.isArray(data.entries) ? data.entries : [];
  const status = h("span", { class: "mri-iv-status mri-muted" });
  const call = async (name, args) => {
    status.textContent = "…";
    status.classList.remove("mri-iv-error");
    try {
      await ctx.invoke(name, args);
      status.textContent = "";
    } catch (e) {
      status.textContent = String(e.message || e);
      status.classList.add("mri-iv-error");
    }
  };
  const n = entries.filter((e) => e.enabled).length;
  const summary = entries.length ? `${n} of ${entries.length} active` : "";
  const clear = entries.length
    ? h("button", { class: "mri-iv-clear", title: "remove every intervention", onclick: () => call("clear_entries", {}) }, "clear")
    : null;
  root.appendChild(h("div", { class: "mri-toolbar" }, h("span", { class: "mri-title" }, "Interventions"),
    h("span", { class: "mri-iv-summary mri-muted" }, summary), clear, status));
  if (!entries.length) {
    root.appendChild(notice("No interventions: select a head or neuron and click \u201cablate\u201d in a view, "
      + "or call interventions.ablate((\"head\", layer, h)) in Python.", "info"));
    root.lastChild.classList.add("mri-iv-empty");
    return;
  }
  const list = h("ul", { class: "mri-iv-list" });
  entries.forEach((e, i) => {
    const box = h("input", { type: "checkbox", class: "mri-iv-toggle", "aria-label": `enable ${e.label}`,
      onchange: (ev) => call("toggle_entry", { id: e.id, enabled: ev.target.checked }) });
    box.checked = !!e.enabled;
    list.appendChild(h("li", { class: `mri-iv-entry${e.enabled ? "" : " mri-iv-off"}`, "data-index": i, "data-id": e.id,
      "data-kind": String(e.kind ?? "") },
      box, h("span", { class: "mri-iv-label" }, String(e.label ?? "")),
      h("button", { class: "mri-iv-remove", title: "remove", "aria-label": `remove ${e.label}`,
        onclick: () => call("remove_entry", { id: e.id }) }, "\u00d7")));
  });
  root.appendChild(list);
}

/** Traits of Interventions (mri_widgets/widgets/interventions.py): redrawn on change ... */
export const TRAITS = ["entries", "version", "has_corpus"];
/** ... and the parameters the view reads and sets itself. */
export const PARAMS = [];

export default defineView({ name: "interventions", traits: TRAITS, params: PARAMS, draw });
