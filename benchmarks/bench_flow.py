"""Information-flow graph (VISIT): what building it costs against one unembedding matmul.

On the demo model when installed (else a small random Llama), for a short prompt and the
default layers (the last 2) and counts (10 heads, 18 + 7 neurons, 3 keys per head):

- ``flow_ratio``: :func:`mri_widgets.flow_graph` against one unembedding matmul of all the
  graph's node vectors at once (final norm + LM head on an (n_nodes, d_model) batch), the floor
  for reading every node;
- ``first_call_ratio``: the first call (the attention weights are read from the adapters'
  named projections, so nothing is probed or cached any more);
- ``forward_ratio``: the flow capture (one engine capture of the prompt, eager attention,
  logits of every position) against a plain forward pass;
- ``rebuild_ratio``: rebuilding the graph from a cached capture (what :class:`FlowGraph` does
  when the position or the target changes) against the same unembedding matmul.

Prints ratios measured in one run; never a timed test.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch

from _common import bench_model, best_of

PROMPT = "The Eiffel Tower is in the city of Paris. The Colosseum is in the city of"


def main() -> dict:
    from mri_widgets.analysis.flow import _layers, build_flow_graph, capture_flow, flow_graph, head_weights

    lm = bench_model()
    layers = _layers(lm, None)

    t0 = time.perf_counter()
    G = flow_graph(lm, PROMPT)
    t_first = time.perf_counter() - t0

    t_flow = best_of(lambda: flow_graph(lm, PROMPT))
    V = torch.from_numpy(np.stack([a["vector"] for _, a in G.nodes(data=True)]))
    t_unembed = best_of(lambda: lm.unembed(V))

    enc = lm.encode(PROMPT)

    def plain():
        with torch.inference_mode():
            lm.model(**enc)

    t_plain = best_of(plain)
    t_capture = best_of(lambda: capture_flow(lm, PROMPT, layers))
    cap = capture_flow(lm, PROMPT, layers)
    maps = head_weights(lm, layers)
    t_rebuild = best_of(lambda: build_flow_graph(lm, cap, maps, position=cap.seq_len - 1, target_id=None,
                                                 top_heads=10, top_neurons=18, bottom_neurons=7, top_keys=3))
    out = {"model": lm.name, "n_nodes": G.number_of_nodes(), "n_edges": G.number_of_edges(),
           "layers": layers, "unembed_s": t_unembed, "flow_s": t_flow,
           "flow_ratio": t_flow / t_unembed, "first_call_ratio": t_first / t_unembed,
           "forward_ratio": t_capture / t_plain, "rebuild_ratio": t_rebuild / t_unembed}
    print(f"[flow] {lm.name}: {out['n_nodes']} nodes, {out['n_edges']} edges, layers {layers}; "
          f"flow_graph {out['flow_ratio']:.1f}x one unembedding of all node vectors "
          f"(first call {out['first_call_ratio']:.1f}x); "
          f"hooked forward {out['forward_ratio']:.2f}x a plain forward; "
          f"rebuild from a cached capture {out['rebuild_ratio']:.1f}x")
    return out


if __name__ == "__main__":
    main()
