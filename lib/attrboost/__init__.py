"""attrboost: boost a frozen image embedding for retrieval with multi-attribute labels.

Public API (imported on first use, so ``import attrboost`` stays light)::

    from attrboost import load_csv, extract_features, BoostHead, Encoder, load_model, save_model, VectorIndex

* catalogues: :func:`load_csv` (your own CSV), :func:`load_kaggle`, :func:`load_dataset`, :func:`sample_protocol`;
* frozen features: :func:`extract_features` (cached, resumable);
* the head: :class:`BoostHead` (``fit`` / ``transform`` / ``save`` / ``load``);
* the encoder (images -> boosted vectors): :class:`Encoder`; saved models: :func:`save_model`, :func:`load_model`;
* search: :class:`VectorIndex` (faiss; ``add`` / ``search`` / ``save`` / ``load``); ONNX: :func:`export_onnx`.
"""
import importlib as _importlib
import os as _os

# OpenMP threads that busy-wait between parallel regions steal the CPU from everything else on a small
# machine (measured about 2x slower extraction when another job shares 2 cores). Passive waiting costs
# nothing when the machine is idle. Only takes effect if set before torch is first imported; a value the
# user set wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

_PUBLIC = {
    "load_csv": "data", "load_kaggle": "data", "load_dataset": "data", "sample_protocol": "data",
    "Catalogue": "data", "DataError": "data",
    "extract_features": "extract", "BoostHead": "heads",
    "Encoder": "encoder", "Encoded": "encoder",
    "save_model": "bundle", "load_model": "bundle", "BundleError": "bundle",
    "VectorIndex": "index", "IndexMismatchError": "index", "EmptyIndexError": "index",
    "export_onnx": "export",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(_importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'attrboost' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_PUBLIC))
