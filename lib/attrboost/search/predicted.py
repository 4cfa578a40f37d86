"""The predicted attributes of an index's items, stored beside the ids and paths, and the filters over them.

When the model has attribute classifiers (objectives ``task1``, ``task3``, ``task1+supcon``), ``attrboost index``
stores each item's most probable value per attribute and its probability. :class:`Predictions` keeps them
columnar, one row per attribute: ``item_pred_codes.npy`` (int32 ``(n_attributes, n)``: the value's index in the
model's classes) and ``item_pred_conf.npy`` (float32 ``(n_attributes, n)``), plain ``.npy`` files memory-mapped on
load like the item table (:mod:`attrboost.search.items`); the attributes and their classes go into
``index.json`` (``"predicted"``). 8 bytes per item and attribute.

A **filter** is ``ATTRIBUTE:VALUE`` (the first ``:`` separates them; a value may contain more). Several values
of one attribute match any of them; filters on different attributes must all match. :meth:`Predictions.parse`
refuses an unknown attribute or value with a :class:`FilterError` that lists the known ones.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..cache import atomic_write

__all__ = ["Predictions", "FilterError", "FILES"]

FILES = ("item_pred_codes.npy", "item_pred_conf.npy")
_SHOW = 20  # known values listed in an error


class FilterError(ValueError):
    """A filter that names an attribute or a value the index does not know, or an index without predictions."""


class Predictions:
    """Predicted attribute values (codes into ``classes``) and their confidence, by item position.

    classes: attribute -> its values in code order (the model's classes, :attr:`Encoder.classes`).
    """

    def __init__(self, classes: dict[str, Sequence[str]]):
        self.classes = {str(a): [str(v) for v in vals] for a, vals in classes.items()}
        if not self.classes:
            raise ValueError("Predictions needs at least one attribute")
        self.attributes = list(self.classes)
        a = len(self.attributes)
        self._codes = [np.zeros((a, 0), np.int32)]
        self._conf = [np.zeros((a, 0), np.float32)]

    def __len__(self) -> int:
        return sum(c.shape[1] for c in self._codes)

    def __repr__(self) -> str:
        return f"Predictions(n={len(self)}, attributes={self.attributes})"

    def meta(self) -> dict:
        """What ``index.json`` records: the attributes and their classes."""
        return {"attributes": self.attributes, "classes": self.classes}

    # ------------------------------------------------------------------------------------------ append
    def append(self, codes, confidence) -> None:
        """Append items: ``codes`` and ``confidence`` of shape ``(m, n_attributes)`` (one row per item, as
        :meth:`Encoder.predict_codes <attrboost.search.encoder.Encoder.predict_codes>` gives them)."""
        codes, conf = np.asarray(codes), np.asarray(confidence, dtype=np.float32)
        a = len(self.attributes)
        if codes.ndim != 2 or codes.shape[1] != a or conf.shape != codes.shape:
            raise ValueError(f"predicted codes {codes.shape} and confidence {conf.shape}: expected (m, {a}) each")
        top = np.array([len(self.classes[x]) for x in self.attributes])
        if len(codes) and ((codes < 0) | (codes >= top)).any():
            raise ValueError("predicted codes out of range of the classes")
        self._codes.append(np.ascontiguousarray(codes.T, dtype=np.int32))
        self._conf.append(np.ascontiguousarray(conf.T))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(codes, confidence), each ``(n_attributes, n)``."""
        if len(self._codes) > 1:
            self._codes, self._conf = [np.concatenate(self._codes, 1)], [np.concatenate(self._conf, 1)]
        return self._codes[0], self._conf[0]

    # ------------------------------------------------------------------------------------------ lookups
    def at(self, positions) -> list[dict]:
        """Each position's predictions: ``{attribute: {"value": str, "confidence": float}}``."""
        codes, conf = self.arrays()
        pos = np.asarray(positions, dtype=np.int64).ravel()
        c, p = codes[:, pos], conf[:, pos]
        return [{a: {"value": self.classes[a][int(c[j, r])], "confidence": round(float(p[j, r]), 4)}
                 for j, a in enumerate(self.attributes)} for r in range(len(pos))]

    def parse(self, specs: Sequence[str]) -> dict[str, set[int]]:
        """``["ATTRIBUTE:VALUE", ...]`` -> attribute -> the allowed codes (:class:`FilterError` for an unknown
        attribute or value, or a spec without ``:``)."""
        allowed: dict[str, set[int]] = {}
        for spec in specs:
            attr, sep, value = str(spec).partition(":")
            attr, value = attr.strip(), value.strip()
            if not sep or not attr or not value:
                raise FilterError(f"filter {spec!r}: expected ATTRIBUTE:VALUE, e.g. "
                                  f"{self.attributes[0]}:{self.classes[self.attributes[0]][0]}")
            if attr not in self.classes:
                raise FilterError(f"filter {spec!r}: unknown attribute {attr!r}; the index predicts "
                                  f"{', '.join(self.attributes)}")
            values = self.classes[attr]
            if value not in values:
                shown = ", ".join(values[:_SHOW]) + (f", ... ({len(values)} in all)" if len(values) > _SHOW else "")
                raise FilterError(f"filter {spec!r}: {attr} has no value {value!r}; its values: {shown}")
            allowed.setdefault(attr, set()).add(values.index(value))
        return allowed

    def matcher(self, allowed: dict[str, set[int]]) -> Callable[[np.ndarray], np.ndarray]:
        """``keep(positions) -> bool array``: the items whose predictions pass every attribute's filter."""
        codes, _ = self.arrays()
        rows = [(self.attributes.index(a), np.fromiter(sorted(c), np.int32)) for a, c in allowed.items()]

        def keep(positions: np.ndarray) -> np.ndarray:
            pos = np.asarray(positions, dtype=np.int64)
            ok = np.ones(len(pos), dtype=bool)
            for j, codes_ok in rows:
                ok &= np.isin(codes[j, pos], codes_ok)
            return ok

        return keep

    # ------------------------------------------------------------------------------------------ files
    def save(self, directory: str | os.PathLike) -> list[str]:
        """Write :data:`FILES` (each atomically) into ``directory``; returns their names."""
        directory = Path(directory)
        for name, arr in zip(FILES, self.arrays()):
            atomic_write(directory / name, lambda tmp, a=arr: _save_npy(tmp, a))
        return list(FILES)

    @classmethod
    def load(cls, directory: str | os.PathLike, meta: dict, n: int, *, mmap: bool = True) -> "Predictions":
        """The predictions saved by :meth:`save`, ``meta`` from ``index.json``, ``n`` items expected (ValueError
        if the files disagree)."""
        directory = Path(directory)
        out = cls(meta["classes"])
        codes, conf = (np.load(directory / name, mmap_mode="r" if mmap else None, allow_pickle=False) for name in FILES)
        shape = (len(out.attributes), n)
        if codes.shape != shape or conf.shape != shape or codes.dtype != np.int32 or conf.dtype != np.float32:
            raise ValueError(f"{directory}: the predicted attributes are {codes.shape} {codes.dtype} / {conf.shape} "
                             f"{conf.dtype}, expected {shape} int32 / float32")
        out._codes, out._conf = [codes], [conf]
        return out


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
