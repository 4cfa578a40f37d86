"""Parameter and input checks shared by the estimators (heads, baselines) and the metrics.

* :func:`check_int`: an integer parameter, through :func:`sklearn.utils.check_scalar`.
* :func:`check_features`: a finite 2-D float32 feature matrix, optionally of a fitted width.

Both raise errors that name the parameter or array, the value and what is expected.
"""
from __future__ import annotations

import numbers

import numpy as np
from sklearn.utils import check_scalar

__all__ = ["check_int", "check_features"]


def check_int(value, name: str, *, min_val: int = 1, allow_none: bool = False) -> int | None:
    """``value`` as an ``int >= min_val`` (None passes when ``allow_none``).

    TypeError for a non-integer (``bool`` included), ValueError below ``min_val``; the messages
    are :func:`sklearn.utils.check_scalar`'s, with the value and the None option added.
    """
    if value is None and allow_none:
        return None
    expected = f"an integer >= {min_val}" + (" or None" if allow_none else "")
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be {expected}, got {value!r}")
    try:
        check_scalar(value, name, numbers.Integral, min_val=min_val)
    except TypeError as exc:
        raise TypeError(f"{str(exc).rstrip('.')} (got {value!r}; expected {expected})") from None
    return int(value)


def check_features(X, name: str = "X", n_features: int | None = None) -> np.ndarray:
    """``X`` as a C-contiguous float32 ``(n_samples, n_features)`` array of finite values.

    ``n_features``: the width the estimator was fitted with (checked when given).
    """
    try:
        arr = np.asarray(X, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array of shape (n_samples, n_features): {exc}") from exc
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} has no samples")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values (after conversion to float32)")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(f"{name} has {arr.shape[1]} features, but the estimator was fitted with {n_features}")
    return np.ascontiguousarray(arr)
