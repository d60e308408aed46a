"""The command line: ``mri-widgets scan`` and ``mri-widgets areas`` (also ``python -m mri_widgets``).

Examples
--------
::

    mri-widgets scan demo corpus.txt --k 16 --layers 0-5 --out scan.npz
    mri-widgets areas gpt2 reviews.csv --text-column review --label-column stars --out areas.npz
    torchrun --nproc-per-node 4 -m mri_widgets scan meta-llama/Llama-3.2-1B corpus.jsonl --out scan.npz

A job killed in the middle continues from its last checkpoint when run again with the same
arguments (see :mod:`mri_widgets.jobs.runner`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional

__all__ = ["main", "build_parser"]


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``mri-widgets``."""
    p = argparse.ArgumentParser(
        prog="mri-widgets",
        description="Batch jobs of mri_widgets over a corpus file: neuron scans and activation regions. "
                    "Resumable (run the same command again after an interruption) and distributed "
                    "under torchrun.")
    sub = p.add_subparsers(dest="command", required=True, metavar="{scan,areas}")
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("model")
    g.add_argument("model", help="a Hugging Face model id, a local model folder, or 'demo'")
    g.add_argument("--dtype", default=None, help="model precision: float32, float16, bfloat16 (default: the model's)")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: cpu; under torchrun with "
                                                  "GPUs: cuda:LOCAL_RANK)")
    g.add_argument("--device-map", default=None, help="passed to from_pretrained, e.g. auto (a model split over "
                                                      "the GPUs of one process)")
    g = common.add_argument_group("corpus")
    g.add_argument("corpus", help="a .txt file (one text a line), .jsonl, .csv or .parquet file, or a Hugging "
                                  "Face dataset name or folder (read as a stream; needs the datasets package)")
    g.add_argument("--text-column", default="text", help="column (key) of the texts (default: text)")
    g.add_argument("--label-column", default=None, help="column (key) of the labels")
    g.add_argument("--split", default="train", help="dataset split (default: train)")
    g.add_argument("--config", default=None, help="dataset configuration name")
    g = common.add_argument_group("job")
    g.add_argument("--layers", default=None, help="layers: 12, 0-5 (inclusive), 8:12 (end excluded) or 1,3,5-7 "
                                                  "(default: all)")
    g.add_argument("--max-length", type=_positive, default=None, help="tokens kept per text (default: all; "
                                                                      "longer texts than the model takes are an error)")
    g.add_argument("--batch-tokens", type=_positive, default=None,
                   help="tokens per batch, padding included (default: a 512 MiB activation budget)")
    g.add_argument("--checkpoint-every", type=_positive, default=1024,
                   help="texts per chunk: the running state is checkpointed after each (default: 1024)")
    g.add_argument("--checkpoint", default=None, help="checkpoint folder (default: OUT.ckpt)")
    g.add_argument("--out", required=True, help="the .npz file to write")
    g.add_argument("--backend", default=None, help="torch.distributed backend under torchrun: gloo, nccl "
                                                   "(default: torch's choice)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")

    s = sub.add_parser("scan", parents=[common], help="a NeuronScan (top/bottom examples and statistics of every "
                                                      "MLP neuron); open it with NeuronScan.load")
    s.add_argument("--k", type=_positive, default=16, help="examples kept per neuron and list (default: 16)")
    s.add_argument("--no-texts", action="store_true", help="do not store the texts in the file (the viewer then "
                                                           "needs them passed in)")
    a = sub.add_parser("areas", parents=[common], help="ActivationAreas (pooled activations per document and layer, "
                                                       "reduced and binned); open it with ActivationAreas.load")
    a.add_argument("--site", default="resid", choices=["resid", "mlp"], help="capture site (default: resid)")
    a.add_argument("--pool", default="mean", choices=["mean", "last", "first"], help="pooling (default: mean)")
    a.add_argument("--reduction", default="pca", choices=["pca", "svd", "umap"], help="(default: pca)")
    a.add_argument("--grid", type=_positive, default=10, help="bins per axis (default: 10)")
    a.add_argument("--n-components", type=_positive, default=2, help="(default: 2)")
    a.add_argument("--seed", type=int, default=0, help="random state of UMAP (default: 0)")
    return p


def spec_from_args(args):
    """A :class:`~mri_widgets.jobs.runner.JobSpec` from parsed arguments."""
    from .runner import JobSpec
    from .sources import CorpusSource

    source = CorpusSource(args.corpus, text_column=args.text_column, label_column=args.label_column,
                          split=args.split, config=args.config)
    kw = dict(kind=args.command, model=args.model, corpus=source, out=args.out, dtype=args.dtype,
              device=args.device, device_map=args.device_map, layers=args.layers, max_length=args.max_length,
              batch_tokens=args.batch_tokens, checkpoint_every=args.checkpoint_every, checkpoint=args.checkpoint)
    if args.command == "scan":
        kw.update(k=args.k, keep_texts=not args.no_texts)
    else:
        kw.update(site=args.site, pool=args.pool, reduction=args.reduction, grid=args.grid,
                  n_components=args.n_components, seed=args.seed)
    return JobSpec(**kw)


def main(argv: Optional[list] = None) -> int:
    """Run the command line; returns the exit status (0 done, 1 error, 130 interrupted)."""
    from .runner import JobCancelled, run_job

    args = build_parser().parse_args(argv)
    try:
        spec = spec_from_args(args)
        result = run_job(spec, progress=not args.no_progress, backend=args.backend)
    except KeyboardInterrupt:
        print("interrupted: run the same command again to continue from the last checkpoint", file=sys.stderr)
        return 130
    except JobCancelled as e:
        print(str(e), file=sys.stderr)
        return 130
    except (ValueError, TypeError, ImportError, FileNotFoundError, IndexError, KeyError, OSError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"mri-widgets {args.command}: error: {msg}", file=sys.stderr)
        return 1
    if result is not None:
        print(f"wrote {spec.out}: {result!r}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
