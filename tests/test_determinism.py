"""Thread-count independence: PixelPCA and the scikit-learn baselines give the same bytes with 1 or 2
BLAS / OpenMP / torch threads.

Multi-threaded OpenBLAS (float32 GEMM, ``gesdd``) rounds differently from single-threaded OpenBLAS; before
the fix the pca backbone's trailing components and NCA's optimiser turned that into different study
numbers on a machine with another thread count. Each test runs the step under every combination and
requires identical output bytes (``np.array_equal``), not closeness.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info, threadpool_limits

import attrboost
from attrboost.pixels import PixelPCA
from attrboost.study.baselines import GroupLDA, GroupNCA, PCAWhitening
from helpers import noisy_groups, pixels

# (BLAS/OpenMP threads, torch threads)
THREADS = [(1, 1), (2, 2), (2, 1), (1, 2)]


def under_each_thread_count(step) -> list[np.ndarray]:
    """``step()`` under each (BLAS/OpenMP, torch) thread setting; the caller's settings are restored."""
    old = torch.get_num_threads()
    outs = []
    try:
        for blas, torch_threads in THREADS:
            torch.set_num_threads(torch_threads)
            with threadpool_limits(limits=blas):
                outs.append(step())
    finally:
        torch.set_num_threads(old)
    return outs


def assert_all_identical(outs: list[np.ndarray]) -> None:
    for (blas, tt), out in zip(THREADS[1:], outs[1:]):
        assert out.dtype == outs[0].dtype and out.shape == outs[0].shape
        diff = np.abs(out.astype(np.float64) - outs[0]).max()
        assert np.array_equal(out, outs[0]), (f"{blas} BLAS / {tt} torch threads differ from 1 / 1 "
                                              f"(max |diff| {diff:.3g})")


def test_pixel_pca_is_identical_for_any_thread_count():
    # old code (multi-threaded sgesdd + sgemm): max |diff| 7e-4 on the projections at this size,
    # 0.8 with 2,048 components of 3,000 real 60x80 images
    X = pixels()
    outs = under_each_thread_count(lambda: PixelPCA(n_components=64, image_size=(20, 40)).fit(X[:250]).transform(X))
    assert outs[0].shape == (300, 64)
    assert_all_identical(outs)


def test_one_thread_restores_the_callers_thread_settings():
    X = pixels(n=80, w=4, h=5)
    before = ([i["num_threads"] for i in threadpool_info()], torch.get_num_threads())
    PixelPCA(n_components=8, image_size=(4, 5)).fit(X).transform(X)
    assert ([i["num_threads"] for i in threadpool_info()], torch.get_num_threads()) == before


def test_group_nca_is_identical_for_any_thread_count():
    X, g = noisy_groups()
    outs = under_each_thread_count(
        lambda: GroupNCA(n_components=16, pca_components=64, max_iter=50, seed=0).fit(X, g).transform(X))
    assert outs[0].shape == (300, 16)
    assert_all_identical(outs)


def test_pca_whitening_and_lda_are_identical_for_any_thread_count():
    # old code: whitening differs at this size (7e-15); LDA's differences (4.7e-10 on 2,700 x 1,280) need
    # real-image features, this LDA check passes on the old code too
    X, g = noisy_groups(n_groups=20, per_group=30, noise_dims=508)
    assert_all_identical(under_each_thread_count(lambda: PCAWhitening().fit(X).transform(X)))
    assert_all_identical(under_each_thread_count(lambda: GroupLDA().fit(X, g).transform(X)))


_CHILD = r"""
import hashlib, json, sys
import numpy as np
sys.path[:0] = [{tests!r}]
from helpers import noisy_groups, pixels
from attrboost.pixels import PixelPCA
from attrboost.study.baselines import GroupNCA
X = pixels()
Xt, g = noisy_groups()
out = {{"pca": PixelPCA(n_components=64, image_size=(20, 40)).fit(X[:250]).transform(X),
        "nca": GroupNCA(n_components=16, pca_components=64, max_iter=50, seed=0).fit(Xt, g).transform(Xt)}}
print(json.dumps({{k: hashlib.sha256(v.tobytes()).hexdigest() for k, v in out.items()}}))
"""


@pytest.mark.parametrize("threads", ["1", "2"])
def test_thread_env_vars_read_at_import_do_not_change_results(threads, tmp_path):
    """OpenBLAS and OpenMP read OPENBLAS_NUM_THREADS / OMP_NUM_THREADS when loaded: a fresh process with
    each setting gives the same bytes as this process (2 threads available on the CI machine)."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
           "PYTHONPATH": os.pathsep.join([str(Path(attrboost.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    child = _CHILD.format(tests=str(Path(__file__).parent))
    res = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    X = pixels()
    Xt, g = noisy_groups()
    here = {"pca": PixelPCA(n_components=64, image_size=(20, 40)).fit(X[:250]).transform(X),
            "nca": GroupNCA(n_components=16, pca_components=64, max_iter=50, seed=0).fit(Xt, g).transform(Xt)}
    assert got == {k: hashlib.sha256(v.tobytes()).hexdigest() for k, v in here.items()}
