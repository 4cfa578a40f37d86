"""Embed and index a large catalogue with Ray Data: ``attrboost index --engine ray``.

The same boosted encoder as the single-process path (:class:`attrboost.search.encoder.Encoder`), run as a Ray
Data pipeline that works unchanged on a laptop (a local Ray) and on a cluster (``--address``)::

    image rows (position, path)                    one block per shard of the input list
      -> decode_batch      CPU tasks     load_image + the encoder's PIL stage -> uint8 HxWx3 (or an error)
      -> Embedder          actors        the bundle loaded ONCE per actor; normalise + backbone + head
      -> the driver        one file per shard: OUT/shards/shard-NNNNNN.parquet (pos, id, path, vector, error)
      -> VectorIndex       built from the shards in input order, saved to OUT as the single-process path does

The input list is cut by position into fixed shards of ``shard_size`` images. A shard file is written
atomically (:func:`attrboost.cache.atomic_write`) once every one of its images has come back, and carries
a key (the model's identity and the shard's ids and paths) in its Parquet metadata: a rerun skips the shards
whose file is complete and has the right key, so an interrupted job resumes where it stopped (a grown
catalogue keeps its unchanged leading shards). An image that cannot be decoded is a row with an error and
no vector: counted and listed in the index report, as in the single-process path.

Faults: a decoding task whose worker dies is retried by Ray, and an actor that dies is restarted with its
batch retried (Ray Data's actor pools use ``max_restarts=-1, max_task_retries=-1``); a row that arrives
twice is dropped (:attr:`JobResult.duplicates` counts them); after the run every position must be in exactly
one shard, else :class:`ScaleError`.

Writing happens on the driver, so ``OUT`` need not be shared between nodes; the model bundle and the images
must be readable at the same paths on every node (a shared filesystem), and attrboost's dependencies
installed there (``pip install 'attrboost[scale]'``; :func:`connect` ships attrboost's own code with the job).

:func:`sizing_table` turns measured rates into machines, wall time, index type, memory and build time for
a catalogue size (docs/scaling.md's table, printed by ``benchmarks/bench_scale.py``).
"""
from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..cache import atomic_write, fingerprint

__all__ = ["ScaleError", "RAY_MISSING", "require_ray", "connect", "Plan", "JobResult", "run", "add_shards",
           "decode_batch", "Embedder", "sizing_table", "sizing_markdown"]

SHARD_SIZE = 1000
#: CPUs reserved per decoding task beside CPU actors (which hold the rest of the cores); 1 beside GPU actors.
DECODE_CPUS = 0.25
#: Vectors per VectorIndex.add when building from shards (an ``ivfpq`` index is trained on the first group).
ADD_ROWS = 1 << 18
#: Fault injection for tests: the path of a marker file; the first actor call that removes it exits its process.
FAIL_ONCE_ENV = "ATTRBOOST_SCALE_FAIL_ONCE"
# every actor is started before the first batch is handed out (else the first actor up takes the early
# batches, or all of them, while the others load the model); a cluster that cannot place them in this time
# is an error naming the resources asked for
WAIT_FOR_ACTORS_S = 600
SHARD_META = b"attrboost-shard"
RAY_MISSING = ("--engine ray needs Ray Data, which is not installed: pip install 'attrboost[scale]' "
               "(or pip install 'ray[data]>=2.40')")


class ScaleError(RuntimeError):
    """The Ray job cannot run or did not produce every image exactly once."""


def require_ray():
    """``import ray`` (with ``ray.data``), or a :class:`ScaleError` that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ScaleError(RAY_MISSING) from None
    return ray


# ---------------------------------------------------------------------------------------------- shards
@dataclass
class Plan:
    """The input list cut by position into shards of ``shard_size``; shard ``k`` covers positions
    ``[k * shard_size, min((k + 1) * shard_size, n))`` and is written to ``directory/shard-<k>.parquet``."""

    ids: list[str]
    paths: list[str]
    directory: Path
    shard_size: int = SHARD_SIZE
    model: dict = field(default_factory=dict)

    def __post_init__(self):
        self.ids, self.paths = [str(i) for i in self.ids], [os.fspath(p) for p in self.paths]
        self.directory = Path(self.directory)
        if len(self.ids) != len(self.paths):
            raise ValueError(f"ids has {len(self.ids)} entries but paths has {len(self.paths)}")
        if len(set(self.ids)) != len(self.ids):
            seen, dup = set(), []
            for i in self.ids:
                if i in seen:
                    dup.append(i)
                seen.add(i)
            raise ScaleError(f"every image needs its own id, but {len(dup)} id(s) repeat, e.g. {sorted(set(dup))[:5]}")
        if self.shard_size < 1:
            raise ValueError(f"shard_size={self.shard_size}: expected a positive number of images per shard")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_shards(self) -> int:
        return math.ceil(len(self) / self.shard_size)

    def bounds(self, k: int) -> tuple[int, int]:
        return k * self.shard_size, min((k + 1) * self.shard_size, len(self))

    def path(self, k: int) -> Path:
        return self.directory / f"shard-{k:06d}.parquet"

    def key(self, k: int) -> str:
        s, e = self.bounds(k)
        return fingerprint("attrboost-shard", self.model, self.ids[s:e], self.paths[s:e])

    def read(self, k: int, columns: list[str] | None = None):
        """Shard ``k``'s table (``columns``: only these) if its file is complete and was made for this shard
        and model, else None."""
        import pyarrow.parquet as pq

        f = self.path(k)
        if not f.is_file():
            return None
        try:
            table = pq.read_table(f, columns=columns if columns is None or "pos" in columns else ["pos", *columns])
            meta = json.loads(table.schema.metadata[SHARD_META])
        except Exception:  # noqa: BLE001 - an unreadable file is recomputed (and overwritten)
            return None
        s, e = self.bounds(k)
        if meta.get("key") != self.key(k) or not np.array_equal(table.column("pos").to_numpy(), np.arange(s, e)):
            return None
        return table

    def write(self, k: int, pos: np.ndarray, vectors: np.ndarray, errors: list[str], nodes: list[str]) -> Path:
        """Write shard ``k`` (rows sorted by position; undecodable rows have an error and no vector)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        order = np.argsort(pos, kind="stable")
        pos, vectors, errors = pos[order], vectors[order], [errors[i] for i in order]
        bad = np.asarray([bool(e) for e in errors])
        width = vectors.shape[1]
        vec = pa.FixedSizeListArray.from_arrays(pa.array(vectors.astype(np.float32).ravel()), width,
                                                mask=pa.array(bad))
        meta = {"key": self.key(k), "shard": k, "model": self.model, "nodes": sorted(set(nodes))}
        table = pa.table({
            "pos": pa.array(pos, pa.int64()), "id": [self.ids[p] for p in pos], "path": [self.paths[p] for p in pos],
            "vector": vec, "error": pa.array([e or None for e in errors], pa.string()),
        }).replace_schema_metadata({SHARD_META: json.dumps(meta)})
        return atomic_write(self.path(k), lambda tmp: pq.write_table(table, tmp))

    def done(self) -> list[int]:
        """Shards whose file is complete (what a rerun skips)."""
        return [k for k in range(self.n_shards) if self.read(k, columns=["pos"]) is not None]


@dataclass
class JobResult:
    """What :func:`run` did: shards embedded now, shards reused from an earlier run, rows dropped as
    duplicates, Ray node ids that embedded, seconds in all and until the first vectors came back (starting
    Ray, the actors loading the model, the first batches)."""

    plan: Plan
    embedded: list[int]
    reused: list[int]
    duplicates: int = 0
    nodes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    startup_seconds: float = 0.0
    resources: dict = field(default_factory=dict)

    def report(self) -> dict:
        return {"engine": "ray", "shards": self.plan.n_shards, "shard_size": self.plan.shard_size,
                "embedded_shards": len(self.embedded), "reused_shards": len(self.reused),
                "duplicates_dropped": self.duplicates, "nodes": len(self.nodes), "seconds": round(self.seconds, 1),
                "startup_seconds": round(self.startup_seconds, 1), **self.resources}


# ---------------------------------------------------------------------------------------------- stages
def decode_batch(batch: dict, pil_stage, size: int) -> dict:
    """CPU stage: image files -> uint8 ``(n, size, size, 3)`` with the encoder's PIL stage (resize + crop, as
    :meth:`Encoder.features <attrboost.search.encoder.Encoder.features>` runs it); a file that cannot be decoded gets
    a zero image and its error text (the same text the single-process path lists)."""
    from ..data import DataError, load_image

    n = len(batch["pos"])
    images = np.zeros((n, size, size, 3), dtype=np.uint8)
    errors = [""] * n
    for i, p in enumerate(batch["path"]):
        try:
            img = pil_stage(load_image(str(p)))
        except (DataError, OSError, ValueError) as exc:
            errors[i] = str(exc)
            continue
        images[i] = np.asarray(img, dtype=np.uint8)
    return {"pos": np.asarray(batch["pos"], dtype=np.int64), "image": images, "error": np.asarray(errors, dtype=object)}


def _maybe_fail_once() -> None:
    marker = os.environ.get(FAIL_ONCE_ENV)
    if marker:
        try:
            os.remove(marker)
        except FileNotFoundError:
            return
        os._exit(17)  # a killed worker: no exception, no cleanup


class Embedder:
    """Actor stage: loads the model bundle once (:func:`attrboost.search.bundle.load_model`), then turns batches
    of decoded images into boosted vectors (zero rows where the image could not be decoded)."""

    def __init__(self, bundle: str, device: str = "cpu", num_threads: int | None = None):
        import ray

        from .bundle import load_model

        self.encoder = load_model(bundle, device=device, num_workers=0)
        self.encoder.model()  # built once, here
        self.num_threads = num_threads
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict) -> dict:
        import torch

        from ..training import torch_threads

        _maybe_fail_once()
        ok = np.asarray(batch["error"] == "", dtype=bool)
        V = np.zeros((len(ok), self.encoder.width), dtype=np.float32)
        if ok.any():
            x = torch.from_numpy(np.ascontiguousarray(batch["image"][ok]))
            with torch_threads(self.num_threads):
                V[ok] = self.encoder.transform(self.encoder.forward(x))
        return {"pos": batch["pos"], "vector": V, "error": batch["error"],
                "node": np.full(len(ok), self.node, dtype=object)}


# ---------------------------------------------------------------------------------------------- the job
def connect(address: str | None = None, *, num_cpus: int | None = None, quiet: bool = False) -> bool:
    """Connect this process to Ray unless it already is; True if this call did (then ``ray.shutdown()`` is
    the caller's). address: a cluster (``auto``, ``HOST:6379``, ``ray://HOST:10001``); None: start a new local
    Ray (``num_cpus``: its CPUs, default all), even where one runs already or a crashed one left its address
    file behind (Ray's own ``address=None`` would attach to it; ``auto`` does that on purpose). The job ships this attrboost package to the workers
    (``runtime_env={"py_modules": [...]}``), so every node runs the driver's code and needs only the
    dependencies installed."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    from .. import __file__ as package_init

    ray.init(address=address or "local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=not quiet,
             logging_level="WARNING" if quiet else "INFO",
             runtime_env={"py_modules": [str(Path(package_init).parent)]})
    return True


def default_cpus_per_actor(actors: int, decode_cpus: float = DECODE_CPUS) -> float:
    """CPUs per CPU actor that fill the smallest node with CPUs, one decoding share left free (see :func:`run`)."""
    import ray

    cpus = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
    cpus = [c for c in cpus if c > 0]
    if not cpus:
        raise ScaleError("the Ray cluster has no node with CPUs: give --cpus-per-actor and --gpus-per-actor")
    per_node = math.ceil(actors / len(cpus))
    return max(0.1, (min(cpus) - decode_cpus) / per_node)


def run(plan: Plan, encoder, *, address: str | None = None, actors: int = 1, batch_size: int = 32,
        cpus_per_actor: float | None = None, gpus_per_actor: float = 0.0, decode_cpus: float | None = None,
        quiet: bool = False, say=print, on_rows=None) -> JobResult:
    """Embed every shard of ``plan`` that has no complete file yet; return what was done.

    encoder: the driver's :class:`~attrboost.search.encoder.Encoder` of the bundle (its PIL stage is shipped to the
    decoding tasks; each actor loads the bundle itself). ``gpus_per_actor > 0``: actors embed on CUDA.
    ``say(text)``: progress messages; ``on_rows(n)``: called as each batch of ``n`` vectors comes back.

    Resources: ``decode_cpus`` per decoding task (default :data:`DECODE_CPUS` beside CPU actors, 1 beside GPU
    actors); ``cpus_per_actor`` (= the actor's torch threads, rounded) defaults to 1 for GPU actors, and for
    CPU actors to the CPUs of the smallest node with CPUs, less one decoding share, divided among the actors
    that land on a node: on one 2-core machine, 1 actor x 1.75 CPUs or 2 x 0.875.
    """
    t0 = time.perf_counter()
    reused = plan.done()
    todo = sorted(set(range(plan.n_shards)) - set(reused))
    result = JobResult(plan, [], reused)
    if reused:
        say(f"{len(reused)} of {plan.n_shards} shards are already in {plan.directory}; embedding {len(todo)}")
    if not todo:
        return result
    if encoder.bundle is None:
        raise ScaleError("the encoder must come from a saved model bundle (attrboost.load_model): each Ray actor "
                         "loads it from there")
    ray = require_ray()
    import pandas as pd

    started = connect(address, quiet=quiet)
    try:
        if decode_cpus is None:
            decode_cpus = DECODE_CPUS if gpus_per_actor == 0 else 1.0
        if cpus_per_actor is None:
            cpus_per_actor = 1.0 if gpus_per_actor > 0 else default_cpus_per_actor(actors, decode_cpus)
        result.resources = {"actors": actors, "cpus_per_actor": round(cpus_per_actor, 3),
                            "gpus_per_actor": gpus_per_actor, "decode_cpus": decode_cpus}
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = not quiet
        ctx.execution_options.verbose_progress = False
        ctx.wait_for_min_actors_s = WAIT_FOR_ACTORS_S
        pil_stage = encoder.preprocessing()[0]
        frames = []
        for k in todo:
            s, e = plan.bounds(k)
            frames.append(pd.DataFrame({"pos": np.arange(s, e, dtype=np.int64), "path": plan.paths[s:e]}))
        ds = ray.data.from_pandas(frames)
        ds = ds.map_batches(decode_batch, fn_kwargs={"pil_stage": pil_stage, "size": encoder.preprocessing_size()},
                            batch_size=batch_size, batch_format="numpy", num_cpus=decode_cpus)
        threads = max(1, int(round(cpus_per_actor))) if gpus_per_actor == 0 else None
        with warnings.catch_warnings():
            # Ray 2.60 deprecates remote arguments given by keyword but has no named parameter for the
            # scheduling strategy; SPREAD is what places the actors on every node
            warnings.filterwarnings("ignore", message=r".*ray_remote_args.*deprecated")
            ds = ds.map_batches(
                Embedder, fn_constructor_kwargs={"bundle": str(Path(encoder.bundle).resolve()),
                                                 "device": "cuda" if gpus_per_actor > 0 else "cpu",
                                                 "num_threads": threads},
                compute=ray.data.ActorPoolStrategy(size=actors), batch_size=batch_size, batch_format="numpy",
                num_cpus=cpus_per_actor, num_gpus=gpus_per_actor or None,
                scheduling_strategy="SPREAD")  # actors over the nodes, not packed onto the first that fits
        collector = _Collector(plan, todo)
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                if not result.startup_seconds:
                    result.startup_seconds = time.perf_counter() - t0
                collector.add(batch)
                if on_rows is not None:
                    on_rows(len(batch["pos"]))
        except ray.exceptions.GetTimeoutError as exc:
            raise ScaleError(f"the Ray cluster did not start {actors} actor(s) with {cpus_per_actor:g} CPU and "
                             f"{gpus_per_actor or 0:g} GPU each within {WAIT_FOR_ACTORS_S} s: ask for fewer "
                             f"(--actors, --cpus-per-actor, --gpus-per-actor) or add nodes; the "
                             f"{len(collector.written)} shard(s) finished are kept in {plan.directory}") from exc
        except ray.exceptions.RayError as exc:
            raise ScaleError(f"the Ray job failed ({type(exc).__name__}: {str(exc).strip().splitlines()[0]}); "
                             f"the {len(collector.written)} shard(s) finished are kept in {plan.directory}: rerun "
                             f"the same command to resume") from exc
    finally:
        if started:
            ray.shutdown()
    result.embedded, result.duplicates, result.nodes = collector.written, collector.duplicates, sorted(collector.nodes)
    result.seconds = time.perf_counter() - t0
    missing = collector.missing()
    if missing:
        raise ScaleError(f"the Ray job ended without {len(missing)} image(s), e.g. {missing[:5]}; rerun the same "
                         f"command to embed the missing shards")
    return result


class _Collector:
    """Rows coming back from the actors -> one shard file per shard, written once all its rows are in.

    The dedupe guard: a row whose position was already received (or whose shard is already written) is
    dropped and counted in :attr:`duplicates`."""

    def __init__(self, plan: Plan, todo: Sequence[int]):
        self.plan, self.todo = plan, set(todo)
        self.rows: dict[int, dict[int, tuple]] = {k: {} for k in self.todo}
        self.written: list[int] = []
        self.duplicates = 0
        self.nodes: set[str] = set()

    def add(self, batch: dict) -> None:
        plan = self.plan
        for p, v, err, node in zip(batch["pos"], batch["vector"], batch["error"], batch["node"]):
            p = int(p)
            k = p // plan.shard_size
            rows = self.rows.get(k)
            if k not in self.todo or rows is None or p in rows:
                self.duplicates += 1
                continue
            rows[p] = (v, str(err), str(node))
            self.nodes.add(str(node))
            s, e = plan.bounds(k)
            if len(rows) == e - s:
                vals = list(rows.values())
                plan.write(k, np.fromiter(rows, dtype=np.int64, count=len(rows)), np.stack([r[0] for r in vals]),
                           [r[1] for r in vals], [r[2] for r in vals])
                self.written.append(k)
                self.todo.discard(k)
                del self.rows[k]

    def missing(self) -> list[str]:
        """Ids of the shards not written."""
        return [self.plan.ids[p] for k in sorted(self.todo) for p in range(*self.plan.bounds(k))
                if p not in self.rows[k]]


def add_shards(index, plan: Plan, add_rows: int = ADD_ROWS) -> tuple[int, list[dict]]:
    """Add every shard's vectors to ``index`` (a :class:`~attrboost.search.index.VectorIndex`) in input order, in
    groups of ``add_rows`` (an ``ivfpq`` index is trained on the first group); return ``(n_added, failed)``
    with failed ``[{id, path, error}]`` as :meth:`Encoder.encode <attrboost.search.encoder.Encoder.encode>` lists them.

    Raises :class:`ScaleError` unless every position of the plan is in exactly one complete shard."""
    seen = np.zeros(len(plan), dtype=np.int64)
    buf_v, buf_i, buf_p, failed, n = [], [], [], [], 0

    def flush():
        nonlocal n, buf_v, buf_i, buf_p
        if buf_v:
            V = np.concatenate(buf_v)
            index.add(V, np.concatenate(buf_i), np.concatenate(buf_p))
            n += len(V)
        buf_v, buf_i, buf_p = [], [], []

    for k in range(plan.n_shards):
        table = plan.read(k)
        if table is None:
            s, e = plan.bounds(k)
            raise ScaleError(f"shard {k} ({plan.path(k)}) is missing or incomplete: images {plan.ids[s:e][:3]}... "
                             f"were not embedded; rerun the command to embed it")
        pos = table.column("pos").to_numpy()
        np.add.at(seen, pos, 1)
        err = table.column("error").to_pylist()
        ok = np.asarray([e is None for e in err])
        ids, paths = np.asarray(table.column("id").to_pylist(), dtype=str), table.column("path").to_pylist()
        failed += [{"id": str(ids[r]), "path": paths[r], "error": err[r]} for r in np.flatnonzero(~ok)]
        if ok.any():
            vec = table.column("vector").filter(ok)
            buf_v.append(np.asarray(vec.combine_chunks().flatten().to_numpy(zero_copy_only=False),
                                    dtype=np.float32).reshape(len(vec), -1))
            buf_i.append(ids[ok])
            buf_p.append(np.asarray(paths, dtype=str)[ok])
            if sum(len(v) for v in buf_v) >= add_rows:
                flush()
    flush()
    if not np.all(seen == 1):
        bad = np.flatnonzero(seen != 1)
        raise ScaleError(f"{len(bad)} image(s) are not in exactly one shard, e.g. "
                         f"{[(plan.ids[p], int(seen[p])) for p in bad[:5]]} (id, times)")
    return n, failed


# ---------------------------------------------------------------------------------------------- sizing
def sizing_table(rate_per_core: float, *, rate_per_gpu: float | None = None, cores_per_machine: int = 16,
                 sizes: Sequence[int] = (10**6, 10**7, 10**8), target_hours: float = 8.0, width: int = 1280,
                 flat_max: int = 10**6, add_rate: dict | None = None, train_seconds: float = 0.0,
                 item_bytes: float = 87.0) -> list[dict]:
    """Machines, wall time, index type, memory and build time for catalogues of ``sizes`` images.

    Embedding: a CPU machine does ``rate_per_core * cores_per_machine`` img/s, a GPU machine ``rate_per_gpu``;
    ``machines = ceil(n / (rate * target_hours * 3600))``, ``hours = n / (machines * rate) / 3600``.
    Index: ``flat`` (exact, ``4 * width`` bytes per vector) up to ``flat_max`` images, else ``ivfpq``
    (:class:`~attrboost.search.index.VectorIndex`'s codes of ``m`` bytes, ``m`` = the largest divisor of ``width``
    up to ``width // 16``, + 8 bytes of faiss id per vector). Ids and paths (:mod:`attrboost.search.items`, on disk and
    memory-mapped): ``item_bytes`` per image, by default 87 = 55 characters of id and path + 32 bytes
    (``benchmarks/bench_items.py``). Build time: ``train_seconds`` (ivfpq only) + ``n / add_rate[kind]`` (vectors/s, measured), on one machine.
    """
    from .index import _largest_divisor

    add_rate = dict(add_rate or {})
    rows = []
    for n in sizes:
        row = {"images": int(n)}
        for name, rate in (("cpu", rate_per_core * cores_per_machine), ("gpu", rate_per_gpu)):
            if rate:
                machines = math.ceil(n / (rate * target_hours * 3600))
                row[f"{name}_machines"], row[f"{name}_hours"] = machines, n / (machines * rate) / 3600
        kind = "flat" if n <= flat_max else "ivfpq"
        per_vector = 4 * width if kind == "flat" else _largest_divisor(width, width // 16) + 8
        row.update(kind=kind, index_bytes=n * per_vector, items_bytes=n * item_bytes)
        if kind in add_rate:
            row["build_seconds"] = (train_seconds if kind == "ivfpq" else 0.0) + n / add_rate[kind]
        rows.append(row)
    return rows


def _human(n: float, unit: str = "") -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.3g} {suffix}{unit}"
    return f"{n:.3g} {unit}".strip()


def sizing_markdown(rows: list[dict], cores_per_machine: int = 16) -> str:
    """:func:`sizing_table`'s rows as a markdown table."""
    def dur(h):
        return f"{h:.1f} h" if h >= 1 else f"{h * 60:.0f} min" if h >= 1 / 60 else f"{h * 3600:.0f} s"

    head = (f"| images | CPU machines ({cores_per_machine} cores) x wall | GPU machines x wall | index | "
            f"index memory | ids + paths (memory-mapped) | index build (1 machine) |")
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in rows:
        cpu = f"{r['cpu_machines']} x {dur(r['cpu_hours'])}" if "cpu_machines" in r else "–"
        gpu = f"{r['gpu_machines']} x {dur(r['gpu_hours'])}" if "gpu_machines" in r else "–"
        build = dur(r["build_seconds"] / 3600) if "build_seconds" in r else "–"
        lines.append(f"| {_human(r['images'])} | {cpu} | {gpu} | {r['kind']} | {_human(r['index_bytes'], 'B')} | "
                     f"{_human(r['items_bytes'], 'B')} | {build} |")
    return "\n".join(lines)
