"""Batch jobs over a corpus file: resumable, and distributed over ``torchrun`` processes.

A job reads its corpus as a stream (:class:`~mri_widgets.jobs.sources.CorpusSource`) in chunks of
``checkpoint_every`` texts. Each chunk is scanned on its own (:meth:`NeuronScan.run
<mri_widgets.analysis.neurons.NeuronScan.run>`, or pooled activations for activation regions)
and folded into the running state in chunk order (:meth:`NeuronScan.merge
<mri_widgets.analysis.neurons.NeuronScan.merge>`, or appended to the pooled vectors). After
each chunk the running state is checkpointed atomically (written, then renamed), so a job
killed at any point continues from its last checkpoint when run again with the same arguments.

Under ``torchrun`` each process (rank) scans every ``world_size``-th chunk on its own device;
rank 0 gathers the chunk results of each round and folds them in chunk order, exactly as one
process would: the result does not depend on the number of processes.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from itertools import islice
from typing import Callable, Optional

import numpy as np

from .sources import CorpusSource

__all__ = ["JobSpec", "JobError", "JobCancelled", "run_job", "checkpoint_dir"]

#: test hook: seconds to sleep after each chunk (lets a test kill a job in the middle)
_DELAY_ENV = "MRI_WIDGETS_TEST_CHUNK_DELAY"
_STATE_VERSION = 1


class JobError(ValueError):
    """A job that cannot start or continue (bad arguments, a checkpoint of other arguments)."""


class JobCancelled(RuntimeError):
    """The job was cancelled; its last checkpoint is kept, and running it again continues from there."""


@dataclass
class JobSpec:
    """Everything a job needs. ``kind`` is ``"scan"`` (a NeuronScan) or ``"areas"`` (ActivationAreas).

    Parameters
    ----------
    kind : ``"scan"`` or ``"areas"``.
    model : a model id, a local folder or ``"demo"`` (or a loaded model, in one process).
    corpus : a :class:`~mri_widgets.jobs.sources.CorpusSource`.
    out : the ``.npz`` file to write.
    dtype, device, device_map : how to load the model (see :func:`mri_widgets.load`).
    layers : layer selection (``None`` for all, or ``"0-3"``, ``"1,5"``, a list ...).
    k : examples per neuron and list (scan).
    max_length : tokens kept per text (None: all).
    batch_tokens : tokens per batch, padding included (None: the capture's memory budget).
    checkpoint_every : texts per chunk; the state is checkpointed after every chunk (every round
        of ``world_size`` chunks under torchrun). It also fixes how texts are batched, so it is
        part of the job's identity.
    keep_texts : store the texts in a scan file (the viewer needs them).
    site, pool : capture site and pooling (areas).
    reduction, grid, n_components, seed : the reduction of the pooled vectors (areas; applied at
        the end, so they may change between a run and its resumption).
    checkpoint : folder of the running state (default: ``out`` + ``".ckpt"``).
    """

    kind: str
    model: object
    corpus: CorpusSource
    out: str
    dtype: Optional[str] = None
    device: Optional[str] = None
    device_map: Optional[str] = None
    layers: object = None
    k: int = 16
    max_length: Optional[int] = None
    batch_tokens: Optional[int] = None
    checkpoint_every: int = 1024
    keep_texts: bool = True
    site: str = "resid"
    pool: str = "mean"
    reduction: str = "pca"
    grid: int = 10
    n_components: int = 2
    seed: int = 0
    checkpoint: Optional[str] = None

    def __post_init__(self):
        from .._checks import check_choice, check_int

        check_choice(self.kind, ("scan", "areas"), "kind", error=JobError)
        self.k = check_int(self.k, "k", min=1, error=JobError)
        self.checkpoint_every = check_int(self.checkpoint_every, "checkpoint_every", min=1, error=JobError,
                                          hint=" (texts per chunk and checkpoint)")
        if self.max_length is not None:
            self.max_length = check_int(self.max_length, "max_length", min=1, error=JobError)
        if self.batch_tokens is not None:
            self.batch_tokens = check_int(self.batch_tokens, "batch_tokens", min=1, error=JobError)
        if not isinstance(self.corpus, CorpusSource):
            raise TypeError(f"corpus must be a CorpusSource, got {type(self.corpus).__name__}")
        self.out = os.fspath(self.out)

    def fingerprint(self) -> dict:
        """The arguments that shape the running state; a checkpoint is only continued with equal ones."""
        model = self.model
        if not isinstance(model, (str, os.PathLike)):  # a loaded model: its name
            model = getattr(model, "name", None) or type(model).__name__
        elif os.fspath(model) not in ("demo", "demo-encoder") and os.path.isdir(model):
            model = os.path.abspath(model)
        else:
            model = os.fspath(model)
        layers = self.layers if self.layers is None or isinstance(self.layers, (str, int)) else list(self.layers)
        fp = {"kind": self.kind, "model": model, "dtype": self.dtype, "corpus": self.corpus.describe(),
              "layers": layers, "max_length": self.max_length, "batch_tokens": self.batch_tokens,
              "checkpoint_every": self.checkpoint_every}
        if self.kind == "scan":
            fp["k"] = self.k
        else:
            fp.update(site=self.site, pool=self.pool)
        return json.loads(json.dumps(fp))  # as it reads back from the file


def checkpoint_dir(spec: JobSpec) -> str:
    """The folder holding a job's running state."""
    return spec.checkpoint or spec.out + ".ckpt"


# ---- distributed helpers --------------------------------------------------------------------------
class _Group:
    """The processes of a job: one (no torch.distributed) or the ranks of a torchrun launch."""

    def __init__(self, backend: Optional[str] = None):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self._own = False
        self.objects = None
        if self.world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group(backend=backend)
                self._own = True
            # chunk results travel as Python objects, over gloo whatever the main backend
            self.objects = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else None

    def gather(self, obj) -> Optional[list]:
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world if self.rank == 0 else None
        dist.gather_object(obj, out, dst=0, group=self.objects)
        return out

    def broadcast(self, obj):
        if self.world == 1:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self.objects)
        return box[0]

    def all_ok(self, error: Optional[str]) -> None:
        """Raise on every rank when any rank reports an error."""
        if self.world == 1:
            if error:
                raise JobError(error)
            return
        import torch.distributed as dist

        errors = [None] * self.world
        dist.all_gather_object(errors, error, group=self.objects)
        bad = [(r, e) for r, e in enumerate(errors) if e]
        if bad:
            raise JobError("; ".join(f"rank {r}: {e}" for r, e in bad))

    def close(self):
        if self._own:
            import torch.distributed as dist

            dist.destroy_process_group()


# ---- the checkpoint -------------------------------------------------------------------------------
def _write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_checkpoint(folder: str, fp: dict) -> Optional[dict]:
    """The saved progress of a job with fingerprint ``fp`` (None when there is none)."""
    path = os.path.join(folder, "job.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
        old = saved["fingerprint"]
        int(saved["chunks_done"])
    except (ValueError, KeyError, TypeError, OSError) as e:
        raise JobError(f"the checkpoint {path!r} is unreadable ({e}); delete the folder {folder!r} to start over") from None
    if old != fp:
        diff = [f"{k}: checkpoint {old.get(k)!r}, now {fp.get(k)!r}"
                for k in sorted(set(old) | set(fp)) if old.get(k) != fp.get(k)]
        raise JobError(f"the checkpoint in {folder!r} belongs to a job with other arguments ("
                       + "; ".join(diff) + "). Run again with the checkpoint's arguments to continue it, or delete "
                       f"{folder!r} (or pass another --checkpoint folder) to start over")
    return saved


class _State:
    """Rank 0's running state: folds chunk results in order and checkpoints them."""

    def __init__(self, spec: JobSpec, fp: dict, saved: Optional[dict]):
        self.spec, self.fp = spec, fp
        self.folder = checkpoint_dir(spec)
        self.chunks = self.texts = self.tokens = 0
        self.scan = None
        self.layer_ids = self.d = None
        self.model_name = None
        os.makedirs(self.folder, exist_ok=True)
        self.pooled_path = os.path.join(self.folder, "pooled.f32")
        if saved is not None:
            self.chunks, self.texts, self.tokens = saved["chunks_done"], saved["texts_done"], saved["tokens_done"]
            self.layer_ids, self.d, self.model_name = saved.get("layer_ids"), saved.get("d"), saved.get("model_name")
            if spec.kind == "scan" and saved.get("state"):
                from ..analysis.neurons import NeuronScan

                self.scan = NeuronScan.load(os.path.join(self.folder, saved["state"]))
            if spec.kind == "areas":  # drop what was appended after the last checkpoint
                with open(self.pooled_path, "ab") as f:
                    f.truncate(int(saved.get("pooled_bytes", 0)))
        elif spec.kind == "areas":
            open(self.pooled_path, "wb").close()

    def fold(self, result) -> None:
        n, tokens, payload, extra = result
        if self.spec.kind == "scan":
            from ..analysis.neurons import NeuronScan

            self.scan = payload if self.scan is None else NeuronScan.merge(self.scan, payload)
        else:
            layer_ids, pooled = extra["layer_ids"], payload
            if self.layer_ids is None:
                self.layer_ids, self.d = layer_ids, int(pooled.shape[2])
            with open(self.pooled_path, "ab") as f:
                f.write(np.ascontiguousarray(pooled, dtype="<f4").tobytes())
        self.model_name = self.model_name or extra.get("model_name")
        self.chunks += 1
        self.texts += n
        self.tokens += tokens

    def save(self) -> None:
        """Checkpoint: data first (a new file, or appended bytes made durable), then job.json by rename."""
        info = {"version": _STATE_VERSION, "fingerprint": self.fp, "chunks_done": self.chunks,
                "texts_done": self.texts, "tokens_done": self.tokens, "layer_ids": self.layer_ids, "d": self.d,
                "model_name": self.model_name}
        old = None
        if self.spec.kind == "scan" and self.scan is not None:
            name = f"state-{self.chunks:08d}.npz"
            tmp = os.path.join(self.folder, name + ".tmp")
            self.scan.save(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, os.path.join(self.folder, name))
            info["state"] = name
            old = [f for f in os.listdir(self.folder) if f.startswith("state-") and f != name]
        elif self.spec.kind == "areas":
            with open(self.pooled_path, "ab") as f:
                f.flush()
                os.fsync(f.fileno())
            info["pooled_bytes"] = os.path.getsize(self.pooled_path)
        _write_json(os.path.join(self.folder, "job.json"), info)
        for f in old or []:  # states older than the one job.json now names
            os.remove(os.path.join(self.folder, f))

    def pooled(self) -> np.ndarray:
        n_layers = len(self.layer_ids)
        return np.fromfile(self.pooled_path, dtype="<f4").reshape(self.texts, n_layers, self.d)


# ---- one chunk --------------------------------------------------------------------------------
def _scan_chunk(lm, spec: JobSpec, texts: list):
    """``(n_texts, n_tokens, payload, extra)`` for one chunk of texts."""
    if spec.kind == "scan":
        from ..analysis.neurons import NeuronScan

        s = NeuronScan.run(lm, texts, k=spec.k, layers=spec.layers, max_length=spec.max_length, keep_texts=False,
                           progress=False, batch_tokens=spec.batch_tokens)
        return len(texts), s.n_tokens, s, {"model_name": lm.name}
    import torch

    from ..analysis.areas import pool_batch

    store: dict = {"tokens": 0}

    def reducer(batch):
        pooled = pool_batch(batch.acts[spec.site], batch.mask, spec.pool).cpu().numpy()
        if "x" not in store:
            store["x"] = np.empty((len(texts),) + pooled.shape[1:], np.float32)
            store["layers"] = [int(l) for l in batch.layers[spec.site]]
        store["x"][batch.indices] = pooled
        store["tokens"] += int(batch.mask.sum())

    with torch.inference_mode():
        lm.capture(texts, (spec.site,), reducer=reducer, layers=spec.layers, max_length=spec.max_length,
                   progress=False, batch_tokens=spec.batch_tokens)
    return len(texts), store["tokens"], store["x"], {"layer_ids": store["layers"], "model_name": lm.name}


def _load_model(spec: JobSpec, group: _Group):
    from ..models.loading import load

    device = spec.device
    if device is None and group.world > 1 and spec.device_map is None:
        import torch

        if torch.cuda.is_available():  # one GPU per process of the node
            device = f"cuda:{group.local_rank}"
    kw = {} if spec.device_map is None else {"device_map": spec.device_map}
    return load(spec.model, device=device, dtype=spec.dtype, **kw)


def _chunks(source: CorpusSource, size: int):
    it = iter(source)
    while True:
        chunk = list(islice(it, size))
        if not chunk:
            return
        yield chunk


# ---- the job --------------------------------------------------------------------------------------
def run_job(spec: JobSpec, *, progress: Optional[bool] = None, cancel=None,
            on_progress: Optional[Callable[[dict], None]] = None, backend: Optional[str] = None):
    """Run (or continue) a job; returns the NeuronScan or ActivationAreas on rank 0, None on other ranks.

    Parameters
    ----------
    spec : JobSpec
    progress : show a tqdm bar (texts, tokens per second, ETA) on rank 0; default True.
    cancel : an object with ``is_set()`` (a ``threading.Event``) checked after every chunk; when
        set, the job stops after its checkpoint and raises :class:`JobCancelled`.
    on_progress : called on rank 0 after every round with ``texts``, ``total`` (None when unknown),
        ``tokens``, ``tokens_per_s``, ``eta_s`` (None when unknown).
    backend : torch.distributed backend under torchrun (default: torch's choice for the device).

    The result is written to ``spec.out`` (atomically) and the checkpoint folder removed.
    """
    from tqdm.auto import tqdm

    group = _Group(backend)
    try:
        fp = spec.fingerprint()
        start, error = None, None
        state = None
        if group.rank == 0:
            try:
                saved = _read_checkpoint(checkpoint_dir(spec), fp)
                out_dir = os.path.dirname(os.path.abspath(spec.out))
                if not os.path.isdir(out_dir):
                    raise JobError(f"the folder of --out {spec.out!r} does not exist; create it first")
                state = _State(spec, fp, saved)
                start = state.chunks
            except (JobError, OSError, ValueError) as e:
                error = str(e)
        start, error = group.broadcast((start, error))
        if error:
            raise JobError(error)
        lm, error = None, None
        try:
            lm = _load_model(spec, group)
        except Exception as e:  # every rank must learn of it, or the others wait forever
            error = f"{type(e).__name__}: {e}"
            if group.world == 1:
                raise
        group.all_ok(error)

        total = None
        bar = None
        t0 = time.perf_counter()
        tokens_run = texts_run = 0  # this run's, for the rates
        if group.rank == 0:
            total = spec.corpus.count()
            show = True if progress is None else bool(progress)
            bar = tqdm(total=total, initial=state.texts, unit="text", desc=spec.kind, disable=not show,
                       dynamic_ncols=True, smoothing=0.1)
            bar.set_postfix_str(f"{state.tokens:,} tokens")
        delay = float(os.environ.get(_DELAY_ENV, "0") or 0)
        chunks = _chunks(spec.corpus, spec.checkpoint_every)
        skip = start  # chunks already folded into the checkpoint
        for _ in islice(chunks, skip):
            pass
        done = False
        while not done:
            round_chunks = list(islice(chunks, group.world))  # every rank reads the same stream
            mine = round_chunks[group.rank] if group.rank < len(round_chunks) else None
            result, error = None, None
            if mine is not None:
                try:
                    result = _scan_chunk(lm, spec, [t for t, _ in mine])
                except Exception as e:
                    error = f"{type(e).__name__}: {e}"
                    if group.world == 1:
                        raise
            gathered = group.gather((result, error))
            stop = None
            if group.rank == 0:
                errors = [f"rank {r}: {e}" for r, (_, e) in enumerate(gathered) if e]
                if errors:
                    stop = "error: " + "; ".join(errors)
                else:
                    for res, _ in gathered:
                        if res is not None:
                            state.fold(res)
                            tokens_run += res[1]
                    if any(res is not None for res, _ in gathered):
                        state.save()
                    n_round = sum(res[0] for res, _ in gathered if res is not None)
                    texts_run += n_round
                    elapsed = max(time.perf_counter() - t0, 1e-9)
                    rate = tokens_run / elapsed
                    bar.set_postfix_str(f"{rate:,.0f} tok/s, {state.tokens:,} tokens", refresh=False)
                    bar.update(n_round)
                    if on_progress is not None:
                        eta = ((total - state.texts) * elapsed / texts_run) if total and texts_run else None
                        on_progress({"texts": state.texts, "total": total, "tokens": state.tokens,
                                     "tokens_per_s": rate, "eta_s": eta})
                    if len(round_chunks) < group.world or len(round_chunks[-1]) < spec.checkpoint_every:
                        stop = "done"
                    elif cancel is not None and cancel.is_set():
                        stop = "cancel"
            stop = group.broadcast(stop)
            if stop and stop.startswith("error: "):
                raise JobError(stop[len("error: "):])
            if stop == "cancel":
                raise JobCancelled(f"cancelled after {state.texts if state else '?'} texts; the checkpoint in "
                                   f"{checkpoint_dir(spec)!r} is kept: run the job again to continue")
            done = stop == "done"
            if delay and not done:
                time.sleep(delay)
        if bar is not None:
            bar.close()
        if group.rank != 0:
            return None
        return _finish(spec, state, lm)
    finally:
        group.close()


def _finish(spec: JobSpec, state: _State, lm):
    """Build the result with the texts (read again from the corpus), write it, drop the checkpoint."""
    if state.texts == 0:
        raise JobError(f"the corpus {spec.corpus.source!r} holds no text")
    records = list(spec.corpus) if (spec.kind == "areas" or spec.keep_texts) else None
    if records is not None and len(records) != state.texts:
        raise JobError(f"the corpus {spec.corpus.source!r} now holds {len(records)} texts, but the job scanned "
                       f"{state.texts}: it changed while the job ran; delete {checkpoint_dir(spec)!r} and start over")
    if spec.kind == "scan":
        from ..analysis.neurons import NeuronScan

        s = state.scan
        result = NeuronScan(layers=s.layers, d_mlp=s.d_mlp, k=s.k, n_texts=s.n_texts, n_tokens=s.n_tokens,
                            gated=s.gated, arrays={n: getattr(s, n) for n in _scan_arrays()},
                            model_name=s.model_name, max_length=s.max_length,
                            texts=[t for t, _ in records] if records is not None else None,
                            n_model_layers=s.n_model_layers)
    else:
        from ..analysis.areas import ActivationAreas
        from ..corpus import Corpus

        labels = [("all" if y is None else y) for _, y in records]
        corpus = Corpus([t for t, _ in records], labels)
        result = ActivationAreas.from_pooled(corpus, state.pooled(), state.layer_ids, site=spec.site, pool=spec.pool,
                                             reduction=spec.reduction, grid=spec.grid,
                                             n_components=spec.n_components, seed=spec.seed, model=lm,
                                             progress=False)
    tmp = spec.out + ".tmp"
    result.save(tmp)
    os.replace(tmp, spec.out)
    shutil.rmtree(checkpoint_dir(spec), ignore_errors=True)
    return result


def _scan_arrays():
    from ..analysis.neurons import _ARRAYS

    return list(_ARRAYS)
