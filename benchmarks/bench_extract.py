"""Benchmark feature extraction: full pipeline (files -> features) vs model forward alone.

For each backbone (default: the offline ones: pca, efficientnet_lite0/1/2; resnet*/vit_b_16 only with
``--random-weights``, since their pretrained weights need a network) it prints: images/s of the full
pipeline (``attrboost.features.extract_features``, no cache; model creation timed apart) and of the model
forward alone on pre-loaded tensors, their ratio, the peak RSS of the process (each backbone runs in its
own subprocess), and, when the real data exists (``../shared/data/fashion-product-images-small``), the time
to extract a 4,000-image sample cold (fresh cache) and again from the cache.

Targets: pipeline >= 90% of model-alone; efficientnet_lite0 extracts the 4,000 real images in <= 2 min
cold and <= 5 s from the cache.

    python benchmarks/bench_extract.py [--backbones efficientnet_lite0,pca] [--n-images 256]
                                       [--sample 4000] [--skip-real] [--random-weights]
                                       [--num-workers 0,1,2] [--repeats 3] [--threads N]

On a busy machine, OpenMP's default busy-waiting makes torch crawl; ``OMP_WAIT_POLICY=PASSIVE`` in the
environment (it must be set before torch is imported) avoids that. The table notes which was used.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "fashion-product-images-small"
OFFLINE = ["pca", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
HUB = ["resnet18", "resnet34", "resnet50", "resnet101", "vit_b_16"]


def real_items(n: int, seed: int = 0):
    """A random sample of n products (id, image_path) of the real catalogue, or None without the data."""
    import pandas as pd

    if not (DATA / "styles.csv").is_file() or not (DATA / "images").is_dir():
        return None
    styles = pd.read_csv(DATA / "styles.csv", usecols=["id"])
    styles["image_path"] = [str(DATA / "images" / f"{i}.jpg") for i in styles["id"]]
    styles = styles[[os.path.exists(p) for p in styles["image_path"]]]
    return styles.sample(n=min(n, len(styles)), random_state=seed).reset_index(drop=True)


def synthetic_paths(n: int, folder: Path) -> list[str]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 256, (80, 60, 3), dtype=np.uint8)).save(p, quality=90)
        paths.append(str(p))
    return paths


def peak_rss_mb() -> tuple[float, float]:
    """Peak resident memory (MB) of this process, and of its largest finished child (DataLoader worker;
    forked, so much of it is shared with this process)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return own / 1024, child / 1024  # ru_maxrss is in KiB on Linux


def bench_torch(name: str, paths: list[str], args) -> dict:
    """Best-of-``repeats`` throughput of the pipeline (per worker count) and of the model alone, interleaved
    so that background load hits both alike. The model is built and BN-folded once (that time is reported
    apart as "build") and handed to the pipeline, which otherwise runs exactly as in the notebooks."""
    import numpy as np
    import torch
    from PIL import Image

    from attrboost import backbones
    from attrboost.features import extract_features

    spec = backbones.get_spec(name)
    pretrained = not (args.random_weights and spec.source == "hub")
    t0 = time.perf_counter()
    model, transform = backbones.create_backbone(name, pretrained=pretrained)
    model = backbones.fold_batchnorm(model)  # what the pipeline runs
    create_s = time.perf_counter() - t0
    # the pipeline reuses the built (and folded) model: its one-time build cost is reported apart
    backbones.create_backbone = lambda *a, **k: (model, transform)
    backbones.fold_batchnorm = lambda m, *a, **k: m
    threads = args.threads or torch.get_num_threads()
    ids = list(range(len(paths)))

    def pipeline(workers: int) -> float:
        t0 = time.perf_counter()
        _, feats = extract_features(name, paths, ids, pretrained=pretrained, cache=False, progress=False,
                                    device="cpu", batch_size=args.batch_size, num_workers=workers, num_threads=threads)
        dt = time.perf_counter() - t0
        assert feats.shape == (len(paths), spec.width) and np.isfinite(feats).all()
        return len(paths) / dt

    def model_alone(x: torch.Tensor) -> float:
        torch.set_num_threads(threads)
        m = model.to(memory_format=torch.channels_last)
        cpu = torch.device("cpu")

        def finish(b, device):
            return b.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():  # the pipeline's forward (backbones.forward: padded CPU micro-batches)
            backbones.forward(m, x[: args.batch_size], finish, cpu)  # warm-up
            t0 = time.perf_counter()
            for b in x.split(args.batch_size):
                backbones.forward(m, b, finish, cpu)
            return len(x) / (time.perf_counter() - t0)

    workers = [int(w) for w in str(args.num_workers).split(",")]
    best = {w: pipeline(w) for w in workers}
    rss_pipeline, rss_worker = peak_rss_mb()  # before the pre-loaded tensors below inflate it
    x = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])
    best_model = model_alone(x)
    for _ in range(args.repeats - 1):
        best_model = max(best_model, model_alone(x))
        for w in workers:
            best[w] = max(best[w], pipeline(w))
    return dict(pipeline={str(w): v for w, v in best.items()}, model=best_model, threads=threads,
                create_s=create_s, weights="pretrained" if pretrained else "random",
                rss_mb=rss_pipeline, worker_rss_mb=rss_worker)


def bench_pca(paths: list[str], args) -> dict:
    from attrboost.pixels import PixelPCA, load_pixels

    best_pipe = best_model = 0.0
    pca = None
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        pixels = load_pixels(paths, (60, 80), progress=False)
        load_s = time.perf_counter() - t0
        if pca is None:
            t0 = time.perf_counter()
            pca = PixelPCA(n_components=min(2048, len(paths))).fit(pixels)
            create_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        pca.transform(pixels)
        model_s = time.perf_counter() - t0
        best_pipe = max(best_pipe, len(paths) / (load_s + model_s))
        best_model = max(best_model, len(paths) / model_s)
    rss, worker = peak_rss_mb()
    return dict(pipeline={"0": best_pipe}, model=best_model, threads=None, create_s=create_s,
                weights=f"PCA fit on these {len(paths)} images", rss_mb=rss, worker_rss_mb=worker)


def bench_real(name: str, args) -> dict:
    """Cold and cached extraction of the real sample (fresh cache dir: cold really is cold)."""
    from attrboost.study.embed import embed

    items = real_items(args.sample)
    if items is None:
        return {}
    train_ids = items["id"][: int(len(items) * 0.75)]  # the study's 3,000 / 1,000 split
    kw = dict(progress=False)
    if name != "pca":
        kw.update(batch_size=args.batch_size, num_workers=args.real_workers, num_threads=args.threads,
                  device="cpu", pretrained=not args.random_weights or name not in HUB)
    with tempfile.TemporaryDirectory() as cache:
        os.environ["ATTRBOOST_CACHE"] = cache
        t0 = time.perf_counter()
        a = embed(name, items, train_ids, dataset_fp="bench", **kw)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        b = embed(name, items, train_ids, dataset_fp="bench", **kw)
        cached = time.perf_counter() - t0
        assert (a == b).all()
    return dict(real_n=len(items), cold_s=cold, cached_s=cached)


def run_one(name: str, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        items = real_items(args.n_images, seed=1)
        paths = list(items["image_path"]) if items is not None else synthetic_paths(args.n_images, Path(tmp))
        out = bench_pca(paths, args) if name == "pca" else bench_torch(name, paths, args)
        out.update(name=name, n=len(paths), images="real" if items is not None else "synthetic")
    return out


def run_real(name: str, args) -> dict:
    out = bench_real(name, args)
    out["real_rss_mb"] = peak_rss_mb()[0]
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", default=",".join(OFFLINE), help="comma-separated registry names")
    parser.add_argument("--n-images", type=int, default=256, help="images for the throughput measurement")
    parser.add_argument("--sample", type=int, default=4000, help="real images for the cold/cached timing")
    parser.add_argument("--skip-real", action="store_true", help="skip the cold/cached real-data timing")
    parser.add_argument("--random-weights", action="store_true",
                        help="allow resnet*/vit_b_16 with random init (their pretrained weights need a network)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", default="0,1,2",
                        help="DataLoader workers; a comma-separated list times the pipeline for each")
    parser.add_argument("--real-workers", default="auto", type=lambda v: v if v == "auto" else int(v),
                        help="DataLoader workers of the cold real-data run (default: the library's 'auto')")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the best is reported")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one backbone, print JSON
    parser.add_argument("--real", help=argparse.SUPPRESS)  # internal: real-data cold/cached run, print JSON
    args = parser.parse_args(argv)

    if args.one:
        print("RESULT " + json.dumps(run_one(args.one, args)))
        return
    if args.real:
        print("RESULT " + json.dumps(run_real(args.real, args)))
        return

    names = [n.strip() for n in args.backbones.split(",") if n.strip()]
    blocked = [n for n in names if n in HUB and not args.random_weights]
    if blocked:
        print(f"skipping {blocked}: pretrained weights need a network; pass --random-weights to time them")
        names = [n for n in names if n not in blocked]
    print(f"images: {'real (' + str(DATA) + ')' if real_items(1) is not None else 'synthetic'}; "
          f"batch {args.batch_size}, workers {args.num_workers}, cpu cores {os.cpu_count()}", flush=True)
    rows = []
    for name in names:
        row = {}
        jobs = [("--one", name)] + ([] if args.skip_real else [("--real", name)])
        for flag, value in jobs:  # fresh processes: per-backbone peak RSS, a cold real run really is cold
            cmd = [sys.executable, __file__, flag, value] + list(argv if argv is not None else sys.argv[1:])
            env = dict(os.environ, PYTHONPATH=str(REPO / "lib") + os.pathsep + os.environ.get("PYTHONPATH", ""))
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not line:
                print(f"{name} {flag}: failed\n{proc.stderr[-3000:]}")
                continue
            row.update(json.loads(line[-1][len("RESULT "):]))
        if "model" in row:
            rows.append(row)
            print(f"  done {name}", flush=True)

    workers = [w.strip() for w in str(args.num_workers).split(",")]
    head = ("| backbone | weights | n | build s | model alone img/s | "
            + " | ".join(f"pipeline w={w} img/s (ratio)" for w in workers)
            + f" | peak RSS MB (worker) | {args.sample} real: cold s | cached s | RSS MB |")
    print("\n" + head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        pipe = " | ".join(f"{r['pipeline'][w]:.1f} ({r['pipeline'][w] / r['model']:.0%})" if w in r["pipeline"]
                          else "n/a" for w in workers)
        cold = f"{r['cold_s']:.1f}" if "cold_s" in r else "n/a"
        cached = f"{r['cached_s']:.2f}" if "cached_s" in r else "n/a"
        real_rss = f"{r['real_rss_mb']:.0f}" if "real_rss_mb" in r else "n/a"
        print(f"| {r['name']} | {r['weights']} | {r['n']} ({r['images']}) | {r['create_s']:.1f} "
              f"| {r['model']:.1f} | {pipe} | {r['rss_mb']:.0f} ({r['worker_rss_mb']:.0f}) "
              f"| {cold} | {cached} | {real_rss} |")
    threads = next((r["threads"] for r in rows if r.get("threads")), "?")
    print(f"\nthreads: torch {threads}; OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY', '(unset)')}; best of {args.repeats} interleaved rounds; "
          f"build = model creation (excluded from the throughput, included in the cold real run)")


if __name__ == "__main__":
    main()
