"""The original sampling protocol, seeded, plus a validation part for honest model selection.

Protocol (docs/protocol.md): group products by the full tuple of attributes; drop groups with fewer than
``min_group_size`` (40) images; pick ``n_groups`` (100) groups at random; sample ``per_group`` (40)
images from each (4,000); split off ``n_test`` (1,000) test images. The split is

* ``"random"`` (default): a random permutation of the 4,000 images, so test groups are also seen
  in training (the likelier reading of the original);
* ``"by_group"``: by position after concatenating the groups in their random order, so the test
  set is the last ``n_test`` images, i.e. groups never seen in training (when ``n_test`` is not a
  multiple of ``per_group`` one group straddles the boundary, as a positional split would do).

Each row's part (``items["part"]``: ``train``, ``val`` or ``test``) is set by the split. A
validation part (``val_fraction`` of the training part, default 10%) is carved from the training
part *the same way* (random, or the last positions for ``by_group``); it is the only data used for
model selection. The test part is used once, for the final numbers.

Images are checked for readability as they are sampled: an unreadable file is skipped (counted in
``report["skipped_unreadable"]`` with the first ids) and the group's next image is taken; a group
left with too few readable images is replaced by the next qualifying group.

Tags: product names are normalised (:mod:`.tags`) and the vocabulary is the words seen more than
``tag_min_count`` times *in the training part's names* (:func:`.tags.tags_of`, the same rule as
``attrboost fit``): validation and test names never decide which words survive, so no evaluated item
shapes the Task 2/3 targets. Every row's tags are filtered by that vocabulary (Tasks 2/3 targets, and the
``paper_map@10_filtered`` variant; the paper metric itself reads the unfiltered names).
"""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..cache import fingerprint as _fingerprint
from ..checks import check_int
from .catalogue import Catalogue, DataError, load_image
from .tags import tags_of

SPLITS = ("random", "by_group")
PARTS = ("train", "val", "test")


@dataclass
class Sample:
    """A protocol sample: ``items`` adds ``group`` (int), ``part`` (train/val/test) and ``tags``.

    ``part`` is the row's part of the sample; ``params["split"]`` is how the parts were drawn
    (:data:`SPLITS`: ``random`` or ``by_group``).
    """

    items: pd.DataFrame
    attributes: tuple[str, ...]
    vocab: list[str]
    params: dict
    fingerprint: str
    dataset: str
    dataset_fingerprint: str
    report: dict = field(default_factory=dict)

    def part(self, name: str) -> pd.DataFrame:
        """Rows of one part: ``train`` (fit), ``val`` (selection), ``test`` (final), ``trainval``."""
        if name == "trainval":
            return self.items[self.items["part"] != "test"]
        if name not in PARTS:
            raise ValueError(f"unknown part {name!r}; expected one of {[*PARTS, 'trainval']}")
        return self.items[self.items["part"] == name]

    def labels(self, name: str) -> np.ndarray:
        return self.part(name)[list(self.attributes)].to_numpy(dtype=object)

    def tags(self, name: str) -> list[list[str]]:
        return list(self.part(name)["tags"])

    def names(self, name: str) -> list[str] | None:
        """The product names (the catalogue's ``text`` column) of one part: the original paper
        metric's tokens come from them (:func:`attrboost.metrics.paper_tokens`). None when the
        items have no ``text`` column."""
        part = self.part(name)
        return list(part["text"]) if "text" in part.columns else None

    def mask(self, name: str) -> np.ndarray:
        return self.items.index.isin(self.part(name).index)

    def __repr__(self) -> str:
        counts = self.items["part"].value_counts().to_dict()
        return (f"Sample({self.dataset!r}, {len(self.items)} items in {self.items['group'].nunique()} groups, "
                f"split={self.params['split']!r}, parts={counts}, vocab={len(self.vocab)} words)")


def _readable(path: str) -> bool:
    """Whether the study's decoder (:func:`~attrboost.data.catalogue.load_image`) can decode the file."""
    try:
        load_image(path)
        return True
    except Exception:  # noqa: BLE001 - any decoding failure means "unreadable"
        return False


def group_sizes(cat: Catalogue) -> pd.Series:
    """Number of items per full attribute tuple, largest first."""
    return cat.items.groupby(list(cat.attributes), sort=True).size().sort_values(ascending=False, kind="stable")


def sample_protocol(cat: Catalogue, *, n_groups: int = 100, per_group: int = 40, min_group_size: int | None = None,
                    n_test: int | None = None, split: str = "random", val_fraction: float = 0.1, seed: int = 0,
                    tag_min_count: int = 5, check_images: bool = True) -> Sample:
    """Draw the protocol sample from a catalogue (see the module docstring)."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: expected one of {list(SPLITS)}")
    check_int(n_groups, "n_groups")
    check_int(per_group, "per_group")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction={val_fraction!r}: expected a number in [0, 1)")
    min_group_size = per_group if min_group_size is None else min_group_size
    if min_group_size < per_group:
        raise ValueError(f"min_group_size={min_group_size} is smaller than per_group={per_group}")
    total = n_groups * per_group
    n_test = round(total / 4) if n_test is None else n_test
    if not 0 < n_test < total:
        raise ValueError(f"n_test={n_test}: expected between 1 and {total - 1} (n_groups * per_group - 1)")

    attrs = list(cat.attributes)
    items = cat.items
    keys = items[attrs].astype(str).agg("\x1f".join, axis=1)
    sizes = keys.value_counts()
    qualifying = sorted(sizes.index[sizes >= min_group_size])
    if len(qualifying) < n_groups:
        raise DataError(f"{cat.name}: only {len(qualifying)} attribute groups have at least {min_group_size} "
                        f"images (of {len(sizes)} groups); n_groups={n_groups} requested. Lower n_groups or "
                        "min_group_size/per_group.")

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(qualifying))
    members = {k: np.sort(v) for k, v in keys.groupby(keys).indices.items()}
    chosen_rows: list[np.ndarray] = []
    unreadable: list[str] = []
    for gi in order:
        if len(chosen_rows) == n_groups:
            break
        key = qualifying[gi]
        rows = members[key]
        rows = rows[rng.permutation(len(rows))]
        take = []
        for r in rows:
            if not check_images or _readable(items["image_path"].iat[r]):
                take.append(r)
                if len(take) == per_group:
                    break
            else:
                unreadable.append(items["id"].iat[r])
        if len(take) == per_group:
            chosen_rows.append(np.asarray(take))
    if len(chosen_rows) < n_groups:
        raise DataError(f"{cat.name}: only {len(chosen_rows)} groups have {per_group} readable images "
                        f"({len(unreadable)} unreadable files, first ids {unreadable[:5]}); "
                        f"n_groups={n_groups} requested")

    rows = np.concatenate(chosen_rows)
    df = items.iloc[rows].reset_index(drop=True).copy()
    df["group"] = np.repeat(np.arange(n_groups), per_group)
    n_trainval = total - n_test
    n_val = int(round(val_fraction * n_trainval))
    if split == "random":
        perm = rng.permutation(total)
    else:
        perm = np.arange(total)
    part = np.empty(total, dtype=object)
    part[perm[:n_trainval - n_val]] = "train"
    part[perm[n_trainval - n_val:n_trainval]] = "val"
    part[perm[n_trainval:]] = "test"
    df["part"] = part

    vocab, df["tags"] = tags_of(df["text"], (df["part"] == "train").to_numpy(), tag_min_count)

    params = dict(n_groups=n_groups, per_group=per_group, min_group_size=min_group_size, n_test=n_test,
                  split=split, val_fraction=val_fraction, seed=seed, tag_min_count=tag_min_count)
    report = dict(qualifying_groups=len(qualifying), skipped_unreadable=len(unreadable),
                  unreadable_ids=unreadable[:10], catalogue=dict(cat.report))
    fp = _fingerprint(cat.fingerprint, params, df["id"].tolist())
    return Sample(df, tuple(attrs), vocab, params, fp, cat.name, cat.fingerprint, report)


#: The protocol's defaults (n_groups, per_group, split, ...): :func:`sample_protocol`'s keyword defaults,
#: read by :class:`attrboost.study.pipeline.DataConfig` and :mod:`attrboost.study.params` (defined once, here).
PROTOCOL_DEFAULTS = {n: p.default for n, p in inspect.signature(sample_protocol).parameters.items()
                     if p.kind is inspect.Parameter.KEYWORD_ONLY}


# ----------------------------------------------------------------------------- sample transforms (06)
def subsample_train(sample: Sample, X: np.ndarray, n_train: int, seed: int) -> tuple[Sample, np.ndarray]:
    """The sample with only ``n_train`` labelled training images (validation and test unchanged).

    The kept images are the first ``n_train`` of a permutation seeded by ``seed`` alone, so budgets
    are nested. ``n_train`` equal to the training part returns ``sample`` and ``X`` unchanged (and so
    shares their caches).
    """
    items = sample.items
    if len(X) != len(items):
        raise ValueError(f"X has {len(X)} rows, the sample has {len(items)} items")
    train_pos = np.flatnonzero((items["part"] == "train").to_numpy())
    if not isinstance(n_train, (int, np.integer)) or not 2 <= n_train <= len(train_pos):
        raise ValueError(f"n_train must be an integer between 2 and the training part's size "
                         f"{len(train_pos)}, got {n_train!r}")
    if n_train == len(train_pos):
        return sample, X
    order = np.random.default_rng([int(seed), 20261127]).permutation(len(train_pos))
    drop = np.zeros(len(items), dtype=bool)
    drop[train_pos[order[n_train:]]] = True
    keep = ~drop
    sub = dataclasses.replace(
        sample, items=items[keep], fingerprint=_fingerprint(sample.fingerprint, "train_subset", int(n_train), int(seed)),
        report={**sample.report, "train_subset": int(n_train)})
    return sub, np.ascontiguousarray(X[keep])


def without_attribute(sample: Sample, attribute: str) -> Sample:
    """The sample with one attribute removed from the *training targets* (Task 1 ablation).

    Evaluate the resulting embeddings with the original sample: the ground truth keeps every attribute.
    """
    if attribute not in sample.attributes:
        raise ValueError(f"unknown attribute {attribute!r}; the sample's attributes are {list(sample.attributes)}")
    return dataclasses.replace(sample, attributes=tuple(a for a in sample.attributes if a != attribute),
                               fingerprint=_fingerprint(sample.fingerprint, "without", attribute))


def validation_split(labels: pd.DataFrame, val_fraction: float, seed: int) -> np.ndarray:
    """Boolean validation mask over a labelled catalogue (``attrboost fit``), drawn per group (full attribute
    tuple) so model selection's retrieval score has pairs to rank: from every group of at least 4 rows, a
    seeded ``val_fraction`` of its rows (at least 2; at least 2 stay in training); smaller groups stay in
    training. Rows with a label value the training part lacks are then moved back (a head's classes come from
    the training labels). Raises :class:`DataError` with what to change when no validation row is left."""
    n = len(labels)
    if not 0 < val_fraction < 1:
        raise DataError(f"val_fraction={val_fraction}: expected a fraction in (0, 1), e.g. 0.1")
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
    if not val.any():
        sizes = pd.Series(groups).value_counts()
        raise DataError(f"no validation rows: model selection needs groups (rows sharing every attribute value) "
                        f"of at least 4 rows, and {n} labelled rows make {len(sizes)} groups, the largest of "
                        f"{int(sizes.max()) if len(sizes) else 0} rows; label more rows per group, or use fewer "
                        f"attributes")
    return val

