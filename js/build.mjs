// Bundle each view in src/views/ into mri_widgets/static/<view>.js (ES modules for anywidget).
// `node build.mjs --check` rebuilds into memory and fails if the committed bundles differ.
import * as esbuild from "esbuild";
import { readdirSync, readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { join, basename } from "node:path";

const here = new URL(".", import.meta.url).pathname;
const views = join(here, "src", "views");
const out = join(here, "..", "mri_widgets", "static");
const check = process.argv.includes("--check");
mkdirSync(out, { recursive: true });

const entries = readdirSync(views).filter((f) => f.endsWith(".js")).sort();
// other bundles: the host of pages saved with save_html
const extra = { "share_host.js": join(here, "src", "share", "main.js") };
const stale = [];
for (const f of [...entries, ...Object.keys(extra)]) {
  const result = await esbuild.build({
    entryPoints: [extra[f] ?? join(views, f)],
    bundle: true,
    format: "esm",
    minify: true,
    target: "es2020",
    legalComments: "none",
    write: false,
    logLevel: "warning",
  });
  const code = result.outputFiles[0].text;
  const target = join(out, basename(f));
  if (check) {
    let old = "";
    try { old = readFileSync(target, "utf8"); } catch {}
    if (old !== code) stale.push(basename(f));
  } else {
    writeFileSync(target, code);
    console.log(`${basename(f)}: ${(code.length / 1024).toFixed(1)} KiB`);
  }
}
const css = readFileSync(join(here, "src", "style.css"), "utf8");
const cssTarget = join(out, "mri.css");
if (check) {
  let old = "";
  try { old = readFileSync(cssTarget, "utf8"); } catch {}
  if (old !== css) stale.push("mri.css");
  if (stale.length) {
    console.error(`stale bundles (run: cd js && npm run build): ${stale.join(", ")}`);
    process.exit(1);
  }
  console.log(`bundles match their sources (${entries.length} views)`);
} else {
  writeFileSync(cssTarget, css);
}
