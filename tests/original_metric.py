"""Test oracle: the original code's paper metric, step by step, on in-memory arrays.

Follows leobitz/boosting_image_retrieval, ``proc_lib.py`` (``read_annotation``'s tokens,
``get_score``, ``find_sims``, ``evaluate``, ``get_acc``) and ``evaluate.py`` (cosine matrix of the
test embeddings, test x test similarity matrix read by column), function by function and with the
same names and arguments, re-typed for this test (not the original's text). What differs:

* inputs are in-memory: ``id2prop`` is built from arrays instead of ``data/label.csv`` and the
  similarity matrix is built here (the original loaded ``vecs/test-sim.h5``, whose builder is not in
  the repository): ``sim_mat[i, j] = get_score(test[i], test[j])`` (``query_arg="b"``), or its
  transpose (``"a"``);
* ``find_sims``'s ``np.argsort`` (numpy's default, unstable) is made deterministic:
  :func:`_argsort_ties_high_index_first` is an ascending argsort whose ties come in *descending*
  index order, so after the original's ``np.flip`` ties come in ascending index order, the rule the
  library states;
* the cosine matrix ``psim`` is compared at float32 resolution (float64 product rounded to float32),
  the library's documented resolution; the original's was float32 arithmetic.

Nothing here is vectorised or shared with ``attrboost.metrics``.
"""
from __future__ import annotations

import math

import numpy as np


def _add_props(prop2idx: dict, prop) -> int:
    if prop not in prop2idx:
        prop2idx[prop] = len(prop2idx)
    return prop2idx[prop]


def read_annotation(attrs, names) -> dict:
    """id2prop: item name -> [attribute ids, token ids]; tokens as the original's CSV reader makes them."""
    prop2idx, tag2idx, id2prop = {}, {}, {}
    for k in range(len(names)):
        name = names[k]
        if name is None or (isinstance(name, float) and math.isnan(name)):
            name = ""
        field = name.lower().rstrip()  # the original lower-cases and strips the whole line; the name ends it
        tags = field.replace(" & ", "-").split(" ")
        props = np.array([_add_props(prop2idx, (j, p)) for j, p in enumerate(attrs[k])])
        tags = np.array([_add_props(tag2idx, t) for t in tags])
        id2prop[str(k)] = [props, tags]
    return id2prop


def get_score(id2prop, a, b):
    aprops, atags = id2prop[a]
    bprops, btags = id2prop[b]
    p = 1 if np.array_equal(aprops, bprops) else 0
    t = len([x for x in atags if x in btags])
    return p * t / len(atags)


def _argsort_ties_high_index_first(v):
    """Ascending argsort; equal values in descending index order (deterministic stand-in for np.argsort)."""
    n = len(v)
    return n - 1 - np.argsort(v[::-1], kind="stable")


def find_sims(name, sim_mat, idx2map):
    sims = sim_mat[:, idx2map[name]]
    argsort = _argsort_ties_high_index_first(sims)
    argsort = np.flip(argsort)[:11]
    return sims[argsort], argsort


def evaluate(actual, predicted, k=10):
    """Average precision at k (the original's ``evaluate``)."""
    if len(predicted) > k:
        predicted = predicted[:k]
    score = 0.0
    num_hits = 0.0
    for i, p in enumerate(predicted):
        if p in actual and p not in predicted[:i]:
            num_hits += 1.0
            score += num_hits / (i + 1.0)
    if not actual:
        return 0.0
    return score / min(len(actual), k)


def get_acc(psim, test, map2idx, idx2map, sim_mat):
    accs = []
    for i in range(len(test)):
        sims, ids = find_sims(test[i], psim, idx2map)
        pred_names = [map2idx[x] for x in ids[1:]]
        sims, ids = find_sims(test[i], sim_mat, idx2map)
        ground_names = [map2idx[x] for x in ids[1:]]
        accs.append(evaluate(ground_names, pred_names))
    return np.mean(accs) * 100


# ------------------------------------------------------------------ evaluate.py, on arrays
def similarity_matrix(attrs, names, query_arg="b"):
    """The test x test label-similarity matrix: ``sim[i, j] = get_score(i, j)``; transposed for ``"a"``."""
    id2prop = read_annotation(attrs, names)
    test = [str(k) for k in range(len(names))]
    sim = np.array([[get_score(id2prop, a, b) for b in test] for a in test])
    return sim if query_arg == "b" else sim.T


def cosine_matrix(emb):
    """evaluate.py's ``psim``: normalised embeddings, their dot products (zero rows stay zero)."""
    x = np.asarray(emb, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norms == 0, 1, norms)
    return (x @ x.T).astype(np.float32)


def original_paper_map(emb, attrs, names, query_arg="b"):
    """The original's score: ``get_acc`` over every test item."""
    test = [str(k) for k in range(len(names))]
    idx2map = {name: a for a, name in enumerate(test)}
    map2idx = {a: name for a, name in enumerate(test)}
    return get_acc(cosine_matrix(emb), test, map2idx, idx2map, similarity_matrix(attrs, names, query_arg))
