"""Helper of tests/test_numerics.py, run in a fresh process: fit a small Task 1 head, print the code paths and
a hash of its embedding (the environment decides what MKL and oneDNN may use)."""
import hashlib

import numpy as np
import pandas as pd

import attrboost
from attrboost.heads import BoostHead
from attrboost.training import numerics, one_blas_thread, torch_threads

rng = np.random.default_rng(0)
n, d = 600, 512
group = rng.integers(0, 30, n)
centres = rng.normal(size=(30, d)).astype(np.float32)
X = (centres[group] + rng.normal(scale=2.0, size=(n, d))).astype(np.float32)
y = pd.DataFrame({"a": group % 5, "b": group % 6, "c": group % 3})
yv = y.assign(group=group)
head = BoostHead("task1", hidden_dim=256, max_epochs=4, patience=None, seed=0)
with torch_threads(1), one_blas_thread():
    head.fit(X[:400], y[:400], X_val=X[400:], y_val=yv[400:])
    emb = head.transform(X)
print(numerics(), "|", hashlib.sha256(np.ascontiguousarray(emb).tobytes()).hexdigest())
