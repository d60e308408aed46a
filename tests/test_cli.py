"""The command line and its jobs: corpus files read as streams, chunked scans against in-memory ones,
checkpoints (cancel, SIGKILL, resume), and torchrun ranks against one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import types

import numpy as np
import pytest

from mri_widgets import ActivationAreas, Corpus, NeuronScan, load
from mri_widgets.analysis.neurons import _ARRAYS
from mri_widgets.jobs import CorpusFileError, CorpusSource, JobCancelled, JobError, JobSpec, run_job
from mri_widgets.jobs.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = ("the cat sat on mat a quick brown fox jumps over lazy dog happy sad angry afraid neurons fire layer "
         "model capital of France is Paris").split()


def _texts(n=23, seed=0):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(2, 12)))) for _ in range(n)]


LABELS = ("joy", "fear", "anger")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A tiny gated (Llama) model saved with save_pretrained, loadable by path."""
    from mri_widgets.testing import tiny_model

    lm = tiny_model("llama")
    path = tmp_path_factory.mktemp("model") / "tiny-llama"
    lm.model.save_pretrained(path)
    lm.tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "c.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i, t in enumerate(_texts()):
            f.write(json.dumps({"text": t, "label": LABELS[i % 3]}) + "\n")
    return str(path)


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=ROOT, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", **extra)
    return env


def _same_scan(a: NeuronScan, b: NeuronScan):
    for name in _ARRAYS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert (a.n_texts, a.n_tokens, a.layers, a.k, a.texts) == (b.n_texts, b.n_tokens, b.layers, b.k, b.texts)


# ---- corpus files ---------------------------------------------------------------------------------
def test_txt_skips_blank_lines_and_bom(tmp_path):
    p = tmp_path / "c.txt"
    p.write_bytes("\ufeffhello world\n\n  \nsecond line\r\nthird".encode("utf-8"))
    src = CorpusSource(str(p))
    assert list(src) == [("hello world", None), ("second line", None), ("third", None)]
    assert src.count() == 3


def test_txt_not_utf8_names_the_line(tmp_path):
    p = tmp_path / "c.txt"
    p.write_bytes(b"fine\ncaf\xe9\n")
    with pytest.raises(CorpusFileError, match=r"line 2 is not UTF-8"):
        list(CorpusSource(str(p)))
    with pytest.raises(CorpusFileError, match="no label column"):
        CorpusSource(str(p), label_column="label")


def test_jsonl_hostile_lines(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"text": "a b", "y": 1}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(CorpusFileError, match=r"line 2 is a JSON list, not an object"):
        list(CorpusSource(str(p), label_column="y"))
    p.write_text('{"text": "a b", "y": 1}\n{"text": "   ", "y": 2}\n', encoding="utf-8")
    with pytest.raises(CorpusFileError, match=r"line 2: .*empty or blank"):
        list(CorpusSource(str(p), label_column="y"))
    p.write_text('{"text": "a b"}\n', encoding="utf-8")
    with pytest.raises(CorpusFileError, match=r"no column 'y'.*--label-column"):
        list(CorpusSource(str(p), label_column="y"))
    p.write_text('{"body": "a b"}\n', encoding="utf-8")
    with pytest.raises(CorpusFileError, match=r"no column 'text'.*--text-column"):
        list(CorpusSource(str(p)))
    p.write_text('{"text": "a b", "y": null}\n', encoding="utf-8")
    with pytest.raises(CorpusFileError, match="label 'y' is missing"):
        list(CorpusSource(str(p), label_column="y"))
    p.write_text('{"text": "a \\ud83d b"}\n', encoding="utf-8")
    with pytest.raises(CorpusFileError, match="lone surrogate"):
        list(CorpusSource(str(p)))


def test_csv_streams_rows_as_text(tmp_path, monkeypatch):
    import mri_widgets.jobs.sources as sources

    monkeypatch.setattr(sources, "_BLOCK_ROWS", 2)  # several blocks
    p = tmp_path / "c.csv"
    p.write_text('review,stars\n"good, really",05\nbad,1\nok,3\n"multi\nline",2\nlast,4\n', encoding="utf-8")
    src = CorpusSource(str(p), text_column="review", label_column="stars")
    assert list(src) == [("good, really", "05"), ("bad", "1"), ("ok", "3"), ("multi\nline", "2"), ("last", "4")]
    assert src.count() == 5
    p.write_text("review,stars\ngood,5\nbad,\n", encoding="utf-8")
    with pytest.raises(CorpusFileError, match=r"row 2 \(line 3\): the label 'stars' is missing"):
        list(CorpusSource(str(p), text_column="review", label_column="stars"))


def test_unknown_files_and_optional_packages(tmp_path, monkeypatch):
    (tmp_path / "c.xlsx").write_text("x")
    with pytest.raises(CorpusFileError, match="unknown corpus format '.xlsx'"):
        CorpusSource(str(tmp_path / "c.xlsx"))
    with pytest.raises(FileNotFoundError, match="no such corpus file"):
        CorpusSource(str(tmp_path / "missing.csv"))
    (tmp_path / "c.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match="pip install pyarrow"):
        list(CorpusSource(str(tmp_path / "c.parquet")))
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ImportError, match="pip install datasets"):
        list(CorpusSource("someone/some-dataset"))


def test_dataset_streamed_with_class_names(monkeypatch):
    calls = []

    class Stream:
        features = {"label": types.SimpleNamespace(names=["neg", "pos"])}

        def __iter__(self):
            yield {"text": "awful", "label": 0}
            yield {"text": "great", "label": 1}

    def load_dataset(*args, split, streaming):
        calls.append((args, split, streaming))
        return Stream()

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    src = CorpusSource("user/reviews", label_column="label", split="test", config="en")
    assert list(src) == [("awful", "neg"), ("great", "pos")]
    assert calls == [(("user/reviews", "en"), "test", True)]
    assert src.count() is None


# ---- jobs in one process --------------------------------------------------------------------------
def _scan_args(tiny_dir, corpus, out, *extra):
    return ["scan", tiny_dir, corpus, "--k", "4", "--checkpoint-every", "5", "--out", str(out), "--no-progress",
            *extra]


def test_cli_scan_is_the_fold_of_chunk_scans(tiny_dir, corpus_file, tmp_path):
    out = tmp_path / "scan.npz"
    assert main(_scan_args(tiny_dir, corpus_file, out, "--layers", "0,2")) == 0
    got = NeuronScan.load(out)
    assert not os.path.exists(str(out) + ".ckpt")
    texts = _texts()
    lm = load(tiny_dir)
    # brute force: scan each chunk of 5 texts in memory and merge in order
    want = None
    for i in range(0, len(texts), 5):
        s = NeuronScan.run(lm, texts[i:i + 5], k=4, layers=[0, 2], progress=False)
        want = s if want is None else NeuronScan.merge(want, s)
    want.texts = texts
    _same_scan(got, want)
    # and the same examples as one in-memory scan of the whole corpus (values up to batching rounding)
    whole = NeuronScan.run(lm, texts, k=4, layers=[0, 2], progress=False)
    for name in ("top_texts", "top_positions", "bottom_texts", "bottom_positions", "n_positive", "hist"):
        np.testing.assert_array_equal(getattr(got, name), getattr(whole, name), err_msg=name)
    np.testing.assert_allclose(got.top_values, whole.top_values, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.act_sum, whole.act_sum, rtol=1e-5, atol=1e-5)


def test_cli_areas_file_loads_as_the_in_memory_areas(tiny_dir, corpus_file, tmp_path):
    out = tmp_path / "areas.npz"
    args = ["areas", tiny_dir, corpus_file, "--label-column", "label", "--checkpoint-every", "7", "--grid", "3",
            "--out", str(out), "--no-progress"]
    assert main(args) == 0
    got = ActivationAreas.load(out)
    texts = _texts()
    labels = [LABELS[i % 3] for i in range(len(texts))]
    want = ActivationAreas(load(tiny_dir), Corpus(texts, labels), grid=3, progress=False)
    assert got.corpus.texts == texts and got.corpus.labels == labels
    assert got.layer_ids == want.layer_ids and got.grid_size == 3
    np.testing.assert_allclose(got.pooled, want.pooled, rtol=1e-5, atol=1e-5)
    # a saved file reloads to the same regions
    again = tmp_path / "again.npz"
    got.save(again)
    back = ActivationAreas.load(again)
    np.testing.assert_array_equal(back.pooled, got.pooled)
    np.testing.assert_array_equal(back.region_ids, got.region_ids)
    np.testing.assert_array_equal(back.counts(), got.counts())


def test_areas_load_rejects_other_files(tmp_path, corpus_file, tiny_dir):
    p = tmp_path / "x.npz"
    p.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not an ActivationAreas file"):
        ActivationAreas.load(p)
    scan = tmp_path / "scan.npz"
    assert main(_scan_args(tiny_dir, corpus_file, scan)) == 0
    with pytest.raises(ValueError, match=r"not an ActivationAreas file .*unexpected or repeated member"):
        ActivationAreas.load(scan)


def _spec(tiny_dir, corpus_file, out, **kw):
    kw = {"k": 4, "checkpoint_every": 5, **kw}
    return JobSpec(kind="scan", model=tiny_dir, corpus=CorpusSource(corpus_file), out=str(out), **kw)


def test_cancel_keeps_a_checkpoint_that_resumes_exactly(tiny_dir, corpus_file, tmp_path):
    full = tmp_path / "full.npz"
    whole = run_job(_spec(tiny_dir, corpus_file, full), progress=False)
    out = tmp_path / "part.npz"
    cancel = threading.Event()
    seen = []

    def on_progress(p):
        seen.append(p)
        if p["texts"] >= 10:
            cancel.set()

    with pytest.raises(JobCancelled, match="run the job again"):
        run_job(_spec(tiny_dir, corpus_file, out), progress=False, cancel=cancel, on_progress=on_progress)
    assert [p["texts"] for p in seen] == [5, 10] and seen[-1]["total"] == 23
    assert not out.exists()
    saved = json.loads((tmp_path / "part.npz.ckpt" / "job.json").read_text())
    assert saved["chunks_done"] == 2 and saved["texts_done"] == 10
    # other arguments: refused, naming what differs; the checkpoint stays
    with pytest.raises(JobError, match=r"other arguments \(k: checkpoint 4, now 5\)"):
        run_job(_spec(tiny_dir, corpus_file, out, k=5), progress=False)
    with pytest.raises(JobError, match=r"checkpoint_every: checkpoint 5, now 6"):
        run_job(_spec(tiny_dir, corpus_file, out, checkpoint_every=6), progress=False)
    seen.clear()
    resumed = run_job(_spec(tiny_dir, corpus_file, out), progress=False, on_progress=seen.append)
    assert [p["texts"] for p in seen] == [15, 20, 23]  # continued, not restarted
    _same_scan(resumed, whole)
    _same_scan(NeuronScan.load(out), NeuronScan.load(full))


def test_cli_errors_are_one_clear_line(tiny_dir, tmp_path, capsys):
    bad = tmp_path / "c.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": 3}\n', encoding="utf-8")
    assert main(["scan", tiny_dir, str(bad), "--out", str(tmp_path / "o.npz"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "mri-widgets scan: error:" in err and "line 2" in err and "not a string" in err
    assert main(["areas", tiny_dir, str(tmp_path / "none.csv"), "--out", str(tmp_path / "o.npz")]) == 1
    assert "no such corpus file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["scan", tiny_dir, str(bad), "--out", "o.npz", "--k", "0"])
    assert "expected a positive integer" in capsys.readouterr().err


# ---- a process killed in the middle ---------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["scan", "areas"])
def test_sigkill_then_resume_equals_an_uninterrupted_run(kind, tiny_dir, corpus_file, tmp_path):
    if kind == "scan":
        extra = ["--k", "4", "--layers", "1-2"]
    else:
        extra = ["--label-column", "label", "--grid", "3"]
    def args(out):
        return [kind, tiny_dir, corpus_file, "--checkpoint-every", "4", "--out", str(out), "--no-progress", *extra]

    killed = tmp_path / "killed.npz"
    ckpt = tmp_path / "killed.npz.ckpt" / "job.json"
    proc = subprocess.Popen([sys.executable, "-m", "mri_widgets", *args(killed)], cwd=ROOT,
                            env=_env(MRI_WIDGETS_TEST_CHUNK_DELAY="0.5"), stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if ckpt.exists() and json.loads(ckpt.read_text())["chunks_done"] >= 2:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not killed.exists()
    done = json.loads(ckpt.read_text())["texts_done"]
    assert 8 <= done < 23
    # run again with the same arguments: it continues from the checkpoint
    r = subprocess.run([sys.executable, "-m", "mri_widgets", *args(killed)], cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert not ckpt.parent.exists()
    whole = tmp_path / "whole.npz"
    r = subprocess.run([sys.executable, "-m", "mri_widgets", *args(whole)], cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    if kind == "scan":
        _same_scan(NeuronScan.load(killed), NeuronScan.load(whole))
    else:
        a, b = ActivationAreas.load(killed), ActivationAreas.load(whole)
        np.testing.assert_array_equal(a.pooled, b.pooled)
        np.testing.assert_array_equal(a.region_ids, b.region_ids)
        assert a.corpus.labels == b.corpus.labels


# ---- torchrun --------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["scan", "areas"])
def test_torchrun_two_ranks_equal_one_process(kind, tiny_dir, corpus_file, tmp_path):
    extra = ["--k", "3"] if kind == "scan" else ["--label-column", "label", "--grid", "3", "--site", "mlp"]

    def args(out):
        return [kind, tiny_dir, corpus_file, "--checkpoint-every", "3", "--out", str(out), "--no-progress",
                "--backend", "gloo", *extra]

    one, two = tmp_path / "one.npz", tmp_path / "two.npz"
    r = subprocess.run([sys.executable, "-m", "mri_widgets", *args(one)], cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    r = subprocess.run([*torchrun, "-m", "mri_widgets", *args(two)], cwd=ROOT, env=_env(), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("wrote ") == 1  # rank 0 alone writes
    if kind == "scan":
        _same_scan(NeuronScan.load(one), NeuronScan.load(two))
    else:
        a, b = ActivationAreas.load(one), ActivationAreas.load(two)
        assert a.layer_ids == b.layer_ids and a.corpus.texts == b.corpus.texts
        np.testing.assert_array_equal(a.pooled, b.pooled)
        np.testing.assert_array_equal(a.coords, b.coords)
        np.testing.assert_array_equal(a.region_ids, b.region_ids)


# ---- from a notebook: a background thread with a progress widget ------------------------------------
def test_background_job_does_not_block_and_cancels(tiny_dir, corpus_file, tmp_path, monkeypatch):
    import mri_widgets as mw

    lm = load(tiny_dir)
    full = mw.jobs.scan(lm, corpus_file, tmp_path / "full.npz", k=4, checkpoint_every=5).result(timeout=120)
    # slow the chunks so that the call returns while the job runs, then cancel it from the widget
    monkeypatch.setenv("MRI_WIDGETS_TEST_CHUNK_DELAY", "0.3")
    out = tmp_path / "bg.npz"
    t0 = time.perf_counter()
    job = mw.jobs.scan(lm, corpus_file, out, k=4, checkpoint_every=5)
    assert time.perf_counter() - t0 < 0.5 and job.status == "running" and not job.done
    deadline = time.monotonic() + 60
    while job.progress.get("texts", 0) < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    job._button.click()  # the Cancel button
    with pytest.raises(JobCancelled):
        job.result(timeout=60)
    assert job.status == "cancelled" and job._button.disabled and "cancelled" in job._label.value
    assert 5 <= job.progress["texts"] < 23 and job._bar.max == 23 and job._bar.value == job.progress["texts"]
    assert "tok/s" in job._label.value or "cancelled" in job._label.value
    # the same job again continues from the checkpoint and gives the uninterrupted result
    monkeypatch.delenv("MRI_WIDGETS_TEST_CHUNK_DELAY")
    again = mw.jobs.scan(lm, corpus_file, out, k=4, checkpoint_every=5)
    _same_scan(again.result(timeout=120), full)
    assert again.status == "done" and again._bar.value == 23 and again._bar.bar_style == "success"
    assert "application/vnd.jupyter.widget-view+json" in again._repr_mimebundle_()


def test_background_job_error_is_shown_and_raised(tiny_dir, tmp_path):
    import mri_widgets as mw

    bad = tmp_path / "c.txt"
    bad.write_text("one\ntwo\n", encoding="utf-8")
    job = mw.jobs.areas(tiny_dir, str(bad), tmp_path / "a.npz")
    with pytest.raises(ValueError, match="at least 3"):
        job.result(timeout=120)
    assert job.status == "error" and "at least 3" in job._label.value and job._bar.bar_style == "danger"


def test_console_entry_point_is_main():
    import importlib

    tomllib = pytest.importorskip("tomllib")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        target = tomllib.load(f)["project"]["scripts"]["mri-widgets"]
    module, name = target.split(":")
    assert getattr(importlib.import_module(module), name) is main
    r = subprocess.run([sys.executable, "-m", "mri_widgets", "--help"], cwd=ROOT, env=_env(), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "{scan,areas}" in r.stdout
