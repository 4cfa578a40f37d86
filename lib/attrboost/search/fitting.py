"""``attrboost fit`` as a library function: a labelled catalogue -> a fitted head, its backbone and its record.

:func:`fit_catalogue` uses what the study uses: the feature store (:func:`attrboost.features.extract_decodable`,
keyed by the catalogue's fingerprint, so a second task or a retry after a failed fit extracts nothing
again), the tag rule (:func:`attrboost.data.tags.tags_of`, vocabulary from the training rows only) and
:class:`~attrboost.heads.BoostHead` with its defaults (the study's model selection: validation MAP@R).
The validation part is :func:`attrboost.data.sampling.validation_split` (per group, so model selection has
pairs to rank in a catalogue of any shape; the study's protocol sample, 100 groups x 40 images, draws a
random 10 % of its training part instead).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .. import backbones
from ..data import Catalogue, DataError
from ..data.sampling import PROTOCOL_DEFAULTS, validation_split
from ..data.tags import tags_of
from ..features import extract_decodable
from ..heads import BoostHead

__all__ = ["FitResult", "fit_catalogue", "catalogue_problems", "MIN_ROWS"]

#: fewest decodable labelled rows a fit accepts: two groups of 4 (2 for validation, 2 for training each)
MIN_ROWS = 8


@dataclass
class FitResult:
    """head: the fitted :class:`~attrboost.heads.BoostHead`; backbone: its resolved weights; metrics: the record
    saved as ``metrics.json`` (validation scores, epochs, split sizes, undecodable images, the catalogue, the
    training history); failed: ``[(row, error)]`` of the images that could not be decoded (skipped)."""

    head: BoostHead
    backbone: backbones.ResolvedWeights
    metrics: dict
    failed: list[tuple[int, str]] = field(default_factory=list)


def fit_catalogue(cat: Catalogue, *, task: str = "task1", backbone: str = "efficientnet_lite0", weights=None,
                  device: str = "cpu", batch_size: int = 32, val_fraction: float = 0.1, seed: int = 0,
                  max_epochs: int | None = None, progress: bool = True, record: dict | None = None,
                  say=print) -> FitResult:
    """Fit a ``task`` head on ``backbone`` features of every labelled row of ``cat`` whose image decodes.

    weights: the backbone's weights file (:func:`attrboost.backbones.resolve_weights`; offline use of a
    backbone whose weights are not on PyPI). record: more facts about the catalogue for ``metrics['catalogue']`` (its file, its text column). ``say``: where
    progress messages go.
    Raises :class:`~attrboost.data.DataError` with what to change (too few rows, no validation rows, no tags).
    """
    problems = catalogue_problems(cat, task=task, val_fraction=val_fraction, seed=seed)
    if problems:
        raise DataError("the catalogue cannot be fitted (nothing was encoded):\n  " + "\n  ".join(problems))
    resolved = backbones.resolve_weights(backbone, weights)
    attributes = list(cat.attributes)
    items = cat.items
    ok, X, failed = extract_decodable(resolved, items["image_path"].tolist(), items["id"].tolist(), device=device,
                                      batch_size=batch_size, dataset_fp=cat.fingerprint, progress=progress)
    if failed:
        say(f"skipped {len(failed)} image(s) that cannot be decoded, e.g. {failed[0][1]}")
    if len(ok) < MIN_ROWS:
        raise DataError(f"{len(ok)} of {len(items)} labelled rows have an image that decodes; a fit needs at "
                        f"least {MIN_ROWS} (groups of 4 or more rows sharing every attribute value)")
    items = items.iloc[ok].reset_index(drop=True)
    labels = items[attributes].astype(str)
    val = validation_split(labels, val_fraction, seed)
    fit_kw = {"y": labels[~val].reset_index(drop=True), "X_val": X[val], "y_val": labels[val].reset_index(drop=True)}
    if task in ("task2", "task3"):
        vocab, tags = tags_of(items["text"], ~val, PROTOCOL_DEFAULTS["tag_min_count"])
        if not vocab:
            raise DataError(f"task {task}: no word of the product names of the images that decode occurs more "
                            f"than {PROTOCOL_DEFAULTS['tag_min_count']} times in the training rows; use task1")
        fit_kw.update(tags=[t for t, v in zip(tags, val) if not v], tags_val=[t for t, v in zip(tags, val) if v])
    head_kw = {"seed": seed, "progress": progress}
    if max_epochs is not None:
        head_kw["max_epochs"] = max_epochs
    head = BoostHead(task, **head_kw).fit(X[~val], **fit_kw)
    hist = head.history_
    best = hist.loc[hist["selected"]].iloc[0]
    metrics = {
        "objective": task, "selection": head.selection,
        "validation": {k: float(best[k]) for k in hist.columns if k.startswith("val_")},
        "best_epoch": int(head.best_epoch_), "n_epochs": int(head.n_epochs_), "stop_reason": head.stop_reason_,
        "n_train": int((~val).sum()), "n_val": int(val.sum()), "val_fraction": val_fraction, "seed": seed,
        "undecodable": [{"id": str(cat.items["id"].iat[p]), "path": cat.items["image_path"].iat[p], "error": e}
                        for p, e in failed],
        "catalogue": {**(record or {}), "fingerprint": cat.fingerprint, "attributes": attributes,
                      "report": cat.report},
        "history": json.loads(hist.to_json(orient="records")),
    }
    return FitResult(head, resolved, metrics, failed)


def catalogue_problems(cat: Catalogue, *, task: str = "task1", val_fraction: float = 0.1, seed: int = 0) -> list[str]:
    """Every reason ``cat`` cannot be fitted, found from its table alone (before any image is encoded): an
    attribute with a single value, too few rows, no validation rows under the split rule, no product names or
    no tag vocabulary for Tasks 2/3."""
    items, problems = cat.items, []
    for a in cat.attributes:
        values = items[a].astype(str).unique()
        if len(values) < 2:
            problems.append(f"attribute {a!r} has one value ({values[0]!r}) in all {len(items)} rows: it cannot be "
                            f"learned or tell items apart; leave it out of the attributes")
    if len(items) < MIN_ROWS:
        problems.append(f"{len(items)} labelled rows; a fit needs at least {MIN_ROWS}: groups (rows sharing every "
                        f"attribute value) of 4 or more rows, of which 2 go to the validation part")
    else:
        labels = items[list(cat.attributes)].astype(str)
        try:
            val = validation_split(labels, val_fraction, seed)
        except DataError as exc:
            problems.append(str(exc))
            val = None
        if task in ("task2", "task3"):
            names = items["text"].astype(str)
            if not names.str.strip().any():
                problems.append(f"task {task} learns the words of the product names, but the text column is empty")
            elif val is not None:
                vocab, _ = tags_of(names, ~val, PROTOCOL_DEFAULTS["tag_min_count"])
                if not vocab:
                    problems.append(f"task {task}: no word of the product names occurs more than "
                                    f"{PROTOCOL_DEFAULTS['tag_min_count']} times in the training rows; use task1")
    return problems


def summary_line(result: FitResult, out: str | Path) -> str:
    """One line for the user: what was saved, on how many rows, the selected epoch and validation accuracy."""
    m, head = result.metrics, result.head
    accs = ", ".join(f"{k[len('val_acc_'):]} {v:.3f}" for k, v in m["validation"].items() if k.startswith("val_acc_"))
    return (f"saved {out}: {head.task} on {result.backbone.name}, {m['n_train']} training / {m['n_val']} validation "
            f"rows, best epoch {head.best_epoch_} of {head.n_epochs_} ({head.stop_reason_})"
            + (f"; validation accuracy: {accs}" if accs else ""))
