// The scrolling grid shared by the token x layer tables (LensTable, PatchingTable): only the
// visible cells (plus an overscan) are in the page, row and column headers stay in view and
// follow the scroll, a tooltip on hover, click / arrow keys pick a cell. What a cell shows, and
// what picking it means, is the view's: the grid asks through callbacks.
import { h } from "./dom.js";
import { textOn } from "./colors.js";

export const CELL_W = 70;
export const CELL_H = 20;
export const ROW_HEAD_W = 140;
export const COL_HEAD_H = 22;
export const OVERSCAN = 3;
export const ROW_OVERSCAN = 6;
export const COL_OVERSCAN = 2;

// ------------------------------------------------------------------------------ pure logic

/**
 * Items to render along one axis: [start, end) of the items intersecting the viewport, widened
 * by `overscan` items each side.
 */
export function visibleRange(scroll, viewport, size, count, overscan = OVERSCAN) {
  if (count <= 0) return { start: 0, end: 0 };
  const first = Math.floor(Math.max(0, scroll) / size);
  const last = Math.ceil((Math.max(0, scroll) + Math.max(0, viewport)) / size);
  return { start: Math.max(0, Math.min(count - 1, first) - overscan), end: Math.min(count, last + overscan) };
}

/**
 * New cell {r, c} after a key press in a rows x cols grid (clamped), or null for other keys.
 * Arrows move by one, PageUp/PageDown by `page` rows, Home/End to the first/last column.
 */
export function moveCell(cell, key, rows, cols, page = 10) {
  let { r, c } = cell || { r: 0, c: 0 };
  switch (key) {
    case "ArrowUp": r -= 1; break;
    case "ArrowDown": r += 1; break;
    case "ArrowLeft": c -= 1; break;
    case "ArrowRight": c += 1; break;
    case "PageUp": r -= page; break;
    case "PageDown": r += page; break;
    case "Home": c = 0; break;
    case "End": c = cols - 1; break;
    default: return null;
  }
  return { r: Math.min(rows - 1, Math.max(0, r)), c: Math.min(cols - 1, Math.max(0, c)) };
}

/** Scroll offset that brings [start, start + size) into a viewport, changing it as little as possible. */
export function scrollToShow(scroll, viewport, start, size) {
  if (start < scroll) return start;
  if (start + size > scroll + viewport) return Math.max(0, start + size - viewport);
  return scroll;
}

// ------------------------------------------------------------------------------ style

/** CSS of a grid whose class names start with `p` (e.g. "mri-lens"), inside the view root `scope`. */
export function gridCss(scope, p) {
  const s = `${scope} .${p}`;
  return `
${s}-grid { position: relative; flex: 1 1 auto; min-width: 200px; border: 1px solid var(--mri-border); overflow: hidden; }
${s}-corner, ${s}-colhead, ${s}-rowhead { position: absolute; overflow: hidden; background: var(--mri-bg); z-index: 2; }
${s}-corner { left: 0; top: 0; color: var(--mri-muted); font-size: 11px; padding: 3px 4px; box-sizing: border-box; border-right: 1px solid var(--mri-border); border-bottom: 1px solid var(--mri-border); }
${s}-colhead { top: 0; right: 0; border-bottom: 1px solid var(--mri-border); }
${s}-rowhead { left: 0; bottom: 0; border-right: 1px solid var(--mri-border); }
${s}-body { position: absolute; right: 0; bottom: 0; overflow: auto; outline: none; }
${s}-sizer { position: relative; contain: layout paint style; }
${s}-inner { position: relative; }
${s}-h { position: absolute; box-sizing: border-box; white-space: pre; overflow: hidden; text-overflow: ellipsis; padding: 2px 4px; font-family: var(--jp-code-font-family, ui-monospace, monospace); font-size: 11px; line-height: 16px; }
${s}-h .${p}-idx { color: var(--mri-muted); font-family: var(--jp-ui-font-family, sans-serif); margin-right: 4px; }
${s}-h.${p}-hi { background: var(--mri-hi-bg); color: var(--mri-hi-fg); }
${s}-cell { position: absolute; box-sizing: border-box; white-space: pre; overflow: hidden; text-overflow: ellipsis; padding: 2px 4px; font-family: var(--jp-code-font-family, ui-monospace, monospace); font-size: 11px; line-height: 16px; cursor: pointer; border-right: 1px solid var(--mri-grid); border-bottom: 1px solid var(--mri-grid); contain: strict; }
${s}-cell.${p}-pinned { outline: 2px solid var(--mri-accent); outline-offset: -2px; z-index: 1; }
`;
}

/** Add a <style> once per id. */
export function injectCss(id, css) {
  if (typeof document === "undefined" || document.getElementById(id)) return;
  document.head.appendChild(h("style", { id }, css));
}

// ------------------------------------------------------------------------------ the grid

/**
 * Build a virtualised rows x cols grid into `host` (replacing its children).
 *
 * Options:
 * - `prefix`: class-name prefix ("mri-lens": mri-lens-grid, mri-lens-cell, mri-lens-pinned, ...)
 * - `rows`, `cols`, `height` (the most px the grid may take), `corner` (text), `label` (aria)
 * - `frame()`: called once per paint; its value is passed to the callbacks below
 * - `cell(r, c, f)` -> {bg, text, cls, data}: background colour, text (set as text), extra
 *   classes, and dataset entries of the cell element
 * - `rowHead(r, f)`, `colHead(c, f)` -> {content, hi, cls}: header children, whether it is lit, extra classes
 * - `pinned(f)` -> {r, c} or null: the cell drawn as pinned (the view owns that state)
 * - `onPick({r, c} | null)`: the user clicked a cell or moved with the keys (null: clicked the
 *   pinned cell again to unpin it)
 * - `tip` (a dom.js tooltip) and `tooltip(r, c)` -> its content on hover
 * - `onHover({r, c})`, `onLeave()`: optional hover hooks
 * - `scroll` ({top, left} to start at) and `onScroll(top, left)`: keep the scroll across rebuilds
 *
 * Returns {paint, reveal(r, c), revealRow(r), revealCol(c), body, rows, cols}.
 */
export function tokenGrid(opts) {
  const { host, prefix: p, rows, cols, frame = () => null, cell, rowHead, colHead, pinned, onPick, tip } = opts;
  const height = Math.min(opts.height || 480, COL_HEAD_H + rows * CELL_H + 18);
  const grid = h("div", { class: `${p}-grid`, style: { height: `${height}px`, maxWidth: `${ROW_HEAD_W + cols * CELL_W + 18}px` } });
  const corner = h("div", { class: `${p}-corner`, style: { width: `${ROW_HEAD_W}px`, height: `${COL_HEAD_H}px` } }, opts.corner || "");
  const colInner = h("div", { class: `${p}-inner`, style: { width: `${cols * CELL_W + 40}px`, height: `${COL_HEAD_H}px` } });
  const colHeadEl = h("div", { class: `${p}-colhead`, style: { left: `${ROW_HEAD_W}px`, height: `${COL_HEAD_H}px` } }, colInner);
  const rowInner = h("div", { class: `${p}-inner`, style: { height: `${rows * CELL_H + 40}px`, width: `${ROW_HEAD_W}px` } });
  const rowHeadEl = h("div", { class: `${p}-rowhead`, style: { top: `${COL_HEAD_H}px`, width: `${ROW_HEAD_W}px` } }, rowInner);
  const sizer = h("div", { class: `${p}-sizer`, style: { width: `${cols * CELL_W}px`, height: `${rows * CELL_H}px` } });
  // data-lm-suppress-shortcuts: JupyterLab's command-mode shortcuts (arrows move cells) skip this element
  const body = h("div", { class: `${p}-body`, tabindex: 0, role: "grid", "aria-label": opts.label || "table",
    "data-lm-suppress-shortcuts": "true",
    style: { left: `${ROW_HEAD_W}px`, top: `${COL_HEAD_H}px` } }, sizer);
  grid.append(corner, colHeadEl, rowHeadEl, body);
  host.replaceChildren(grid);

  const viewW = () => body.clientWidth || Math.max(200, (host.clientWidth || 800) - ROW_HEAD_W);
  const viewH = () => body.clientHeight || height - COL_HEAD_H;
  const cellClass = `${p}-cell`, pinClass = ` ${p}-pinned`, headClass = `${p}-h`, hiClass = ` ${p}-hi`;

  // cell elements are reused from paint to paint; only the visible window (plus overscan) exists
  const pool = [];
  let drawn = null;
  function paint() {
    const f = frame();
    const st = body.scrollTop, sl = body.scrollLeft;
    const rr = visibleRange(st, viewH(), CELL_H, rows, ROW_OVERSCAN);
    const cc = visibleRange(sl, viewW(), CELL_W, cols, COL_OVERSCAN);
    const pin = pinned(f);
    let n = 0;
    for (let r = rr.start; r < rr.end; r++) {
      for (let c = cc.start; c < cc.end; c++) {
        const d = cell(r, c, f);
        let el = pool[n];
        if (!el) {
          el = h("div", { role: "gridcell", style: { width: `${CELL_W}px`, height: `${CELL_H}px` } });
          pool.push(el);
        }
        el.className = cellClass + (d.cls ? ` ${d.cls}` : "") + (pin && pin.r === r && pin.c === c ? pinClass : "");
        el.dataset.r = r;
        el.dataset.c = c;
        if (d.data) for (const k in d.data) el.dataset[k] = d.data[k];
        el.style.left = `${c * CELL_W}px`;
        el.style.top = `${r * CELL_H}px`;
        el.style.background = d.bg;
        el.style.color = textOn(d.bg);
        el.textContent = d.text;
        if (el.parentNode !== sizer) sizer.appendChild(el);
        n++;
      }
    }
    for (let i = n; i < pool.length; i++) if (pool[i].parentNode) pool[i].remove();
    const heads = [];
    for (let c = cc.start; c < cc.end; c++) {
      const hd = colHead(c, f);
      heads.push(h("div", { class: headClass + (hd.hi ? hiClass : "") + (hd.cls ? ` ${hd.cls.trim()}` : ""), "data-col": c,
        style: { left: `${c * CELL_W}px`, top: "0px", width: `${CELL_W}px`, height: `${COL_HEAD_H}px` } }, hd.content));
    }
    colInner.replaceChildren(...heads);
    const rheads = [];
    for (let r = rr.start; r < rr.end; r++) {
      const hd = rowHead(r, f);
      rheads.push(h("div", { class: headClass + (hd.hi ? hiClass : "") + (hd.cls ? ` ${hd.cls.trim()}` : ""), "data-row": r,
        style: { left: "0px", top: `${r * CELL_H}px`, width: `${ROW_HEAD_W}px`, height: `${CELL_H}px` } }, hd.content));
    }
    rowInner.replaceChildren(...rheads);
    colHeadEl.scrollLeft = sl;
    rowHeadEl.scrollTop = st;
    drawn = { rr, cc };
  }

  /** True when the cells painted last time still cover the viewport (scrolling inside the overscan). */
  function covered() {
    if (!drawn) return false;
    const r = visibleRange(body.scrollTop, viewH(), CELL_H, rows, 0);
    const c = visibleRange(body.scrollLeft, viewW(), CELL_W, cols, 0);
    return r.start >= drawn.rr.start && r.end <= drawn.rr.end && c.start >= drawn.cc.start && c.end <= drawn.cc.end;
  }

  let queued = false;
  const raf = globalThis.requestAnimationFrame ? (fn) => globalThis.requestAnimationFrame(fn) : (fn) => setTimeout(fn, 0);
  body.addEventListener("scroll", () => {
    colHeadEl.scrollLeft = body.scrollLeft;
    rowHeadEl.scrollTop = body.scrollTop;
    if (queued || covered()) return;
    queued = true;
    raf(() => { queued = false; paint(); });
  });

  const revealRow = (r) => { body.scrollTop = scrollToShow(body.scrollTop, viewH(), r * CELL_H, CELL_H); };
  const revealCol = (c) => { body.scrollLeft = scrollToShow(body.scrollLeft, viewW(), c * CELL_W, CELL_W); };
  const reveal = (r, c) => { revealRow(r); revealCol(c); };

  const cellOf = (e) => {
    const el = e.target?.closest ? e.target.closest(`.${cellClass}`) : null;
    if (!el) return null;
    return { r: Number(el.dataset.r), c: Number(el.dataset.c) };
  };
  body.addEventListener("mousemove", (e) => {
    const rc = cellOf(e);
    if (!rc) { tip.hide(); return; }
    tip.show(e.clientX, e.clientY, opts.tooltip(rc.r, rc.c));
    if (opts.onHover) opts.onHover(rc);
  });
  body.addEventListener("mouseleave", () => { tip.hide(); if (opts.onLeave) opts.onLeave(); });
  body.addEventListener("click", (e) => {
    const rc = cellOf(e);
    if (!rc) return;
    body.focus({ preventScroll: true });
    const cur = pinned(frame());
    onPick(cur && cur.r === rc.r && cur.c === rc.c ? null : rc);
  });
  body.addEventListener("keydown", (e) => {
    const start = pinned(frame()) || { r: 0, c: 0 };
    const next = moveCell(start, e.key, rows, cols, Math.max(1, Math.floor(viewH() / CELL_H) - 1));
    if (!next) return;
    e.preventDefault();
    e.stopPropagation();
    onPick(next);
  });

  if (opts.scroll) { body.scrollTop = opts.scroll.top; body.scrollLeft = opts.scroll.left; }
  if (opts.onScroll) body.addEventListener("scroll", () => opts.onScroll(body.scrollTop, body.scrollLeft));
  return { paint, reveal, revealRow, revealCol, body, rows, cols };
}
