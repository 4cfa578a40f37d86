"""The ``attrboost`` command: fit a boosted encoder on your own catalogue, index images, search, export.

::

    attrboost fit    --csv FILE --images DIR --attributes a,b,c [--id-column id] [--text-column name]
                     [--backbone efficientnet_lite0] [--objective task1|supcon|task1+supcon|task2|task3]
                     --out MODEL_DIR
    attrboost index  --model MODEL_DIR (--images DIR | --csv FILE) --out INDEX_DIR [--kind flat|hnsw|ivfpq] [--add]
                     [--raw] [--engine ray [--address ADDR] [--actors N] [--cpus-per-actor C] [--gpus-per-actor G]]
    attrboost search --index INDEX_DIR IMAGE... [-k 10] [--filter ATTRIBUTE:VALUE]... [--json]
    attrboost export --model MODEL_DIR --onnx FILE
    attrboost serve  --model MODEL_DIR --index INDEX_DIR [--raw-index RAW_DIR] [--host 127.0.0.1] [--port 7860]
    attrboost demo-data OUT_DIR      (the embedded synthetic catalogue as styles.csv + images/, to try the above)

``fit`` trains the head of ``--objective`` (:mod:`attrboost.objectives`) with its defaults and the one
model-selection rule on the labelled rows (:func:`attrboost.search.fitting.fit_catalogue`) and writes a model
bundle (:func:`attrboost.search.bundle.save_model`). ``index`` stores each item's predicted attributes when the
model has attribute classifiers; ``search --filter`` keeps the results whose predicted attributes match.
``index --raw`` indexes the frozen backbone features instead of the boosted vectors (the baseline
``serve --raw-index`` shows beside the boosted results).

Nothing is lost (:mod:`attrboost.search.artefacts`): ``fit`` and ``index`` check ``--out`` before any work (a new
or empty folder, or the same kind of artefact with ``--overwrite`` / ``--add``), hold a writer lock for the
whole command, and swap the finished artefact in atomically. Bad input ends with
``attrboost <command>: error: ...`` and exit status 2, before any image is encoded where it can be known then.
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
PARTIAL = ".encode-partial"  # the resumable encode's chunks: a sibling of --out, removed when the index is saved


class CliError(Exception):
    """A user error: printed as ``attrboost: error: ...``, exit status 2."""


def _say(msg: str) -> None:
    print(msg, file=sys.stderr)


# ------------------------------------------------------------------------------------------------------ fit
def cmd_fit(args) -> int:
    from .. import backbones
    from ..data import load_csv
    from .artefacts import check_out, writer_lock
    from .bundle import save_model
    from .fitting import fit_catalogue, summary_line

    attributes = [a.strip() for a in args.attributes.split(",") if a.strip()]
    if not attributes:
        raise CliError("--attributes: give at least one attribute column, e.g. --attributes colour,shape")
    if not backbones.get_spec(args.backbone).is_torch:
        raise CliError(f"--backbone {args.backbone}: a saved model needs a neural backbone; choose one of "
                       f"{', '.join(n for n in backbones.list_backbones() if backbones.get_spec(n).is_torch)}")
    if args.objective in ("task2", "task3") and not args.text_column:
        raise CliError(f"--objective {args.objective} learns tags from product names: give --text-column")
    check_out(args.out, "model", overwrite=args.overwrite)  # before any work
    cat = load_csv(args.csv, args.images or default_images(args.csv), attributes=attributes, id_column=args.id_column,
                   path_column=args.path_column, text_column=args.text_column, image_ext=args.image_ext)
    _say(f"{cat}: {len(cat.items)} labelled rows")
    with writer_lock(args.out):
        check_out(args.out, "model", overwrite=args.overwrite)  # again, now that no one else writes it
        result = fit_catalogue(cat, objective=args.objective, backbone=args.backbone, weights=args.weights,
                               device=args.device, batch_size=args.batch_size, val_fraction=args.val_fraction,
                               seed=args.seed, max_epochs=args.max_epochs, progress=not args.quiet, say=_say,
                               record={"csv": str(Path(args.csv).resolve()), "text_column": args.text_column})
        _save(args.out, lambda tmp: save_model(tmp, result.head, result.backbone, metrics=result.metrics),
              "the encoded images are kept in the feature store: a new attempt does not encode them again")
    _say(summary_line(result, args.out))
    return 0


def _save(out, write, kept: str, keep: tuple[str, ...] = ()) -> None:
    """Write an artefact with ``write(directory)`` into a temporary sibling of ``out`` and swap it in
    (:func:`~attrboost.search.artefacts.atomic_directory`); a write error (disk full, ...) is a clear error and
    ``out`` stays as it was."""
    from safetensors import SafetensorError

    from .artefacts import atomic_directory

    try:
        with atomic_directory(out, keep=keep) as tmp:
            write(tmp)
    except (OSError, SafetensorError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CliError(f"could not write {out}: {reason}; {out} is unchanged ({kept})") from None


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
    from ..data.catalogue import read_table

    csv_path = Path(args.csv).expanduser()
    if not csv_path.is_file():
        raise CliError(f"--csv {args.csv}: no such file")
    df = read_table(csv_path)
    need = [c for c in (args.id_column, args.path_column) if c]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise CliError(f"{csv_path}: missing column(s) {missing}; the CSV has {list(df.columns)}")
    base = Path(args.images or default_images(args.csv)).expanduser().resolve()
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
    from .artefacts import check_out, writer_lock

    if not (args.images or args.csv):
        raise CliError("give the images to index: --images DIR or --csv FILE")
    _check_engine(args)
    check_out(args.out, "index", overwrite=args.overwrite, add=args.add)  # before any work
    with writer_lock(args.out):
        check_out(args.out, "index", overwrite=args.overwrite, add=args.add)
        return _index(args)


def _check_same_files(index, ids: list[str], paths: list[str], out) -> None:
    """An item is its id AND its file: ids already indexed must come with the file indexed under them."""
    if not ids:
        return
    indexed = index.items.paths_at(index.items.positions(ids))
    other = [(i, old, new) for i, old, new in zip(ids, indexed, paths)
             if old and os.path.abspath(old) != os.path.abspath(new)]
    if other:
        i, old, new = other[0]
        raise CliError(f"{len(other)} image(s) have ids already in {out} but are other files, e.g. id {i!r}: "
                       f"indexed from {old}, now {new} (ids are the file names without extension); give the new "
                       f"images ids of their own with --id-prefix PREFIX (e.g. --id-prefix shop2/)")


def _index(args) -> int:
    from .bundle import load_model
    from .index import VectorIndex

    out = Path(args.out)
    partial = out.parent / f".{out.name}{PARTIAL}"
    ids, paths = _csv_items(args) if args.csv else _image_files(args.images)
    encoder = load_model(args.model, device=args.device, batch_size=args.batch_size)
    if args.id_prefix:
        ids = [f"{args.id_prefix}{i}" for i in ids]
    own = encoder.raw_identity if args.raw else encoder.identity
    identity = {**own, "bundle": str(Path(args.model).resolve())}
    if args.add:
        index = VectorIndex.load(out)
        index.check_model(own)
        if index.predicted is None and encoder.predicts_attributes:
            _say(f"{out} keeps no predicted attributes (built before they were stored, or with --engine ray); "
                 f"the new images get none either: rebuild it with --overwrite to store them")
        known = np.flatnonzero(index.items.contains(ids))
        _check_same_files(index, [ids[k] for k in known], [paths[k] for k in known], out)
        keep = sorted(set(range(len(ids))) - set(known.tolist()))
        _say(f"{len(known)} of {len(ids)} images are already in {out} (same id, same file); adding {len(keep)}")
        ids, paths = [ids[k] for k in keep], [paths[k] for k in keep]
    else:  # predicted attributes are stored when the model predicts them (not by the Ray actors, yet)
        keep_predicted = encoder.predicts_attributes and args.engine != "ray"
        index = VectorIndex(identity["width"], args.kind, model=identity,
                            classes=encoder.classes if keep_predicted else None)
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
        enc = encoder.encode(paths, ids, progress=not args.quiet, checkpoint=partial, return_features=args.raw,
                             return_predictions=index.predicted is not None)
        n_ok, failed = len(enc), enc.failed
        if n_ok:
            index.add(enc.features if args.raw else enc.vectors, enc.ids, enc.paths, predicted=enc.predicted)
    if failed:
        _say(f"{len(failed)} image(s) could not be decoded and were skipped:")
        for f in failed[:20]:  # the error names the file
            _say(f"  {f['error'] if f['path'] in f['error'] else f['path'] + ': ' + f['error']}")
    if n_ok == 0:
        raise CliError(f"none of the {len(paths)} images could be decoded; nothing indexed")
    index.report.setdefault("undecodable", [])
    index.report["undecodable"] += failed
    _save(out, index.save, "the encoded images are kept: the same command resumes without encoding them again",
          keep=("shards",))
    shutil.rmtree(partial, ignore_errors=True)
    recall = index.report.get("recall_at_10")
    _say(f"{out}: {index.kind} index of {len(index)} images{' (raw backbone features)' if args.raw else ''} (+{n_ok}, {len(failed)} undecodable)"
         + (f"; recall@{recall['k']} vs exact {recall['recall']:.3f} on {recall['queries']} queries" if recall and
            not args.add else ""))
    return 0


# ------------------------------------------------------------------------------------------------------ search
def cmd_search(args) -> int:
    from .bundle import load_model
    from ..data import DataError
    from .index import VectorIndex
    from .predicted import FilterError

    index = VectorIndex.load(args.index)
    keep = None
    if args.filter:  # checked before the model is loaded or any image read
        if index.predicted is None:
            raise CliError(f"--filter: {args.index} keeps no predicted attributes (its model has no attribute "
                           f"classifiers, or it was indexed before they were stored), so it cannot be filtered")
        try:
            keep = index.predicted.matcher(index.predicted.parse(args.filter))
        except FilterError as exc:
            raise CliError(f"--filter: {exc}") from None
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
    found, scores = index.search(X if raw else encoder.transform(X), args.k, keep=keep)
    predicted = encoder.predict_features(X)
    results = []
    for q, path in enumerate(args.images):
        ids = [str(i) for i in found[q] if i]
        attrs = index.predicted.at(index.items.positions(ids)) if index.predicted is not None else [None] * len(ids)
        hits = [{"rank": r + 1, "id": i, "path": p, "score": float(s), "predicted": a}
                for r, (i, p, s, a) in enumerate(zip(ids, index.path_of(ids), scores[q], attrs))]
        results.append({"query": str(path), "predicted": {c: str(v) for c, v in predicted.iloc[q].items()},
                        "filter": list(args.filter or []), "results": hits})
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        pred = ", ".join(f"{k}={v}" for k, v in r["predicted"].items())
        print(f"{r['query']}  (predicted: {pred or 'none: the model has no attribute classifiers'})"
              + (f"  [filter: {'; '.join(r['filter'])}: {len(r['results'])} result(s)]" if r["filter"] else ""))
        for h in r["results"]:
            attrs = "" if h["predicted"] is None else "  " + ", ".join(
                f"{a}={v['value']} ({v['confidence']:.2f})" for a, v in h["predicted"].items())
            print(f"  {h['rank']:>3}  {h['score']:.4f}  {h['id']}  {h['path']}{attrs}")
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
    from ..data.synthetic import generate_synthetic

    out = Path(args.out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CliError(f"{args.out_dir}: expected a new or empty folder")
    try:
        generate_synthetic(out, n_groups=args.n_groups, per_group=args.per_group, seed=args.seed,
                           progress=not args.quiet)
    except ValueError as exc:  # a count or seed out of range, named by the generator
        raise CliError(f"demo-data: {exc}") from None
    except OSError as exc:
        raise CliError(f"cannot write {args.out_dir}: {exc.strerror or exc}; choose a folder you can write to") from None
    n = sum(1 for _ in (out / "images").iterdir())
    _say(f"wrote {out / 'styles.csv'} and {n} images in {out / 'images'} (the embedded synthetic catalogue"
         f"{'' if (args.n_groups, args.per_group, args.seed) == (110, 44, 0) else ', non-default parameters'})")
    return 0


# ------------------------------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    from ..objectives import DEFAULT_OBJECTIVE, OBJECTIVES
    from .index import KINDS

    p = argparse.ArgumentParser(prog="attrboost", description="Fit a boosted encoder on your own labelled catalogue, "
                                "index images with it, search them, export it, serve a search page.")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, batch=True):
        sp.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu)")
        if batch:
            sp.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
        sp.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    f = sub.add_parser("fit", help="train a boosted encoder on a labelled CSV and save it as a model bundle")
    f.add_argument("--csv", required=True, help="the catalogue: one row per image")
    f.add_argument("--images", help="folder of the images (default: images/ beside the CSV if it exists, else the "
                                    "CSV's folder)")
    f.add_argument("--attributes", required=True, help="comma-separated attribute columns, e.g. colour,shape")
    f.add_argument("--id-column", default="id", help="id column; images at IMAGES/<id>.jpg (default id)")
    f.add_argument("--path-column", help="column holding each image's path (relative to --images) instead")
    f.add_argument("--image-ext", default=".jpg", help="images at IMAGES/<id><ext> (default .jpg)")
    f.add_argument("--text-column", help="product-name column: tags for task2/task3")
    f.add_argument("--backbone", default="efficientnet_lite0", help="frozen backbone (default efficientnet_lite0)")
    f.add_argument("--weights", help="the backbone's weights file (for a backbone whose weights need a network)")
    f.add_argument("--objective", "--task", dest="objective", default=DEFAULT_OBJECTIVE, choices=OBJECTIVES,
                   metavar="OBJECTIVE",
                   help=f"what the head learns, one of {', '.join(OBJECTIVES)} (default {DEFAULT_OBJECTIVE}): "
                        f"task1 attribute classifiers; supcon "
                        f"a metric-learning head on the attribute group (no predicted attributes); task1+supcon both, "
                        f"their embeddings normalised and concatenated; task2/task3 product-name tags (and "
                        f"attributes). Every objective is selected by validation MAP@R. --task is an alias")
    f.add_argument("--out", required=True, help="model bundle directory to write (new or empty)")
    f.add_argument("--overwrite", action="store_true", help="replace the model bundle already in --out")
    f.add_argument("--val-fraction", type=float, default=0.1, help="validation part for model selection (0.1)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--max-epochs", type=int, help="cap on training epochs (default: BoostHead's)")
    common(f)
    f.set_defaults(func=cmd_fit)

    i = sub.add_parser("index", help="embed images with a saved model and write (or grow) a faiss index")
    i.add_argument("--model", required=True, help="model bundle directory (attrboost fit --out)")
    i.add_argument("--images", help="folder of images to index (searched recursively); with --csv: their folder "
                                    "(default: images/ beside the CSV if it exists, else the CSV's folder)")
    i.add_argument("--csv", help="CSV listing the images (--id-column / --path-column)")
    i.add_argument("--id-column", default="id")
    i.add_argument("--path-column")
    i.add_argument("--image-ext", default=".jpg", help="with --csv and no --path-column: IMAGES/<id><ext>")
    i.add_argument("--out", required=True, help="index directory")
    i.add_argument("--kind", default="flat", choices=KINDS, help="flat (exact, default) | hnsw | ivfpq")
    i.add_argument("--add", action="store_true", help="append to the existing index in --out")
    i.add_argument("--overwrite", action="store_true", help="replace the index already in --out")
    i.add_argument("--id-prefix", help="put PREFIX before every new id (images from another folder whose file "
                                       "names are already indexed ids)")
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
    s.add_argument("--filter", action="append", metavar="ATTRIBUTE:VALUE",
                   help="keep only results whose predicted ATTRIBUTE is VALUE, e.g. "
                        "--filter \"baseColour:Navy Blue\"; repeatable: values of one attribute match any of "
                        "them, different attributes must all match (needs an index with predicted attributes)")
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


def argument_problems(args) -> list[str]:
    """Every problem with the parsed arguments (values out of range, an unknown or unusable backbone or
    device, missing files or folders), found before any image is read."""
    from .. import backbones
    from ..inference import resolve_device

    problems = []
    for name, minimum in (("batch_size", 1), ("k", 1), ("max_epochs", 1), ("seed", 0), ("n_groups", 1),
                          ("per_group", 1)):
        value = getattr(args, name, None)
        if value is not None and value < minimum:
            flag = "-k" if name == "k" else "--" + name.replace("_", "-")
            problems.append(f"{flag} {value}: expected an integer >= {minimum}")
    fraction = getattr(args, "val_fraction", None)
    if fraction is not None and not 0 < fraction < 1:
        problems.append(f"--val-fraction {fraction}: expected a fraction between 0 and 1, e.g. 0.1")
    if getattr(args, "backbone", None) is not None:
        neural = [n for n in backbones.list_backbones() if backbones.get_spec(n).is_torch]
        if args.backbone not in neural:
            problems.append(f"--backbone {args.backbone}: expected one of {', '.join(neural)}")
    device = getattr(args, "device", None)
    if device is not None and getattr(args, "engine", None) != "ray":  # with Ray the actors choose (_check_engine)
        try:
            resolve_device(device)
        except (ValueError, RuntimeError) as exc:
            problems.append(f"--device {device}: {exc}")
    for name in ("csv", "weights", "model", "index", "raw_index"):
        value = getattr(args, name, None)
        if value is not None and not Path(value).expanduser().exists():
            problems.append(f"--{name.replace('_', '-')} {value}: no such {'file' if name in ('csv', 'weights') else 'folder'}")
    images = getattr(args, "images", None)
    if isinstance(images, str) and not Path(images).expanduser().is_dir():
        problems.append(f"--images {images}: no such folder")
    return problems


def default_images(csv_path: str) -> str:
    """Where a CSV's images are when ``--images`` is not given: ``images/`` beside the CSV (the Kaggle layout)
    when that folder exists, else the CSV's own folder."""
    beside = Path(csv_path).expanduser().parent / "images"
    return str(beside if beside.is_dir() else beside.parent)


def main(argv: list[str] | None = None) -> int:
    from ..backbones import WeightsUnavailableError
    from .bundle import BundleError
    from ..data import DataError
    from .index import EmptyIndexError, IndexMismatchError
    from .artefacts import ArtefactError
    from .scale import ScaleError

    parser = build_parser()
    args = parser.parse_args(argv)
    problems = argument_problems(args)
    if problems:  # every problem at once, before any work
        print(f"attrboost {args.command}: error: " + "\n  ".join(["bad arguments:", *problems]), file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except (CliError, DataError, BundleError, IndexMismatchError, EmptyIndexError, WeightsUnavailableError,
            ScaleError, ArtefactError, FileNotFoundError) as exc:
        print(f"attrboost {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    sys.exit(main())
