"""``attrboost fit`` as a library function: a labelled catalogue -> a fitted head, its backbone and its record.

:func:`fit_catalogue` uses what the study uses: the feature store (:func:`attrboost.features.extract_decodable`,
keyed by the catalogue's fingerprint, so a second objective or a retry after a failed fit extracts nothing
again), the tag rule (:func:`attrboost.data.tags.tags_of`, vocabulary from the training rows only) and the
objective's head with its defaults (:func:`attrboost.objectives.fit_head`: BoostHead, MetricHead or both), every
objective selected by the same rule (:data:`attrboost.objectives.SELECTION`: validation MAP@R, recorded in
``metrics.json``).
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
from ..objectives import (DEFAULT_OBJECTIVE, SELECTION, SELECTION_RULE, JointHead, fit_head, objective_of,
                          objective_problems)
from ..training import MAX_EPOCHS, PATIENCE

__all__ = ["FitResult", "fit_catalogue", "catalogue_problems", "MIN_ROWS"]

#: fewest decodable labelled rows a fit accepts: two groups of 4 (2 for validation, 2 for training each)
MIN_ROWS = 8


@dataclass
class FitResult:
    """head: the fitted head (:class:`~attrboost.heads.BoostHead`, :class:`~attrboost.metric_head.MetricHead` or
    :class:`~attrboost.objectives.JointHead`); backbone: its resolved weights; metrics: the record
    saved as ``metrics.json`` (validation scores, epochs, split sizes, undecodable images, the catalogue, the
    training history); failed: ``[(row, error)]`` of the images that could not be decoded (skipped)."""

    head: object
    backbone: backbones.ResolvedWeights
    metrics: dict
    failed: list[tuple[int, str]] = field(default_factory=list)


def fit_catalogue(cat: Catalogue, *, objective: str = DEFAULT_OBJECTIVE, backbone: str = "efficientnet_lite0",
                  weights=None, device: str = "cpu", batch_size: int = 32, val_fraction: float = 0.1, seed: int = 0,
                  max_epochs: int | None = None, progress: bool = True, record: dict | None = None,
                  say=print) -> FitResult:
    """Fit an ``objective`` head (:data:`attrboost.objectives.OBJECTIVES`) on ``backbone`` features of every
    labelled row of ``cat`` whose image decodes, selected by :data:`attrboost.objectives.SELECTION`.

    weights: the backbone's weights file (:func:`attrboost.backbones.resolve_weights`; offline use of a
    backbone whose weights are not on PyPI). record: more facts about the catalogue for ``metrics['catalogue']`` (its file, its text column). ``say``: where
    progress messages go.
    Raises :class:`~attrboost.data.DataError` with what to change (too few rows, no validation rows, no tags).
    """
    problems = catalogue_problems(cat, task=objective, val_fraction=val_fraction, seed=seed)
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
    if objective in ("task2", "task3"):
        vocab, tags = tags_of(items["text"], ~val, PROTOCOL_DEFAULTS["tag_min_count"])
        if not vocab:
            raise DataError(f"task {objective}: no word of the product names of the images that decode occurs more "
                            f"than {PROTOCOL_DEFAULTS['tag_min_count']} times in the training rows; use task1")
        fit_kw.update(tags=[t for t, v in zip(tags, val) if not v], tags_val=[t for t, v in zip(tags, val) if v])
    head = fit_head(objective, X[~val], fit_kw.pop("y"), progress=progress, seed=seed, max_epochs=max_epochs,
                    **fit_kw)
    parts = head.parts if isinstance(head, JointHead) else {objective: head}
    records = {name: _part_record(part) for name, part in parts.items()}
    metrics = {
        "objective": objective_of(head), "selection": SELECTION,
        "selection_rule": SELECTION_RULE.format(patience=PATIENCE, max_epochs=max_epochs or MAX_EPOCHS),
        **(records[objective] if len(records) == 1 else _joint_record(head, records, X[val], fit_kw["y_val"])),
        "n_train": int((~val).sum()), "n_val": int(val.sum()), "val_fraction": val_fraction, "seed": seed,
        "undecodable": [{"id": str(cat.items["id"].iat[p]), "path": cat.items["image_path"].iat[p], "error": e}
                        for p, e in failed],
        "catalogue": {**(record or {}), "fingerprint": cat.fingerprint, "attributes": attributes,
                      "report": cat.report},
    }
    if len(records) == 1:  # the history last, as before objectives
        metrics["history"] = metrics.pop("history")
    return FitResult(head, resolved, metrics, failed)


def _part_record(head) -> dict:
    """One fitted head's record: its validation scores at the kept epoch, epochs and the training history."""
    hist = head.history_
    best = hist.loc[hist["selected"]].iloc[0]
    return {"validation": {k: float(best[k]) for k in hist.columns if k.startswith("val_")},
            "best_epoch": int(head.best_epoch_), "n_epochs": int(head.n_epochs_), "stop_reason": head.stop_reason_,
            "history": json.loads(hist.to_json(orient="records"))}


def _joint_record(head: JointHead, records: dict, X_val, y_val) -> dict:
    """Task 1 + SupCon: the validation MAP@R of the joint embedding, Task 1's validation accuracies, and each
    part's own record."""
    from ..metrics import encode_attributes, group_codes, map_at_r_quiet

    groups = group_codes(encode_attributes(y_val, len(y_val), "y_val"))
    validation = {"val_map@r": float(map_at_r_quiet(head.transform(X_val), groups)),
                  **{k: v for k, v in records["task1"]["validation"].items() if k.startswith("val_acc_")}}
    return {"validation": validation, "parts": records}


def catalogue_problems(cat: Catalogue, *, task: str = DEFAULT_OBJECTIVE, val_fraction: float = 0.1,
                       seed: int = 0) -> list[str]:
    """Every reason ``cat`` cannot be fitted, found from its table alone (before any image is encoded): an
    attribute with a single value, too few rows, no validation rows under the split rule, no product names or
    no tag vocabulary for Tasks 2/3, an objective that cannot be trained here. ``task``: the objective."""
    items, problems = cat.items, list(objective_problems(task))
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
    m = result.metrics
    accs = ", ".join(f"{k[len('val_acc_'):]} {v:.3f}" for k, v in m["validation"].items() if k.startswith("val_acc_"))
    parts = m.get("parts") or {m["objective"]: m}
    epochs = "; ".join(f"{name + ' ' if len(parts) > 1 else ''}best epoch {p['best_epoch']} of {p['n_epochs']} "
                       f"({p['stop_reason']})" for name, p in parts.items())
    return (f"saved {out}: {m['objective']} on {result.backbone.name}, {m['n_train']} training / {m['n_val']} "
            f"validation rows, {epochs}; validation MAP@R {m['validation'].get('val_map@r', float('nan')):.3f}"
            + (f"; validation accuracy: {accs}" if accs else ""))
