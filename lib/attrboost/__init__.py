"""attrboost: boost a frozen image embedding for retrieval with multi-attribute labels.

Public API (imported on first use, so ``import attrboost`` stays light)::

    from attrboost import load_csv, extract_features, BoostHead, Encoder, load_model, save_model, VectorIndex

* catalogues: :func:`load_csv` (your own CSV), :func:`load_kaggle`, :func:`load_dataset`, :func:`sample_protocol`;
* frozen features: :func:`extract_features` (cached, resumable; :mod:`attrboost.features`);
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


def _pin_numerics() -> None:
    """Pin the CPU code paths that torch's training arithmetic takes, so that fixed seeds give the same bits on
    every x86-64 machine with AVX2, not only on one processor model.

    Measured: the same head fit (Task 1, synthetic Lite0 features, seed 0) ran 52 epochs on one CI machine and
    46 on another (Sapphire Rapids) because MKL picks its GEMM kernels and blocking by processor and cache
    size, and ATen its vector kernels by instruction set; training amplifies last-bit differences. With
    MKL's conditional numerical reproducibility on the AVX2 branch (``MKL_CBWR=AVX2``: "the same results on
    every Intel CPU supporting AVX2") and ATen on its AVX2 kernels, a fit gives the same bits whatever MKL
    or oneDNN may use on the host (``tests/test_numerics.py``), at a cost of about 10-20 % in head fits.
    Feature extraction (oneDNN convolutions) was already the same on both machines. Values the user set
    win; ``ATTRBOOST_NUMERICS=native`` leaves both alone (faster, not portable). Only takes effect if set
    before torch runs its first operation.
    """
    import platform

    if _os.environ.get("ATTRBOOST_NUMERICS", "portable") == "native":
        return
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return
    try:
        with open("/proc/cpuinfo") as f:
            if " avx2" not in f.read():
                return
    except OSError:
        pass  # not Linux: every x86-64 machine torch supports has AVX2 in practice
    _os.environ.setdefault("MKL_CBWR", "AVX2")
    _os.environ.setdefault("ATEN_CPU_CAPABILITY", "avx2")


_pin_numerics()

__version__ = "0.1.0"

_PUBLIC = {
    "load_csv": "data", "load_kaggle": "data", "load_dataset": "data", "sample_protocol": "data",
    "Catalogue": "data", "DataError": "data",
    "extract_features": "features", "BoostHead": "heads", "BundleError": "manifest",
    "MetricHead": "metric_head", "JointHead": "objectives",
    # the search wing's public names, imported on first use (the core itself never imports a wing)
    "Encoder": "search.encoder", "Encoded": "search.encoder",
    "save_model": "search.bundle", "load_model": "search.bundle",
    "VectorIndex": "search.index", "IndexMismatchError": "search.index", "EmptyIndexError": "search.index",
    "export_onnx": "search.export",
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
