"""Run every benchmark in this folder and print the ratios they measure (one command: make bench).

Benchmarks report ratios measured within one run (these machines are noisy); they are never
timed tests. Figures are also written to benchmarks/results/latest.json.
"""

from __future__ import annotations

import importlib
import json
import sys
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main(names=None) -> dict:
    results = {}
    mods = sorted(p.stem for p in HERE.glob("bench_*.py"))
    for name in mods:
        if names and name not in names and name.removeprefix("bench_") not in names:
            continue
        try:
            results[name] = importlib.import_module(name).main()
        except Exception as e:  # one failing benchmark does not hide the others
            traceback.print_exc()
            results[name] = {"error": f"{type(e).__name__}: {e}"}
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"\nwrote {out / 'latest.json'}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
