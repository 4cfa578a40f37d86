"""The ``attrboost`` command: fit a boosted encoder on your own catalogue, index images, search, export.

::

    attrboost fit    --csv FILE --images DIR --attributes a,b,c [--id-column id] [--text-column name]
                     [--backbone efficientnet_lite0] [--task task1] --out MODEL_DIR
    attrboost index  --model MODEL_DIR (--images DIR | --csv FILE) --out INDEX_DIR [--kind flat|hnsw|ivfpq] [--add]
                     [--raw] [--engine ray [--address ADDR] [--actors N] [--cpus-per-actor C] [--gpus-per-actor G]]
    attrboost search --index INDEX_DIR IMAGE... [-k 10] [--json]
    attrboost export --model MODEL_DIR --onnx FILE
    attrboost serve  --model MODEL_DIR --index INDEX_DIR [--raw-index RAW_DIR] [--host 127.0.0.1] [--port 7860]
    attrboost demo-data OUT_DIR      (the embedded synthetic catalogue as styles.csv + images/, to try the above)

``fit`` trains :class:`~attrboost.heads.BoostHead` with its defaults (the study's model selection) on the
labelled rows, a validation part (``--val-fraction``) carved out at random, and writes a model bundle
(:func:`attrboost.bundle.save_model`). ``index --raw`` indexes the frozen backbone features instead of the
boosted vectors (the baseline ``serve --raw-index`` shows beside the boosted results). ``python -m attrboost.study`` (the reproduction study) is unchanged.
Bad input ends with ``attrboost: error: ...`` and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

__all__ = ["main", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
PARTIAL = ".encode-partial"  # the resumable encode's chunks (a directory), removed when the index is saved


class CliError(Exception):
    """A user error: printed as ``attrboost: error: ...``, exit status 2."""


def _say(msg: str) -> None:
    print(msg, file=sys.stderr)


# ------------------------------------------------------------------------------------------------------ fit
def _split_validation(labels, val_fraction: float, seed: int) -> np.ndarray:
    """Boolean validation mask, drawn per group (full attribute tuple) so model selection's retrieval score
    has pairs to rank: from every group of at least 4 rows, a seeded ``val_fraction`` of its rows (at least
    2; the rest stays in training); smaller groups stay in training. Rows with a label the training part
    lacks are then moved back (BoostHead's classes come from the training labels)."""
    n = len(labels)
    n_val = int(round(val_fraction * n))
    if not 0 < val_fraction < 1 or n_val < 1 or n_val >= n:
        raise CliError(f"--val-fraction {val_fraction}: with {n} labelled rows the validation part would have "
                       f"{n_val} rows; expected a fraction in (0, 1) giving 1..{n - 1} rows")
    rng = np.random.default_rng(seed)
    val = np.zeros(n, dtype=bool)
    groups = labels.astype(str).agg("\x1f".join, axis=1).to_numpy()
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        if len(rows) >= 4:
            take = min(len(rows) - 2, max(2, int(round(val_fraction * len(rows)))))
            val[rng.permutation(rows)[:take]] = True
    for col in labels.columns:
        seen = set(labels.loc[~val, col])
        val &= labels[col].isin(seen).to_numpy()
    return val


def cmd_fit(args) -> int:
    from . import backbones
    from .bundle import save_model
    from .data import build_vocab, filter_tags, load_csv, normalise_name
    from .data.sampling import PROTOCOL_DEFAULTS
    from .encoder import Encoder
    from .heads import BoostHead

    attributes = [a.strip() for a in args.attributes.split(",") if a.strip()]
    if not attributes:
        raise CliError("--attributes: give at least one attribute column, e.g. --attributes colour,shape")
    if not backbones.get_spec(args.backbone).is_torch:
        raise CliError(f"--backbone {args.backbone}: a saved model needs a neural backbone; choose one of "
                       f"{', '.join(n for n in backbones.list_backbones() if backbones.get_spec(n).is_torch)}")
    if args.task in ("task2", "task3") and not args.text_column:
        raise CliError(f"--task {args.task} learns tags from product names: give --text-column")
    cat = load_csv(args.csv, args.images, attributes=attributes, id_column=args.id_column,
                   path_column=args.path_column, text_column=args.text_column, image_ext=args.image_ext)
    items = cat.items
    _say(f"{cat}: {len(items)} labelled rows")
    encoder = Encoder(args.backbone, None, device=args.device, batch_size=args.batch_size)
    X, failed = encoder.features(items["image_path"].tolist(), progress=not args.quiet)
    bad = np.zeros(len(items), dtype=bool)
    bad[[p for p, _ in failed]] = True
    if failed:
        _say(f"skipped {len(failed)} image(s) that cannot be decoded, e.g. {failed[0][1]}")
    items = items.loc[~bad].reset_index(drop=True)
    labels = items[attributes].astype(str)
    val = _split_validation(labels, args.val_fraction, args.seed)
    if not val.any():
        raise CliError(f"no validation rows left: every row drawn for validation has a label value seen in no "
                       f"training row; add rows or raise --val-fraction ({args.val_fraction})")
    fit_kw = {"y": labels[~val].reset_index(drop=True), "X_val": X[val],
              "y_val": labels[val].reset_index(drop=True)}
    tag_min_count = PROTOCOL_DEFAULTS["tag_min_count"]
    if args.task in ("task2", "task3"):
        words = [normalise_name(t) for t in items["text"]]
        vocab = build_vocab([w for w, v in zip(words, val) if not v], tag_min_count)
        tags = filter_tags(words, vocab)
        fit_kw.update(tags=[t for t, v in zip(tags, val) if not v], tags_val=[t for t, v in zip(tags, val) if v])
    head_kw = {"seed": args.seed, "progress": not args.quiet}
    if args.max_epochs is not None:
        head_kw["max_epochs"] = args.max_epochs
    head = BoostHead(args.task, **head_kw).fit(X[~val], **fit_kw)
    hist = head.history_
    best = hist.loc[hist["selected"]].iloc[0]
    metrics = {
        "validation": {k: float(best[k]) for k in hist.columns if k.startswith("val_")},
        "best_epoch": int(head.best_epoch_), "n_epochs": int(head.n_epochs_), "stop_reason": head.stop_reason_,
        "n_train": int((~val).sum()), "n_val": int(val.sum()), "val_fraction": args.val_fraction, "seed": args.seed,
        "undecodable": [{"id": str(cat.items["id"].iat[p]), "path": cat.items["image_path"].iat[p], "error": e}
                        for p, e in failed],
        "catalogue": {"csv": str(Path(args.csv).resolve()), "fingerprint": cat.fingerprint,
                      "attributes": attributes, "text_column": args.text_column, "report": cat.report},
        "history": json.loads(hist.to_json(orient="records")),
    }
    save_model(args.out, head, encoder.backbone, metrics=metrics)
    accs = ", ".join(f"{k[len('val_acc_'):]} {v:.3f}" for k, v in metrics["validation"].items()
                     if k.startswith("val_acc_"))
    _say(f"saved {args.out}: {args.task} on {args.backbone}, {metrics['n_train']} training / {metrics['n_val']} "
         f"validation rows, best epoch {head.best_epoch_} of {head.n_epochs_} ({head.stop_reason_})"
         + (f"; validation accuracy: {accs}" if accs else ""))
    return 0


# ------------------------------------------------------------------------------------------------------ index
def _image_files(folder: str) -> tuple[list[str], list[str]]:
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise CliError(f"--images {folder}: no such folder")
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        raise CliError(f"--images {folder}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in it")
    return [p.relative_to(root).with_suffix("").as_posix() for p in paths], [str(p) for p in paths]


def _csv_items(args) -> tuple[list[str], list[str]]:
    import pandas as pd

    csv_path = Path(args.csv).expanduser()
    if not csv_path.is_file():
        raise CliError(f"--csv {args.csv}: no such file")
    df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    need = [c for c in (args.id_column, args.path_column) if c]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise CliError(f"{csv_path}: missing column(s) {missing}; the CSV has {list(df.columns)}")
    base = (Path(args.images).expanduser() if args.images else csv_path.parent).resolve()
    if args.path_column:
        paths = [str(Path(p) if Path(p).is_absolute() else base / p) for p in df[args.path_column]]
        ids = df[args.id_column].tolist() if args.id_column else df[args.path_column].tolist()
    else:
        ids = df[args.id_column].tolist()
        paths = [str(base / f"{i}{args.image_ext}") for i in ids]
    return ids, paths


RAY_OPTIONS = ("address", "actors", "cpus_per_actor", "gpus_per_actor", "shard_size")


def _check_engine(args) -> None:
    given = [o for o in RAY_OPTIONS if getattr(args, o) is not None]
    if args.engine != "ray":
        if given:
            raise CliError(f"--{given[0].replace('_', '-')} applies to --engine ray only")
        return
    for name, ok, expected in (("actors", lambda v: v >= 1, "an integer >= 1"),
                               ("shard_size", lambda v: v >= 1, "an integer >= 1"),
                               ("cpus_per_actor", lambda v: v > 0, "a number > 0"),
                               ("gpus_per_actor", lambda v: v >= 0, "a number >= 0")):
        value = getattr(args, name)
        if value is not None and not ok(value):
            raise CliError(f"--{name.replace('_', '-')} {value}: expected {expected}")
    if args.raw:
        raise CliError("--raw with --engine ray: not supported yet (the actors emit boosted vectors); index the "
                       "raw features with the default engine (drop --engine ray)")
    if args.device != "cpu":
        raise CliError(f"--device {args.device}: with --engine ray the actors choose the device; give "
                       f"--gpus-per-actor 1 (or a fraction) to embed on GPUs")
    from .scale import require_ray

    require_ray()


def cmd_index(args) -> int:
    from .bundle import load_model
    from .index import VectorIndex

    if not (args.images or args.csv):
        raise CliError("give the images to index: --images DIR or --csv FILE")
    _check_engine(args)
    out = Path(args.out)
    encoder = load_model(args.model, device=args.device, batch_size=args.batch_size)
    ids, paths = _csv_items(args) if args.csv else _image_files(args.images)
    own = encoder.raw_identity if args.raw else encoder.identity
    identity = {**own, "bundle": str(Path(args.model).resolve())}
    if args.add:
        index = VectorIndex.load(out)
        index.check_model(own)
        keep = np.flatnonzero(~index.items.contains(ids)).tolist()
        _say(f"{len(ids) - len(keep)} of {len(ids)} images are already in {out}; adding {len(keep)}")
        ids, paths = [ids[k] for k in keep], [paths[k] for k in keep]
    else:
        if (out / "manifest.json").exists():
            raise CliError(f"--out {out} already holds an index: pass --add to append to it, or choose another --out")
        index = VectorIndex(identity["width"], args.kind, model=identity)
    if not ids:
        _say("nothing to add")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    if args.engine == "ray":
        from . import scale

        plan = scale.Plan(ids, paths, out / "shards", shard_size=args.shard_size or scale.SHARD_SIZE,
                          model=encoder.identity)
        from tqdm.auto import tqdm

        with tqdm(total=len(ids), desc="encode (ray)", unit="img", disable=args.quiet) as bar:
            job = scale.run(plan, encoder, address=args.address, actors=args.actors or 1,
                            batch_size=args.batch_size, cpus_per_actor=args.cpus_per_actor,
                            gpus_per_actor=args.gpus_per_actor or 0.0, quiet=args.quiet, say=_say,
                            on_rows=bar.update)
        _say(f"ray: embedded {len(job.embedded)} shard(s), reused {len(job.reused)} (of {plan.n_shards} in "
             f"{plan.directory}) on {len(job.nodes)} node(s) in {job.seconds:.0f} s ({job.startup_seconds:.0f} s to "
             f"the first vectors)"
             + (f"; dropped {job.duplicates} duplicate row(s)" if job.duplicates else ""))
        n_ok, failed = scale.add_shards(index, plan)
        index.report.setdefault("scale", []).append(job.report())
    else:
        enc = encoder.encode(paths, ids, progress=not args.quiet, checkpoint=out / PARTIAL, return_features=args.raw)
        n_ok, failed = len(enc), enc.failed
        if n_ok:
            index.add(enc.features if args.raw else enc.vectors, enc.ids, enc.paths)
    if failed:
        _say(f"{len(failed)} image(s) could not be decoded and were skipped:")
        for f in failed[:20]:
            _say(f"  {f['path']}: {f['error']}")
    if n_ok == 0:
        raise CliError(f"none of the {len(paths)} images could be decoded; nothing indexed")
    index.report.setdefault("undecodable", [])
    index.report["undecodable"] += failed
    index.save(out)
    shutil.rmtree(out / PARTIAL, ignore_errors=True)
    recall = index.report.get("recall_at_10")
    _say(f"{out}: {index.kind} index of {len(index)} images{' (raw backbone features)' if args.raw else ''} (+{n_ok}, {len(failed)} undecodable)"
         + (f"; recall@{recall['k']} vs exact {recall['recall']:.3f} on {recall['queries']} queries" if recall and
            not args.add else ""))
    return 0


# ------------------------------------------------------------------------------------------------------ search
def cmd_search(args) -> int:
    from .bundle import load_model
    from .data import DataError
    from .index import VectorIndex

    index = VectorIndex.load(args.index)
    model_dir = args.model or index.model.get("bundle")
    if not model_dir:
        raise CliError(f"{args.index} does not name its model: pass --model MODEL_DIR")
    encoder = load_model(model_dir, device=args.device)
    raw = index.model.get("space") == "raw"
    index.check_model(encoder.raw_identity if raw else encoder.identity)
    X, bad = encoder.features(args.images)
    if bad:
        pos, err = bad[0]
        raise DataError(f"query image {args.images[pos]} cannot be used: {err}")
    found, scores = index.search(X if raw else encoder.transform(X), args.k)
    predicted = encoder.predict_features(X)
    results = []
    for q, path in enumerate(args.images):
        hits = [{"rank": r + 1, "id": str(i), "path": p, "score": float(s)}
                for r, (i, p, s) in enumerate(zip(found[q], index.path_of(found[q]), scores[q])) if i]
        results.append({"query": str(path), "predicted": {c: str(v) for c, v in predicted.iloc[q].items()},
                        "results": hits})
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        pred = ", ".join(f"{k}={v}" for k, v in r["predicted"].items())
        print(f"{r['query']}  (predicted: {pred})")
        for h in r["results"]:
            print(f"  {h['rank']:>3}  {h['score']:.4f}  {h['id']}  {h['path']}")
    return 0


# ------------------------------------------------------------------------------------------------------ export
def cmd_export(args) -> int:
    from .bundle import load_model
    from .export import export_onnx, onnx_available

    if not onnx_available():
        raise CliError("export needs the packages onnx and onnxruntime: pip install 'attrboost[onnx]'")
    encoder = load_model(args.model, device="cpu")
    report = export_onnx(encoder, args.onnx, images=args.check_images or None)
    _say(f"wrote {args.onnx}: input uint8 {report['input_shape']} (resized + cropped RGB), output {encoder.width}-wide "
         f"vectors; ONNX Runtime vs PyTorch on {report['n_images']} image(s): min cosine {report['min_cosine']:.6f}, "
         f"max |diff| {report['max_abs_diff']:.2e}")
    return 0


# ------------------------------------------------------------------------------------------------------ serve
def cmd_serve(args) -> int:
    from importlib.util import find_spec

    try:
        import fastapi  # noqa: F401
        import uvicorn
        if find_spec("python_multipart") is None and find_spec("multipart") is None:
            raise ImportError("no module named python_multipart")  # FastAPI's upload parser
    except ImportError as exc:
        raise CliError(f"serve needs the packages fastapi, uvicorn and python-multipart ({exc}): "
                       f'pip install -e ".[serve]" in a clone, or pip install "attrboost[serve]"') from None
    from .serve import create_app, is_loopback

    if args.max_upload_mb <= 0:
        raise CliError(f"--max-upload-mb {args.max_upload_mb}: expected a positive number of megabytes")
    app = create_app(args.model, args.index, args.raw_index, device=args.device, k=args.k,
                     max_upload_bytes=int(args.max_upload_mb * 1024 * 1024))
    if not is_loopback(args.host):
        _say(f"warning: --host {args.host} serves the page to every machine that can reach this one, without "
             f"authentication; the default 127.0.0.1 serves this machine only")
    _say(f"attrboost serve: http://{args.host}:{args.port}/  (Ctrl-C stops)")
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


# ------------------------------------------------------------------------------------------------------ demo-data
def cmd_demo_data(args) -> int:
    from .data.synthetic import generate_synthetic

    out = Path(args.out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CliError(f"{args.out_dir}: expected a new or empty folder")
    try:
        generate_synthetic(out, n_groups=args.n_groups, per_group=args.per_group, seed=args.seed,
                           progress=not args.quiet)
    except ValueError as exc:  # a count or seed out of range, named by the generator
        raise CliError(f"demo-data: {exc}") from None
    n = sum(1 for _ in (out / "images").iterdir())
    _say(f"wrote {out / 'styles.csv'} and {n} images in {out / 'images'} (the embedded synthetic catalogue"
         f"{'' if (args.n_groups, args.per_group, args.seed) == (110, 44, 0) else ', non-default parameters'})")
    return 0


# ------------------------------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    from .heads import TASKS
    from .index import KINDS

    p = argparse.ArgumentParser(prog="attrboost", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, batch=True):
        sp.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu)")
        if batch:
            sp.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
        sp.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    f = sub.add_parser("fit", help="train a boosted encoder on a labelled CSV and save it as a model bundle")
    f.add_argument("--csv", required=True, help="the catalogue: one row per image")
    f.add_argument("--images", help="folder of the images (default: the CSV's folder)")
    f.add_argument("--attributes", required=True, help="comma-separated attribute columns, e.g. colour,shape")
    f.add_argument("--id-column", default="id", help="id column; images at IMAGES/<id>.jpg (default id)")
    f.add_argument("--path-column", help="column holding each image's path (relative to --images) instead")
    f.add_argument("--image-ext", default=".jpg", help="images at IMAGES/<id><ext> (default .jpg)")
    f.add_argument("--text-column", help="product-name column: tags for task2/task3")
    f.add_argument("--backbone", default="efficientnet_lite0", help="frozen backbone (default efficientnet_lite0)")
    f.add_argument("--task", default="task1", choices=TASKS, help="head objective (default task1)")
    f.add_argument("--out", required=True, help="model bundle directory to write")
    f.add_argument("--val-fraction", type=float, default=0.1, help="validation part for model selection (0.1)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--max-epochs", type=int, help="cap on training epochs (default: BoostHead's)")
    common(f)
    f.set_defaults(func=cmd_fit)

    i = sub.add_parser("index", help="embed images with a saved model and write (or grow) a faiss index")
    i.add_argument("--model", required=True, help="model bundle directory (attrboost fit --out)")
    i.add_argument("--images", help="folder of images to index (searched recursively); with --csv: their folder")
    i.add_argument("--csv", help="CSV listing the images (--id-column / --path-column)")
    i.add_argument("--id-column", default="id")
    i.add_argument("--path-column")
    i.add_argument("--image-ext", default=".jpg", help="with --csv and no --path-column: IMAGES/<id><ext>")
    i.add_argument("--out", required=True, help="index directory")
    i.add_argument("--kind", default="flat", choices=KINDS, help="flat (exact, default) | hnsw | ivfpq")
    i.add_argument("--add", action="store_true", help="append to the existing index in --out")
    i.add_argument("--raw", action="store_true", help="index the frozen backbone features, without the head "
                   "(the baseline for serve --raw-index)")
    i.add_argument("--engine", default="local", choices=("local", "ray"),
                   help="local (this process, default) | ray: Ray Data, on this machine or a cluster "
                        "(pip install 'attrboost[scale]'); shards in OUT/shards/, a rerun skips finished ones")
    r = i.add_argument_group("--engine ray")
    r.add_argument("--address", help="Ray cluster to join (e.g. auto, HOST:6379, ray://HOST:10001); "
                                     "default: start a local Ray")
    r.add_argument("--actors", type=int, help="embedding actors, each loading the model once (default 1)")
    r.add_argument("--cpus-per-actor", type=float, help="CPUs (= torch threads) per actor (default: CPU actors "
                                                       "share the smallest node's CPUs; GPU actors 1)")
    r.add_argument("--gpus-per-actor", type=float, help="GPUs per actor, e.g. 1 or 0.5; > 0: embed on CUDA "
                                                       "(default 0: CPU actors)")
    r.add_argument("--shard-size", type=int, help="images per output shard, the unit of resuming (default 1000)")
    common(i)
    i.set_defaults(func=cmd_index)

    s = sub.add_parser("search", help="nearest indexed items of query images, with their predicted attributes")
    s.add_argument("--index", required=True, help="index directory (attrboost index --out)")
    s.add_argument("images", nargs="+", metavar="IMAGE")
    s.add_argument("-k", type=int, default=10, help="results per query (default 10)")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.add_argument("--model", help="model bundle (default: the one the index was built with)")
    s.add_argument("--device", default="cpu")
    s.set_defaults(func=cmd_search)

    e = sub.add_parser("export", help="write backbone + head as one ONNX graph, checked against PyTorch")
    e.add_argument("--model", required=True)
    e.add_argument("--onnx", required=True, help="output .onnx file")
    e.add_argument("--check-images", nargs="*", help="images for the parity check (default: 2 random images)")
    e.set_defaults(func=cmd_export)

    v = sub.add_parser("serve", help="a search page (upload or pick an image; raw vs boosted) and a JSON API")
    v.add_argument("--model", required=True, help="model bundle directory (attrboost fit --out)")
    v.add_argument("--index", required=True, help="index of the boosted vectors (attrboost index --out)")
    v.add_argument("--raw-index", help="index of the frozen backbone features (attrboost index --raw), shown "
                   "beside the boosted results")
    v.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                   "only; 0.0.0.0 serves every network)")
    v.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    v.add_argument("-k", type=int, default=10, help="results per query shown by default (default 10)")
    v.add_argument("--max-upload-mb", type=float, default=10.0, help="largest accepted upload (default 10 MB)")
    v.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu)")
    v.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    v.set_defaults(func=cmd_serve)

    d = sub.add_parser("demo-data", help="write the embedded synthetic catalogue (styles.csv + images/) to a folder")
    d.add_argument("out_dir", metavar="OUT_DIR", help="new or empty folder")
    d.add_argument("--n-groups", type=int, default=110, help="attribute groups (default 110)")
    d.add_argument("--per-group", type=int, default=44, help="images per group (default 44)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=cmd_demo_data)
    return p


def main(argv: list[str] | None = None) -> int:
    from .backbones import WeightsUnavailableError
    from .bundle import BundleError
    from .data import DataError
    from .index import EmptyIndexError, IndexMismatchError
    from .scale import ScaleError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (CliError, DataError, BundleError, IndexMismatchError, EmptyIndexError, WeightsUnavailableError,
            ScaleError, FileNotFoundError) as exc:
        print(f"attrboost {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    sys.exit(main())
