"""Benchmark ``attrboost index --engine ray`` against the single-process path, and print the sizing table.

On the same N images with an EfficientNet-Lite0 bundle (a Task 1 head fitted on random features: the head's
cost is the same as a real one's):

* single process: :meth:`Encoder.encode <attrboost.search.encoder.Encoder.encode>` (torch on every core, decoding in
  the process: the ``attrboost index`` default);
* Ray Data on a local Ray with ``--cpus`` CPUs, for each ``--configs`` entry ``ACTORSxCPUS`` (actors x CPUs
  per actor; decoding tasks take :data:`attrboost.search.scale.DECODE_CPUS` each): :func:`attrboost.search.scale.run`,
  all shards fresh.

It prints img/s of each (Ray: end to end, and steady = the images after the first results over the time
after them, i.e. without starting the actors), the ratio Ray / single process (target >= 80 % on 2 cores),
the rate per core, and peak memory (single process: its max RSS; Ray: the largest sampled sum of the RSS of
the driver and every process under it, shared pages counted in each). Ray's start-up (``ray.init``) is
timed apart.

Then the index side of the sizing table: flat and IVF-PQ add rates (vectors/s) and IVF-PQ training time on
``--index-n`` random vectors of width 1280 (:class:`attrboost.search.index.VectorIndex`), the training time scaled
to :data:`attrboost.search.scale.ADD_ROWS` training vectors as ``n ** 1.5`` (k-means: n x nlist, nlist ~ 4 sqrt(n)),
and :func:`attrboost.search.scale.sizing_table` from the measured steady Ray rate per core and ``--gpu-rate``
(default 311 img/s: Lite0 extraction on one H200, ``benchmarks/bench_device.py``, docs/performance.md).

    python benchmarks/bench_scale.py [--n 300] [--data DIR] [--cpus 2] [--configs 1x1.75,2x0.875] [--batch 32]
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[0] / "lib"))
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
from bench_index import gallery  # noqa: E402


class PeakTreeRSS:
    """Largest sum of RSS over this process and its descendants, sampled every ``every`` seconds."""

    def __init__(self, every: float = 0.25):
        import psutil

        self.me, self.every, self.peak, self._stop = psutil.Process(), every, 0, threading.Event()

    def _sample(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = 0
            for p in [self.me, *self.me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def images(n: int, data: str | None, work: Path) -> list[str]:
    if data:
        paths = sorted(str(p) for p in Path(data).glob("*.jpg"))[:n]
        if len(paths) < n:
            raise SystemExit(f"--data {data}: {len(paths)} .jpg files, --n asks for {n}")
        return paths
    from attrboost.data.synthetic import generate_synthetic

    per_group = 30
    root = generate_synthetic(work / "synthetic", n_groups=-(-n // per_group), per_group=per_group, n_extra=0,
                              progress=False)
    return sorted(str(p) for p in (root / "images").glob("*.jpg"))[:n]


def bundle(work: Path) -> Path:
    import pandas as pd

    from attrboost import BoostHead, save_model

    rng = np.random.default_rng(0)
    X = rng.gamma(0.5, 1.0, size=(300, 1280)).astype(np.float32)
    y = pd.DataFrame({"a": rng.choice(["x", "y", "z"], 300), "b": rng.choice(["u", "v"], 300)})
    head = BoostHead("task1", max_epochs=1, seed=0, progress=False).fit(X[:250], y[:250], X_val=X[250:],
                                                                       y_val=y[250:].reset_index(drop=True))
    return save_model(work / "model", head, "efficientnet_lite0")


def steady_rate(log: list[tuple[float, int]]) -> float:
    """img/s between the batch that brought the first quarter of the vectors back and the last batch."""
    t_end, n_end = log[-1]
    t0, n0 = next((t, n) for t, n in log if n >= n_end / 4)
    return (n_end - n0) / (t_end - t0) if t_end > t0 else float("nan")


def quartile_times(log: list[tuple[float, int]]) -> list[float]:
    return [next(t for t, n in log if n >= q * log[-1][1] / 4) for q in (1, 2, 3, 4)]


def index_rates(n: int, width: int = 1280) -> dict:
    from attrboost.search.index import VectorIndex
    from attrboost.search.scale import ADD_ROWS

    X = gallery(2 * n, width)
    out = {}
    for kind in ("flat", "ivfpq"):
        index = VectorIndex(width, kind)
        t0 = time.perf_counter()
        index.add(X[:n], np.arange(n))  # ivfpq: trains here (and measures recall)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        index.add(X[n:], np.arange(n, 2 * n))
        out[kind] = {"first_add_s": first, "add_rate": n / (time.perf_counter() - t0)}
    train = out["ivfpq"]["first_add_s"] - n / out["ivfpq"]["add_rate"]
    out["ivfpq"]["train_s"] = train
    out["ivfpq"]["train_s_at_add_rows"] = train * (ADD_ROWS / n) ** 1.5
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=300, help="images (default 300)")
    ap.add_argument("--data", help="folder of real .jpg images (default: generated synthetic ones)")
    ap.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs of the local Ray (default: all)")
    ap.add_argument("--configs", default="1x1.75,2x0.875", help="ACTORSxCPUS_PER_ACTOR, comma-separated")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--shard-size", type=int, default=100)
    ap.add_argument("--index-n", type=int, default=20000, help="vectors for the index add rates (default 20000)")
    ap.add_argument("--gpu-rate", type=float, default=311.0, help="img/s of one GPU machine (default 311, H200)")
    args = ap.parse_args()

    import ray

    from attrboost import load_model
    from attrboost.search import scale

    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; ray {ray.__version__}",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        paths = images(args.n, args.data, work)
        model = bundle(work)
        enc = load_model(model, batch_size=args.batch)
        enc.features(paths[:8])  # warm-up: model built, first forward
        t0 = time.perf_counter()
        out = enc.encode(paths, progress=False)
        single = len(paths) / (time.perf_counter() - t0)
        single_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{len(paths)} {'real' if args.data else 'synthetic'} images, {len(out.failed)} undecodable")
        print(f"single process: {single:.1f} img/s ({single / os.cpu_count():.1f} per core), peak RSS "
              f"{single_rss:.0f} MB", flush=True)

        t0 = time.perf_counter()
        scale.connect(num_cpus=args.cpus, quiet=True)  # ships this checkout's attrboost to the workers
        print(f"ray.init(num_cpus={args.cpus}): {time.perf_counter() - t0:.1f} s", flush=True)
        best = None
        try:
            for run_no, cfg in enumerate(args.configs.split(",")):
                actors, cpus = cfg.split("x")
                plan = scale.Plan([str(i) for i in range(len(paths))], paths, work / f"shards{run_no}",
                                  shard_size=args.shard_size, model=enc.identity)
                log = []  # (seconds, vectors back so far)
                t_start = time.perf_counter()

                def on_rows(n, log=log, t_start=t_start):
                    log.append((time.perf_counter() - t_start, (log[-1][1] if log else 0) + n))

                with PeakTreeRSS() as mem:
                    res = scale.run(plan, enc, actors=int(actors), cpus_per_actor=float(cpus), batch_size=args.batch,
                                    quiet=True, say=lambda m: None, on_rows=on_rows)
                steady = steady_rate(log)
                e2e = len(paths) / res.seconds
                print(f"ray {actors} actor(s) x {cpus} CPU: end to end {e2e:.1f} img/s ({res.seconds:.1f} s, "
                      f"{res.startup_seconds:.1f} s to the first vectors); steady (last 3/4) {steady:.1f} img/s = "
                      f"{steady / single:.0%} of single process (end to end {e2e / single:.0%}), "
                      f"{steady / args.cpus:.1f} img/s per core; vectors back at "
                      f"{', '.join(f'{t:.0f} s' for t in quartile_times(log))} (1/4, 1/2, 3/4, all); "
                      f"peak RSS (driver + Ray processes) {mem.peak / 2**20:.0f} MB", flush=True)
                if best is None or steady > best:
                    best = steady
        finally:
            ray.shutdown()

    rates = index_rates(args.index_n)
    print(f"index, {args.index_n} random vectors of width 1280: flat add {rates['flat']['add_rate']:.0f} vectors/s; "
          f"ivfpq train {rates['ivfpq']['train_s']:.1f} s (scaled to {scale.ADD_ROWS} training vectors: "
          f"{rates['ivfpq']['train_s_at_add_rows']:.0f} s), add {rates['ivfpq']['add_rate']:.0f} vectors/s")
    per_core = best / args.cpus
    rows = scale.sizing_table(per_core, rate_per_gpu=args.gpu_rate,
                              add_rate={k: rates[k]["add_rate"] for k in ("flat", "ivfpq")},
                              train_seconds=rates["ivfpq"]["train_s_at_add_rows"])
    print(f"\nsizing (Ray steady {per_core:.1f} img/s per core x 16 cores per CPU machine; {args.gpu_rate:.0f} img/s per "
          f"GPU machine; machines for <= 8 h):")
    print(scale.sizing_markdown(rows))


if __name__ == "__main__":
    main()
