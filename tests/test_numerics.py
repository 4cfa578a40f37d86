"""Fixed seeds give the same bits on other processors: attrboost pins torch's CPU code paths (MKL's AVX2
branch of conditional numerical reproducibility, ATen's AVX2 kernels) when it is imported.

A machine with another processor is emulated by capping what MKL and oneDNN may use on this one
(``MKL_ENABLE_INSTRUCTIONS``, ``ONEDNN_MAX_CPU_ISA``): a pinned fit must not change, an unpinned one does on
an AVX-512 machine (the check that this test can fail). Each fit runs in a fresh process, since these
settings are read once per process."""
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

HELPER = Path(__file__).with_name("_numerics_fit.py")
X86 = platform.machine().lower() in ("x86_64", "amd64")
CPUINFO = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""

pytestmark = pytest.mark.skipif(not (X86 and " avx2" in CPUINFO),
                                reason="the pinned code paths are x86-64 AVX2 ones (this machine has none)")

CAPPED = {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}  # what an AVX2-only processor offers


def fit(**env) -> tuple[str, str]:
    base = {k: v for k, v in os.environ.items()
            if k not in ("MKL_CBWR", "ATEN_CPU_CAPABILITY", "ATTRBOOST_NUMERICS", *CAPPED)}
    out = subprocess.run([sys.executable, str(HELPER)], env={**base, **env}, capture_output=True, text=True,
                         timeout=300, check=True).stdout.strip().splitlines()[-1]
    paths, digest = out.split(" | ")
    return paths, digest


def test_import_pins_the_code_paths_and_a_fit_gives_the_same_bits_on_a_lesser_processor():
    paths, pinned = fit()
    assert paths == "aten=AVX2 mkl_cbwr=AVX2"
    assert fit(**CAPPED) == (paths, pinned)


@pytest.mark.skipif(" avx512f" not in CPUINFO, reason="needs an AVX-512 machine to show the unpinned difference")
def test_without_pinning_the_same_fit_differs_on_a_lesser_processor():
    paths, native = fit(ATTRBOOST_NUMERICS="native")
    assert paths.startswith("aten=AVX512") and paths.endswith("mkl_cbwr=unset")
    if fit(ATTRBOOST_NUMERICS="native", **CAPPED)[1] == native:
        pytest.skip("this processor gives the same bits with MKL and oneDNN capped at AVX2 (the difference the "
                    "pinning guards against shows on some AVX-512 processors only, e.g. Sapphire Rapids)")
    assert fit()[1] != native  # pinning changes the bits here (the committed results are the pinned ones)


def test_values_the_user_set_win():
    paths, _ = fit(MKL_CBWR="AUTO", ATEN_CPU_CAPABILITY="default")
    assert paths == "aten=DEFAULT mkl_cbwr=AUTO"
