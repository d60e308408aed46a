import { describe, it, expect } from "vitest";
import { tokenGrid, gridCss, visibleRange, moveCell, scrollToShow, CELL_W, CELL_H } from "../src/lib/token_table.js";
import { tooltip } from "../src/lib/dom.js";

/** A 100 x 8 grid whose cell (r, c) shows "r:c" on rgb(r, c, 0); the test owns the pinned cell. */
function makeGrid(extra = {}) {
  const root = document.createElement("div");
  document.body.appendChild(root);
  const host = document.createElement("div");
  root.appendChild(host);
  const state = { pinned: null, picks: [], hovers: [] };
  const grid = tokenGrid({
    host, prefix: "tt", rows: 100, cols: 8, height: 200, corner: "r \\ c", label: "test grid", tip: tooltip(root),
    frame: () => ({ pinned: state.pinned }),
    cell: (r, c) => ({ bg: `rgb(${r},${c * 30},0)`, text: `<b>${r}:${c}</b>`, cls: r === 5 ? "five" : "", data: { row: r } }),
    rowHead: (r, f) => ({ hi: f.pinned?.r === r, content: [`row ${r}`] }),
    colHead: (c) => ({ hi: c === 2, content: [`col ${c}`] }),
    pinned: (f) => f.pinned,
    onPick(rc) { state.picks.push(rc); state.pinned = rc; grid.paint(); },
    tooltip: (r, c) => [`cell ${r},${c}`],
    onHover: (rc) => state.hovers.push(rc),
    ...extra,
  });
  grid.paint();
  return { root, grid, state };
}
const at = (root, r, c) => root.querySelector(`.tt-cell[data-r="${r}"][data-c="${c}"]`);

describe("token_table logic", () => {
  it("computes the visible window with overscan and clamping", () => {
    expect(visibleRange(0, 100, 20, 512, 0)).toEqual({ start: 0, end: 5 });
    expect(visibleRange(210, 100, 20, 512, 3)).toEqual({ start: 7, end: 19 });
    expect(visibleRange(100000, 100, 20, 512, 2)).toEqual({ start: 509, end: 512 });
  });
  it("moves with keys, clamped, and scrolls minimally", () => {
    expect(moveCell(null, "ArrowDown", 5, 4)).toEqual({ r: 1, c: 0 });
    expect(moveCell({ r: 4, c: 3 }, "PageDown", 5, 4, 10)).toEqual({ r: 4, c: 3 });
    expect(moveCell({ r: 2, c: 2 }, "Home", 5, 4)).toEqual({ r: 2, c: 0 });
    expect(scrollToShow(100, 200, 400, 20)).toBe(220);
  });
  it("scopes its CSS to the view and the prefix", () => {
    const css = gridCss(".mri-x", "mri-y");
    expect(css).toContain(".mri-x .mri-y-cell.mri-y-pinned");
    expect(css).toContain(".mri-x .mri-y-h.mri-y-hi");
    expect(css).not.toContain("mri-lens");
  });
});

describe("tokenGrid", () => {
  it("paints only the visible window, with colours, text as text and dataset", () => {
    const { root } = makeGrid();
    const cells = root.querySelectorAll(".tt-cell");
    // height 200 - 22 header = 178 px = 9 rows + 6 overscan; 8 columns
    expect(cells.length).toBe(Math.ceil(178 / CELL_H + 6) * 8);
    const c = at(root, 3, 2);
    expect(c.textContent).toBe("<b>3:2</b>");
    expect(c.querySelector("b")).toBe(null);
    expect(c.style.background).toBe("rgb(3, 60, 0)");
    expect(c.style.color).toBe("rgb(255, 255, 255)"); // dark background: white text
    expect(c.style.left).toBe(`${2 * CELL_W}px`);
    expect(c.style.top).toBe(`${3 * CELL_H}px`);
    expect(c.dataset.row).toBe("3");
    expect(at(root, 5, 0).classList.contains("five")).toBe(true);
    expect(at(root, 40, 0)).toBe(null);
    expect(root.querySelector(".tt-corner").textContent).toBe("r \\ c");
    expect(root.querySelector(".tt-colhead .tt-h[data-col='2']").classList.contains("tt-hi")).toBe(true);
    expect(root.querySelector(".tt-colhead .tt-h[data-col='1']").classList.contains("tt-hi")).toBe(false);
  });
  it("shows the tooltip on hover and picks on click; clicking the pinned cell unpins", () => {
    const { root, state } = makeGrid();
    at(root, 4, 1).dispatchEvent(new MouseEvent("mousemove", { bubbles: true, clientX: 3, clientY: 3 }));
    const tip = root.querySelector(".mri-tooltip");
    expect(tip.style.display).toBe("block");
    expect(tip.textContent).toBe("cell 4,1");
    expect(state.hovers).toEqual([{ r: 4, c: 1 }]);
    root.querySelector(".tt-body").dispatchEvent(new MouseEvent("mouseleave"));
    expect(tip.style.display).toBe("none");
    at(root, 4, 1).click();
    expect(state.picks).toEqual([{ r: 4, c: 1 }]);
    expect(at(root, 4, 1).classList.contains("tt-pinned")).toBe(true);
    expect(root.querySelector(".tt-rowhead .tt-h[data-row='4']").classList.contains("tt-hi")).toBe(true);
    at(root, 4, 1).click();
    expect(state.picks.at(-1)).toBe(null);
    expect(root.querySelector(".tt-pinned")).toBe(null);
  });
  it("moves the pinned cell with the keys and ignores other keys", () => {
    const { root, state } = makeGrid();
    const body = root.querySelector(".tt-body");
    body.dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowDown", bubbles: true }));
    expect(state.pinned).toEqual({ r: 1, c: 0 });
    body.dispatchEvent(new KeyboardEvent("keydown", { key: "End", bubbles: true }));
    expect(state.pinned).toEqual({ r: 1, c: 7 });
    body.dispatchEvent(new KeyboardEvent("keydown", { key: "x", bubbles: true }));
    expect(state.picks.length).toBe(2);
    expect(body.getAttribute("data-lm-suppress-shortcuts")).toBe("true");
  });
  it("starts at a given scroll and reports scrolling", () => {
    const seen = [];
    const { root } = makeGrid({ scroll: { top: 60 * CELL_H, left: 0 }, onScroll: (t, l) => seen.push([t, l]) });
    const body = root.querySelector(".tt-body");
    expect(body.scrollTop).toBe(60 * CELL_H);
    body.scrollTop = 10;
    body.dispatchEvent(new Event("scroll"));
    expect(seen.at(-1)).toEqual([10, 0]);
  });
});
