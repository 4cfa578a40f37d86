"""Load test of `attrboost serve` on localhost: N queries (image uploads), C at a time, against the real server
(`python -m attrboost.search.cli serve` in a subprocess) over a model fitted on a synthetic catalogue.

Prints the latency p50 / p90 / p99 per query (upload -> decode -> backbone + head -> boosted and raw search ->
JSON), the throughput, and the number of errors (a non-200 answer, or one without k well-formed results).
The model and indexes are built in --work if missing (a small synthetic catalogue: --n-groups x --per-group),
or pass --model/--index/--raw-index (e.g. the screenshot's demo, benchmarks/screenshot_serve.py).

    python benchmarks/bench_serve.py [--queries 200] [--concurrency 8] [-k 10]
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from attrboost.search.cli import main as cli  # noqa: E402

ATTRIBUTES = "gender,masterCategory,subCategory,articleType,baseColour,season,usage"


def build(work: Path, n_groups: int, per_group: int) -> tuple[Path, Path, Path, Path]:
    demo, model, index, raw = work / "demo", work / "model", work / "index", work / "raw"
    steps = [
        (demo / "styles.csv", ["demo-data", str(demo), "--n-groups", str(n_groups), "--per-group", str(per_group)]),
        (model / "manifest.json", ["fit", "--csv", str(demo / "styles.csv"), "--images", str(demo / "images"),
                                   "--attributes", ATTRIBUTES, "--max-epochs", "20", "--out", str(model)]),
        (index / "manifest.json", ["index", "--model", str(model), "--images", str(demo / "images"), "--out", str(index)]),
        (raw / "manifest.json", ["index", "--model", str(model), "--images", str(demo / "images"), "--out", str(raw),
                                 "--raw"]),
    ]
    for done, argv in steps:
        if not done.exists() and cli([*argv, "-q"]) != 0:
            sys.exit(f"failed: attrboost {' '.join(argv)}")
    return model, index, raw, demo / "images"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    import httpx

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cache = Path(os.environ.get("ATTRBOOST_CACHE", ROOT / ".cache"))
    p.add_argument("--work", type=Path, default=cache / "serve-bench")
    p.add_argument("--n-groups", type=int, default=12)
    p.add_argument("--per-group", type=int, default=20)
    p.add_argument("--model", type=Path)
    p.add_argument("--index", type=Path)
    p.add_argument("--raw-index", type=Path)
    p.add_argument("--images", type=Path, help="query images folder (default: the catalogue's)")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("-k", type=int, default=10)
    args = p.parse_args(argv)

    if args.model:
        model, index, raw, images = args.model, args.index, args.raw_index, args.images
    else:
        model, index, raw, images = build(args.work, args.n_groups, args.per_group)
    queries = sorted(images.glob("*.jpg"))[:50]
    payloads = [(q.name, q.read_bytes()) for q in queries]
    port = free_port()
    cmd = [sys.executable, "-m", "attrboost.search.cli", "serve", "--model", str(model), "--index", str(index),
           "--port", str(port), "--log-level", "warning"] + (["--raw-index", str(raw)] if raw else [])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "lib"), os.environ.get("PYTHONPATH", "")]))
    server = subprocess.Popen(cmd, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                info = httpx.get(url + "/api/info", timeout=2).json()
                break
            except httpx.HTTPError:
                if server.poll() is not None or time.monotonic() > deadline:
                    sys.exit("the server did not start")
                time.sleep(0.5)

        def ask(client, i):
            name, data = payloads[i % len(payloads)]
            t0 = time.perf_counter()
            try:
                r = client.post(f"/api/search?k={args.k}", files={"image": (name, data, "image/jpeg")})
                dt = time.perf_counter() - t0
                out = r.json()
                want = min(args.k, info["index"]["n"])
                ok = (r.status_code == 200 and len(out["boosted"]) == want
                      and (raw is None or len(out["raw"]) == want)
                      and all(a["score"] >= b["score"] for a, b in zip(out["boosted"], out["boosted"][1:])))
            except (httpx.HTTPError, ValueError, KeyError):
                dt, ok = time.perf_counter() - t0, False
            return dt, ok

        with httpx.Client(base_url=url, timeout=120) as c:  # warm-up, and the one-at-a-time latency
            seq = [ask(c, i)[0] for i in range(10)]

        def worker(part):
            with httpx.Client(base_url=url, timeout=120) as c:
                return [ask(c, i) for i in part]

        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            parts = [range(w, args.queries, args.concurrency) for w in range(args.concurrency)]
            results = [x for part in pool.map(worker, parts) for x in part]
        wall = time.perf_counter() - t0
    finally:
        server.terminate()
        server.wait(30)
    lat = np.array([dt for dt, _ in results]) * 1000
    errors = sum(not ok for _, ok in results)
    print(f"attrboost serve on localhost: {info['backbone']} + {info['task']} head, index {info['index']['n']} "
          f"items ({info['index']['kind']}), raw index {'yes' if raw else 'no'}, k={args.k}; "
          f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}")
    print(f"one query at a time: p50 {np.percentile(np.array(seq) * 1000, 50):.0f} ms (10 queries)")
    print(f"{len(results)} queries, {args.concurrency} concurrent: latency p50 {np.percentile(lat, 50):.0f} ms, "
          f"p90 {np.percentile(lat, 90):.0f} ms, p99 {np.percentile(lat, 99):.0f} ms; "
          f"throughput {len(results) / wall:.1f} queries/s; errors {errors}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
