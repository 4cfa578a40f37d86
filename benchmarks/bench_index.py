"""Benchmark search and export: faiss index kinds on a catalogue-sized gallery, ONNX Runtime vs eager PyTorch.

Index part (random vectors around group centres, the real catalogue's size and Lite0's width by default): for
``flat`` / ``hnsw`` / ``ivfpq`` (:class:`attrboost.search.index.VectorIndex`) it prints build time, the index's
size in memory (serialised bytes) and the process's RSS growth, single-query search latency p50/p99
(one query vector at a time, search alone), and recall@10 against exact search.

Encoder part (EfficientNet-Lite0 + a Task 1 head, offline weights): throughput of a batch through eager
PyTorch (the encoder's path: BatchNorm folded, channels_last) and through ONNX Runtime (the exported graph),
their cosine agreement, and the single-image query latency p50/p99 including the embedding (decode, resize,
forward, head, flat search).

Targets (2-core machine): exact search over 39k vectors <= 5 ms per query; single-image query
p99 <= 50 ms including the embedding; ONNX parity cosine >= 0.9999.

    python benchmarks/bench_index.py [--n 38943] [--width 1280] [--queries 200] [--batch 32] [--skip-onnx]
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

import numpy as np  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def gallery(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Non-negative vectors around 1,000 group centres (boosted vectors are ReLU outputs)."""
    rng = np.random.default_rng(seed)
    centres = rng.gamma(0.5, 1.0, size=(1000, d)).astype(np.float32)
    X = centres[rng.integers(0, len(centres), n)] + rng.gamma(0.5, 0.5, size=(n, d)).astype(np.float32)
    return X.astype(np.float32)


def pct(times_s: list[float]) -> tuple[float, float]:
    ms = np.asarray(times_s) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def bench_indexes(n: int, d: int, n_queries: int) -> list[dict]:
    import faiss

    from attrboost.search.index import VectorIndex

    X = gallery(n, d)
    Q = gallery(n_queries, d, seed=1)
    rows = []
    for kind in ("flat", "hnsw", "ivfpq"):
        r0 = rss_mb()
        t0 = time.perf_counter()
        index = VectorIndex(d, kind).add(X, np.arange(n))
        build = time.perf_counter() - t0
        size = len(faiss.serialize_index(index._faiss)) / 2**20
        index.search(Q[:1], 10)  # warm-up (flat: builds its float16 copy, counted in the RSS growth)
        grown = rss_mb() - r0
        times = []
        for q in Q:
            t = time.perf_counter()
            index.search(q[None], 10)
            times.append(time.perf_counter() - t)
        p50, p99 = pct(times)
        rec = index.report.get("recall_at_10", {}).get("recall", 1.0)
        rows.append(dict(kind=kind, build_s=build, index_mb=size, rss_growth_mb=grown, p50_ms=p50, p99_ms=p99,
                         recall10=rec, params=index.report.get("params")))
        del index
    return rows


def bench_encoder(batch: int, n_queries: int, skip_onnx: bool) -> dict:
    import pandas as pd
    import torch
    from PIL import Image

    from attrboost.search.encoder import Encoder
    from attrboost.search.export import export_onnx, onnx_available
    from attrboost.heads import BoostHead
    from attrboost.search.index import VectorIndex

    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 1280)).astype(np.float32)
    y = pd.DataFrame({"a": rng.choice(["x", "y"], 64)})
    head = BoostHead("task1", max_epochs=1, selection="last").fit(X, y)
    enc = Encoder("efficientnet_lite0", head)
    enc.model()
    size = enc.preprocessing_size()
    x = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    out = {"batch": batch, "torch_threads": torch.get_num_threads()}

    def eager():  # the encoder's own forward (padded CPU micro-batches, backbones.forward)
        return enc.transform(enc.forward(x))

    eager()
    t = time.perf_counter()
    reps = 3
    for _ in range(reps):
        want = eager()
    out["eager_img_s"] = reps * batch / (time.perf_counter() - t)

    if not skip_onnx and onnx_available():
        import onnxruntime as ort

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "enc.onnx"
            export_onnx(enc, path)
            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            sess.run(None, {"images": x.numpy()})
            t = time.perf_counter()
            for _ in range(reps):
                got = sess.run(None, {"images": x.numpy()})[0]
            out["onnx_img_s"] = reps * batch / (time.perf_counter() - t)
            cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
            out["onnx_min_cosine"] = float(cos.min())

    # single-image query, end to end: decode + preprocess + forward + head + exact search over the gallery
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(min(n_queries, 50)):
            arr = rng.integers(0, 256, (80, 60, 3), dtype=np.uint8)
            paths.append(str(Path(tmp) / f"q{i}.jpg"))
            Image.fromarray(arr).save(paths[-1], quality=90)
        index = VectorIndex(enc.width).add(gallery(38943, enc.width), np.arange(38943))
        enc.num_workers = 0
        enc.encode(paths[:2], progress=False)
        times = []
        for p in paths:
            t = time.perf_counter()
            index.search(enc.encode([p], progress=False).vectors, 10)
            times.append(time.perf_counter() - t)
        out["query_p50_ms"], out["query_p99_ms"] = pct(times)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=38943)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--skip-onnx", action="store_true")
    p.add_argument("--skip-encoder", action="store_true")
    args = p.parse_args()
    print(f"gallery: {args.n} x {args.width} float32 vectors; {os.cpu_count()} CPUs; "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    print(f"{'kind':6} {'build s':>8} {'index MB':>9} {'RSS +MB':>8} {'p50 ms':>7} {'p99 ms':>7} {'recall@10':>9}  params")
    for r in bench_indexes(args.n, args.width, args.queries):
        print(f"{r['kind']:6} {r['build_s']:8.2f} {r['index_mb']:9.1f} {r['rss_growth_mb']:8.0f} {r['p50_ms']:7.2f} "
              f"{r['p99_ms']:7.2f} {r['recall10']:9.3f}  {r['params']}")
    if not args.skip_encoder:
        e = bench_encoder(args.batch, args.queries, args.skip_onnx)
        print(f"\nEfficientNet-Lite0 + head, batch {e['batch']}, {e['torch_threads']} torch threads: "
              f"eager {e['eager_img_s']:.1f} img/s"
              + (f", ONNX Runtime {e['onnx_img_s']:.1f} img/s (min cosine {e['onnx_min_cosine']:.6f})"
                 if "onnx_img_s" in e else ", ONNX Runtime: skipped"))
        print(f"single-image query incl. embedding (decode, forward, head, exact search over 38,943): "
              f"p50 {e['query_p50_ms']:.1f} ms, p99 {e['query_p99_ms']:.1f} ms")


if __name__ == "__main__":
    main()
