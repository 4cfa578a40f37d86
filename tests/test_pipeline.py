"""The cached study steps the notebooks call: the feature store, head caching, the defaults."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from attrboost.study import pipeline as P
from attrboost.data import sample_protocol


pytestmark = pytest.mark.usefixtures("cache")  # a private, empty cache (conftest); `tiny`: conftest


def test_feature_store_extracts_each_image_once(tiny, monkeypatch):
    import attrboost.features as E

    calls = []  # the ids (= file names) of the images forwarded through the model, per extraction
    real = E.forward_files

    def spy(model, transform, paths, rows, on_chunk, **kw):
        if len(rows):
            calls.append([Path(paths[r]).stem for r in rows])
        return real(model, transform, paths, rows, on_chunk, **{**kw, "num_workers": 0, "progress": False})

    monkeypatch.setattr(E, "forward_files", spy)
    a = sample_protocol(tiny, n_groups=4, per_group=4, n_test=4, seed=0)
    b = sample_protocol(tiny, n_groups=4, per_group=4, n_test=4, seed=1)
    Xa = P.get_features(a, "efficientnet_lite0", progress=False)
    Xb = P.get_features(b, "efficientnet_lite0", progress=False)
    assert Xa.shape == (16, 1280) and Xa.dtype == np.float32
    assert calls[0] == a.items["id"].tolist()
    overlap = set(a.items["id"]) & set(b.items["id"])
    assert len(calls) == 2 and set(calls[1]) == set(b.items["id"]) - overlap  # only the new images
    # rows are aligned with the sample: the same image has the same features in both samples
    ia = {i: k for k, i in enumerate(a.items["id"])}
    for k, i in enumerate(b.items["id"]):
        if i in ia:
            np.testing.assert_array_equal(Xb[k], Xa[ia[i]])
    assert np.array_equal(P.get_features(a, "efficientnet_lite0", progress=False), Xa) and len(calls) == 2


def test_get_boosted_is_cached_and_uses_only_train_and_val(tiny, monkeypatch):
    import attrboost.heads as H

    s = sample_protocol(tiny, n_groups=6, per_group=8, n_test=12, val_fraction=0.25, seed=0)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(len(s.items), 16)).astype(np.float32) + s.items["group"].to_numpy()[:, None]
    seen = {}
    real_fit = H.BoostHead.fit

    def spy_fit(self, X_, y, tags=None, X_val=None, y_val=None, tags_val=None):
        seen["n"] = (len(X_), len(X_val))
        seen["task"] = self.task
        return real_fit(self, X_, y, tags=tags, X_val=X_val, y_val=y_val, tags_val=tags_val)

    monkeypatch.setattr(H.BoostHead, "fit", spy_fit)
    run = P.get_boosted(s, X, "toy", "task1", 0, max_epochs=3)
    assert seen["n"] == (len(s.part("train")), len(s.part("val")))
    assert run.emb["test"].shape == (12, 16) and len(run.history) <= 3
    seen.clear()
    again = P.get_boosted(s, X, "toy", "task1", 0, max_epochs=3)
    assert not seen  # served from the cache
    for p in ("train", "val", "test"):
        np.testing.assert_array_equal(again.emb[p], run.emb[p])
    pd.testing.assert_frame_equal(again.history, run.history, check_dtype=False)
    other = P.get_boosted(s, X, "toy", "task1", 0, max_epochs=2)  # a changed hyper-parameter retrains
    assert seen and len(other.history) <= 2
    seen.clear()
    t2 = P.get_boosted(s, X, "toy", "task2", 0, max_epochs=2, gru_hidden=8)
    assert seen["task"] == "task2"  # each task trains its own head (regression: all tasks trained task1)
    assert not np.array_equal(t2.emb["test"], other.emb["test"])
    with pytest.raises(ValueError, match="unknown head parameter"):
        P.get_boosted(s, X, "toy", "task1", 0, learning_rate=0.1)
    with pytest.raises(ValueError, match=r"task='task9': expected one of \['task1', 'task2', 'task3'\]"):
        P.get_boosted(s, X, "toy", "task9", 0)


# ----------------------------------------------------------------------------- many fits in worker processes
TASKS = ("task1", "task2", "task3")
TINY_HEAD = dict(max_epochs=3, gru_hidden=8)


def toy_features(sample, backbone, **kw):
    """Random features that depend only on the sample (deterministic), with a group signal."""
    rng = np.random.default_rng(int(sample.fingerprint[:8], 16))
    return rng.normal(size=(len(sample.items), 16)).astype(np.float32) + sample.items["group"].to_numpy()[:, None]


@pytest.fixture
def toy_cfg(tiny, tmp_path, monkeypatch):
    """A DataConfig of the tiny data set whose features (served in this process) are toy_features."""
    monkeypatch.setattr(P, "get_features", toy_features)
    return P.DataConfig(dataset="fashion", data_dir=str(tmp_path / "data"), n_groups=6, per_group=8, n_test=12,
                        val_fraction=0.25)


def same_run(a, b) -> bool:
    return (all(np.array_equal(a.emb[p], b.emb[p]) for p in ("train", "val", "test"))
            and a.history.drop(columns="seconds").equals(b.history.drop(columns="seconds"))
            and (a.task, a.seed, a.best_epoch, a.params) == (b.task, b.seed, b.best_epoch, b.params))


def test_fit_heads_in_two_processes_gives_the_serial_bits(toy_cfg, tmp_path, monkeypatch):
    import attrboost.heads as H

    jobs = [(toy_cfg, seed, "toy", task, TINY_HEAD) for seed in (0, 1) for task in TASKS]
    serial = P.fit_heads(jobs, n_jobs=1)
    # the serial path is today's loop over get_boosted
    for (cfg, seed, _, task, kw), run in zip(jobs, serial):
        sample = P.get_sample(cfg, seed)
        assert same_run(run, P.get_boosted(sample, toy_features(sample, "toy"), "toy", task, seed, **kw))

    monkeypatch.setenv("ATTRBOOST_CACHE", str(tmp_path / "cache2"))  # an empty cache: fit everything again
    in_parent = []
    real_fit = H.BoostHead.fit
    monkeypatch.setattr(H.BoostHead, "fit", lambda self, *a, **k: in_parent.append(self.task) or real_fit(self, *a, **k))
    parallel = P.fit_heads(jobs, n_jobs=2)
    assert not in_parent  # every head was fitted in a worker process
    assert len(list((tmp_path / "cache2" / "heads" / "toy").glob("*.npz"))) == 6
    for a, b in zip(serial, parallel):
        assert same_run(a, b), (a.task, a.seed)
    assert {(r.task, r.seed) for r in parallel} == {(t, s) for s in (0, 1) for t in TASKS}
    assert len({r.emb["test"].tobytes() for r in parallel}) == 6  # six different heads

    calls = []
    monkeypatch.setattr(P, "run_fits", lambda c, n, **kw: calls.append((list(c), n)))
    again = P.fit_heads(jobs + jobs[:2], n_jobs=2)  # all cached (and duplicates): nothing to fit, no pool
    assert calls == [([], 1)] and all(same_run(a, b) for a, b in zip(again, parallel + parallel[:2]))
    with pytest.raises(ValueError, match=r"a job is \(data, seed, backbone, task, overrides\)"):
        P.fit_heads([(toy_cfg, 0, "toy")])
    with pytest.raises(ValueError, match="task='task4'"):
        P.fit_heads([(toy_cfg, 0, "toy", "task4", {})])


def test_resolve_n_jobs(monkeypatch):
    monkeypatch.setattr(P.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert P.resolve_n_jobs("auto", 9) == 4 and P.resolve_n_jobs(None, 9) == 4  # the cores this process may use
    assert P.resolve_n_jobs("auto", 3) == 3 and P.resolve_n_jobs("auto", 0) == 1  # capped by the fits to do
    assert P.resolve_n_jobs(1, 9) == 1 and P.resolve_n_jobs(8, 3) == 3 and P.resolve_n_jobs(np.int64(2), 9) == 2
    monkeypatch.setattr(P, "device_name", lambda d: "cuda" if d in ("auto", "cuda") else d)
    assert P.resolve_n_jobs("auto", 9, "cuda") == 1 and P.resolve_n_jobs("auto", 9, "auto") == 1  # one GPU
    assert P.resolve_n_jobs(2, 9, "cuda") == 2  # asked for explicitly
    for bad in (0, -1):
        with pytest.raises(ValueError, match=rf"n_jobs \('auto', None or an integer\) == {bad}, must be >= 1"):
            P.resolve_n_jobs(bad, 9)
    for bad in ("two", 1.5, True):
        with pytest.raises(TypeError, match=r"n_jobs \('auto', None or an integer\)"):
            P.resolve_n_jobs(bad, 9)


def test_a_killed_worker_leaves_no_damaged_entry_and_a_new_call_fits_only_the_rest(toy_cfg, tmp_path, monkeypatch):
    import signal
    import threading
    import time
    import warnings

    psutil = pytest.importorskip("psutil")
    from attrboost.cache import load_arrays

    endless = dict(max_epochs=10**6, stop_loss=0.0, selection="last", gru_hidden=8)  # killed long before its end
    jobs = [(toy_cfg, 0, "toy", "task1", TINY_HEAD), (toy_cfg, 1, "toy", "task1", TINY_HEAD),
            (toy_cfg, 0, "toy", "task2", endless)]
    heads = tmp_path / "cache" / "heads" / "toy"
    box = {}
    thread = threading.Thread(target=lambda: box.update(result=_catch(P.fit_heads, jobs, n_jobs=2)))
    thread.start()
    deadline = time.monotonic() + 120
    while len(list(heads.glob("task1-*.npz"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(list(heads.glob("task1-*.npz"))) == 2, "the two short fits did not finish"
    time.sleep(0.5)  # the endless fit is running now
    workers = [p for p in psutil.Process().children(recursive=True) if "loky" in " ".join(p.cmdline())
               and "resource_tracker" not in " ".join(p.cmdline())]
    assert workers
    for w in workers:
        w.send_signal(signal.SIGKILL)  # mid-fit
    thread.join(60)
    assert not thread.is_alive()
    err = box["result"]
    assert isinstance(err, RuntimeError) and "a worker process died" in str(err) and "fits only the rest" in str(err)
    entries = sorted(heads.iterdir())
    assert [e.name[:6] for e in entries] == ["task1-", "task1-"]  # no half-written entry, no temp file
    for e in entries:
        assert "_cache_sha256" in load_arrays(e)

    calls = []
    monkeypatch.setattr(P, "run_fits", lambda c, n, **kw: calls.append(list(c)))
    monkeypatch.setattr(P, "get_boosted", lambda *a, **k: None)  # what fit_heads returns at the end: not needed
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a damaged entry would be quarantined with a CacheWarning
        P.fit_heads(jobs, n_jobs=2)
    assert [(args[3], args[4], kw["max_epochs"]) for _, args, kw in calls[0]] == [("task2", 0, 10**6)]


def _catch(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        return exc


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_heads_train_on_the_gpu(toy_cfg, monkeypatch):
    import attrboost.heads as H

    devices = []
    real_fit = H.BoostHead.fit
    monkeypatch.setattr(H.BoostHead, "fit", lambda self, *a, **k: devices.append(self.device) or real_fit(self, *a, **k))
    jobs = [(toy_cfg, 0, "toy", task, TINY_HEAD) for task in TASKS]
    gpu = P.fit_heads(jobs, device="cuda")  # n_jobs "auto": one process on a GPU, so the spy sees every fit
    cpu = P.fit_heads(jobs, device="cpu", n_jobs=1)
    assert devices == ["cuda"] * 3 + ["cpu"] * 3
    for g, c in zip(gpu, cpu):
        assert g.params["device"] == "cuda" and c.params["device"] == "cpu"
        assert g.emb["test"].dtype == np.float32 and g.emb["test"].shape == c.emb["test"].shape
        assert np.abs(g.emb["test"] - c.emb["test"]).mean() < 0.05 * np.abs(c.emb["test"]).mean()  # close


def test_fits_run_on_one_thread_in_this_process_too():
    """The serial path pins each fit to one torch thread, as the workers do, so a cache entry never depends
    on where it was computed (even for num_threads=None)."""
    import torch

    seen = []
    old = torch.get_num_threads()
    P.run_fits([(lambda: seen.append(torch.get_num_threads()), (), {})] * 2, n_jobs=1)
    assert seen == [1, 1] and torch.get_num_threads() == old
