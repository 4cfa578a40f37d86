"""Tests for attrboost.heads.BoostHead on small synthetic data made here.

Features: a few informative columns (noisy sums of per-class gaussian prototypes, one prototype
per class of each attribute) next to many label-free nuisance columns of larger scale, so the
labels are learnable but raw distances are dominated by the nuisance.
Tags: one word per class of attribute "a" and of attribute "b", plus one random filler word.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from torch.nn import functional as F
from sklearn.exceptions import NotFittedError
from sklearn.metrics import log_loss

from attrboost.headnet import PAD, HeadNet
from attrboost.heads import BoostHead

N_CLASSES = {"a": 4, "b": 3, "c": 5}
GRU_SMALL = 32  # small decoder keeps the Task 2/3 tests fast; the width is a parameter


def make_data(n=600, d=48, n_info=16, noise=0.5, nuisance=3.0, label_noise=0.0, seed=0):
    """(X, y DataFrame, tags). The first ``n_info`` columns hold per-class gaussian prototypes of
    every attribute plus unit-scaled ``noise``; the other columns are label-free nuisance noise
    of scale ``nuisance``, which dominates raw distances (as in a frozen generic embedding).
    ``label_noise`` replaces that share of the labels in y by random classes."""
    rng = np.random.default_rng(seed)
    codes = {a: rng.integers(0, k, n) for a, k in N_CLASSES.items()}
    protos = {a: rng.normal(size=(k, n_info)) for a, k in N_CLASSES.items()}
    info = sum(protos[a][codes[a]] for a in N_CLASSES) + noise * rng.normal(size=(n, n_info))
    X = np.hstack([info, nuisance * rng.normal(size=(n, d - n_info))])
    y = pd.DataFrame({a: np.array([f"{a}{i}" for i in range(k)])[codes[a]] for a, k in N_CLASSES.items()})
    tags = [[f"wa{codes['a'][i]}", f"wb{codes['b'][i]}", f"filler{rng.integers(0, 6)}"] for i in range(n)]
    if label_noise:
        flip = rng.random(n) < label_noise
        for a, k in N_CLASSES.items():
            y.loc[flip, a] = np.array([f"{a}{i}" for i in range(k)])[rng.integers(0, k, flip.sum())]
    return X.astype(np.float32), y, tags


def split(X, y, tags, n_train):
    return (X[:n_train], y.iloc[:n_train].reset_index(drop=True), tags[:n_train],
            X[n_train:], y.iloc[n_train:].reset_index(drop=True), tags[n_train:])


@pytest.fixture(scope="module")
def data():
    return split(*make_data(), n_train=450)


@pytest.fixture(scope="module")
def task1_head(data):
    X, y, t, Xv, yv, tv = data
    # lr above the paper's 1e-3 so that a few epochs on a few hundred samples suffice
    return BoostHead(task="task1", lr=1e-2, max_epochs=60, patience=10).fit(X, y, X_val=Xv, y_val=yv)


def nn_same_label_rate(Z_query, y_query, Z_base, y_base):
    """Share of queries whose nearest base item (cosine, brute force) has the same full label tuple."""
    lab_q = ["|".join(r) for r in y_query.to_numpy()]
    lab_b = ["|".join(r) for r in y_base.to_numpy()]
    hits = 0
    for i in range(len(Z_query)):
        best, best_sim = -1, -np.inf
        qn = np.linalg.norm(Z_query[i]) + 1e-12
        for j in range(len(Z_base)):
            sim = float(Z_query[i] @ Z_base[j]) / (qn * (np.linalg.norm(Z_base[j]) + 1e-12))
            if sim > best_sim:
                best, best_sim = j, sim
        hits += lab_q[i] == lab_b[best]
    return hits / len(Z_query)


# ----------------------------------------------------------------------------- shape and basics
def test_transform_shape_dtype_relu(task1_head, data):
    X, _, _, Xv, _, _ = data
    Z = task1_head.transform(Xv)
    assert Z.shape == (len(Xv), X.shape[1])  # hidden_dim defaults to the input width
    assert task1_head.hidden_dim_ == X.shape[1]
    assert Z.dtype == np.float32
    assert (Z >= 0).all() and (Z > 0).any()


def test_hidden_dim_parameter_and_sklearn_api(data):
    X, y, _, Xv, _, _ = data
    head = BoostHead(hidden_dim=16, max_epochs=2, selection="last")
    Z = head.fit_transform(X, y)  # TransformerMixin path
    assert Z.shape == (len(X), 16)
    np.testing.assert_array_equal(Z, head.transform(X))
    assert clone(head).get_params() == head.get_params()
    assert list(head.classes_) == list(N_CLASSES)
    for a, k in N_CLASSES.items():
        assert sorted(head.classes_[a]) == sorted(f"{a}{i}" for i in range(k))
    pred = head.predict_attributes(Xv)
    assert list(pred.columns) == list(N_CLASSES) and len(pred) == len(Xv)


# ----------------------------------------------------------------------------- learning
def test_task1_learns_accuracy(task1_head, data):
    _, _, _, Xv, yv, _ = data
    pred = task1_head.predict_attributes(Xv)
    for a, k in N_CLASSES.items():
        chance = 1.0 / k
        acc = float((pred[a] == yv[a]).mean())
        assert acc >= (1 + chance) / 2, (a, acc)  # at least halfway from chance to perfect
        # the history's accuracy of the kept epoch matches an independent recomputation
        best_row = task1_head.history_.loc[task1_head.history_.selected].iloc[0]
        assert best_row[f"val_acc_{a}"] == pytest.approx(acc)


def test_task1_improves_nearest_neighbour(task1_head, data):
    X, y, _, Xv, yv, _ = data
    raw = nn_same_label_rate(Xv, yv, X, y)
    boosted = nn_same_label_rate(task1_head.transform(Xv), yv, task1_head.transform(X), y)
    assert boosted > raw, (raw, boosted)


def input_blind_token_loss(tags) -> float:
    """Lowest token cross-entropy any decoder that ignores the features can reach on ``tags``.

    The words of a tag list are drawn independently here, so the best input-blind prediction of
    the token at position p (EOS included) is the empirical distribution at p; its mean entropy
    over all target tokens is the bound.
    """
    seqs = [list(toks) + ["<eos>"] for toks in tags]
    total, n_tok = 0.0, 0
    for p in range(max(map(len, seqs))):
        _, counts = np.unique([s[p] for s in seqs if len(s) > p], return_counts=True)
        prob = counts / counts.sum()
        total += -(counts * np.log(prob)).sum()
        n_tok += counts.sum()
    return total / n_tok


def test_task2_learns(data):
    X, y, t, Xv, yv, tv = data
    head = BoostHead(task="task2", gru_hidden=GRU_SMALL, lr=1e-2, max_epochs=12, patience=None,
                     selection="val_loss").fit(X, tags=t, X_val=Xv, tags_val=tv)
    h = head.history_
    assert h.train_loss.iloc[-1] < h.train_loss.iloc[0] / 2
    # the decoder uses the embedding: validation token loss beats every input-blind decoder
    assert h.val_loss.min() < input_blind_token_loss(tv)
    assert head.vocab_ == sorted({w for toks in t for w in toks})
    with pytest.raises(ValueError, match="no attribute classifiers"):
        head.predict_attributes(Xv)
    pred = head.predict_tags(Xv)
    assert len(pred) == len(Xv)
    assert all(set(p) <= set(head.vocab_) and len(p) <= head.max_tag_len for p in pred)
    # the class-determined first word is decoded far more often than chance (1 / 4 classes of "a")
    first_ok = np.mean([bool(p) and p[0] == f"wa{lab[1:]}" for p, lab in zip(pred, yv["a"])])
    assert first_ok > 2 / N_CLASSES["a"]


def test_task3_learns_both(data):
    X, y, t, Xv, yv, tv = data
    head = BoostHead(task="task3", gru_hidden=GRU_SMALL, lr=1e-2, max_epochs=12, patience=None).fit(
        X, y, t, X_val=Xv, y_val=yv, tags_val=tv)
    h = head.history_
    for col in ("train_attr_loss", "train_tag_loss"):
        assert h[col].iloc[-1] < h[col].iloc[0] / 2, col
    assert h.val_tag_loss.min() < input_blind_token_loss(tv)
    # tag_weight 0.5 (default): the tags are half of the loss
    np.testing.assert_allclose(h.train_loss, 0.5 * h.train_attr_loss + 0.5 * h.train_tag_loss, rtol=1e-6)
    np.testing.assert_allclose(h.val_loss, 0.5 * h.val_attr_loss + 0.5 * h.val_tag_loss, rtol=1e-6)
    pred = head.predict_attributes(Xv)
    for a, k in N_CLASSES.items():
        assert (pred[a] == yv[a]).mean() >= (1 + 1 / k) / 2, a


# ----------------------------------------------------------------------------- the tag decoder
def reference_tag_loss(net, h, tokens_in, tokens_out):
    """The decoder's loss computed the unpacked way, independently of nn.GRU: every row unrolled to
    the longest sequence one step at a time (PyTorch's GRU equations, gates r, z, n), the output
    projection applied at every position, cross-entropy averaged over the non-PAD targets."""
    g = net.gru
    state = torch.tanh(net.init_state(h))
    logits = []
    for x in net.tok_emb(tokens_in).unbind(1):
        ir, iz, i_n = (x @ g.weight_ih_l0.T + g.bias_ih_l0).chunk(3, 1)
        hr, hz, h_n = (state @ g.weight_hh_l0.T + g.bias_hh_l0).chunk(3, 1)
        r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
        state = (1 - z) * torch.tanh(i_n + r * h_n) + z * state
        logits.append(net.tok_out(state))
    logits = torch.stack(logits, 1)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens_out.reshape(-1), ignore_index=PAD)


def _decoder_batch(seed=0, n=9, vocab=20, max_len=7):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = HeadNet(12, 16, [], vocab, 24)
    lengths = torch.randint(1, max_len + 1, (n,), generator=gen)  # steps incl. BOS/EOS; most rows padded
    lengths[0] = max_len
    tin = torch.full((n, max_len), PAD)
    tout = torch.full((n, max_len), PAD)
    for i, L in enumerate(lengths.tolist()):
        words = torch.randint(3, vocab, (L - 1,), generator=gen)
        tin[i, :L] = torch.cat([torch.tensor([1]), words])
        tout[i, :L] = torch.cat([words, torch.tensor([2])])
    h = torch.randn(n, 16, generator=gen, requires_grad=True)
    return net, h, tin, tout, lengths


def test_packed_decoder_loss_and_gradients_match_step_loop_reference():
    net, h, tin, tout, lengths = _decoder_batch()
    params = [h, *net.parameters()]
    ref = reference_tag_loss(net, h, tin, tout)
    g_ref = torch.autograd.grad(ref, params, allow_unused=True)
    new = net.tag_loss(h, tin, tout, lengths)
    g_new = torch.autograd.grad(new, params, allow_unused=True)
    assert new.item() == pytest.approx(ref.item(), rel=1e-5)
    for (name, _), a, b in zip([("h", h), *net.named_parameters()], g_ref, g_new):
        if a is None:  # hidden / attribute layers: not on the decoder's path
            assert b is None, name
            continue
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)
    # sum reduction (validation loss): the same sum of token losses
    total = net.tag_loss(h, tin, tout, lengths, reduction="sum")
    assert total.item() == pytest.approx(ref.item() * int(lengths.sum()), rel=1e-5)
    # bfloat16 matmuls: close to the float32 loss, but not equal (autocast is in effect)
    low = net.tag_loss(h, tin, tout, lengths, dtype=torch.bfloat16).item()
    assert low != ref.item() and low == pytest.approx(ref.item(), rel=2e-2)


class _Recorder:
    """Global forward hook: rows seen by the decoder's output projection, the GRU's input types and
    the projection's output dtype, during a fit."""

    def __init__(self, gru_hidden):
        self.gru_hidden, self.rows, self.gru_inputs, self.dtypes = gru_hidden, 0, set(), set()

    def __call__(self, module, args, out):
        if isinstance(module, torch.nn.GRU):
            self.gru_inputs.add(type(args[0]).__name__)
        elif isinstance(module, torch.nn.Linear) and module.in_features == self.gru_hidden and module.training:
            self.rows += args[0].reshape(-1, self.gru_hidden).shape[0]
            self.dtypes.add(out.dtype)


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_decoder_computes_non_pad_positions_only(data, dtype):
    X, _, t, _, _, _ = data
    tags = [toks[: 1 + i % 3] for i, toks in enumerate(t)]  # 1-3 words: most batches hold padding
    rec = _Recorder(GRU_SMALL)
    handle = torch.nn.modules.module.register_module_forward_hook(rec)
    try:
        head = BoostHead(task="task2", gru_hidden=GRU_SMALL, max_epochs=1, selection="last",
                         decoder_dtype=dtype).fit(X, tags=tags)
    finally:
        handle.remove()
    assert rec.rows == sum(len(toks) + 1 for toks in tags)  # one row per target token (EOS included)
    assert rec.gru_inputs == {"PackedSequence"}
    assert rec.dtypes == {getattr(torch, dtype)}
    assert head.transform(X[:4]).dtype == np.float32
    assert all(p.dtype == torch.float32 for p in head.model_.parameters())


def test_task2_identical_for_any_outer_thread_count(data):
    X, _, t, Xv, _, tv = data
    old = torch.get_num_threads()
    out = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            head = BoostHead(task="task2", gru_hidden=GRU_SMALL, max_epochs=2, patience=None, selection="val_loss")
            out.append(head.fit(X, tags=t, X_val=Xv, tags_val=tv).transform(Xv))
    finally:
        torch.set_num_threads(old)
    np.testing.assert_array_equal(out[0], out[1])


def test_decoder_dtype_is_checked(data):
    X, _, t, _, _, _ = data
    with pytest.raises(ValueError, match=r"decoder_dtype must be one of \['float32', 'bfloat16'\], got 'fp16'"):
        BoostHead(task="task2", decoder_dtype="fp16", selection="last").fit(X, tags=t)


# ----------------------------------------------------------------------------- model selection
def test_val_loss_selection_keeps_minimum():
    # label noise + small train set: the model overfits, so the validation minimum is not the last epoch
    X, y, t, Xv, yv, tv = split(*make_data(n=400, d=64, noise=3.0, label_noise=0.3, seed=1), n_train=300)
    head = BoostHead(max_epochs=40, patience=None, selection="val_loss").fit(X, y, X_val=Xv, y_val=yv)
    h = head.history_
    assert head.n_epochs_ == len(h) == h.epoch.max()
    best = int(h.epoch.iloc[int(np.argmin(h.val_loss.to_numpy()))])
    assert head.best_epoch_ == best
    assert best < head.n_epochs_, "data chosen to overfit; test would be vacuous otherwise"
    assert h.selected.sum() == 1 and int(h.loc[h.selected, "epoch"].iloc[0]) == best
    # independent recomputation of the returned model's validation loss (mean CE over attributes)
    proba = head.predict_attribute_proba(Xv)
    recomputed = np.mean([log_loss(yv[a], proba[a], labels=head.classes_[a]) for a in head.attributes_])
    assert recomputed == pytest.approx(h.val_loss.min(), rel=1e-4)
    last_state_loss = h.val_loss.iloc[-1]
    assert recomputed < last_state_loss


def test_callable_selection_restores_scored_state(data):
    X, y, _, Xv, yv, _ = data
    seen = []

    def scorer(emb, y_val, tags_val):
        assert y_val is yv and tags_val is None  # passed through untouched: the validation split
        seen.append(emb.copy())
        return 1.0 if len(seen) == 2 else 0.0  # epoch 2 is best

    head = BoostHead(max_epochs=10, selection=scorer, patience=3).fit(X, y, X_val=Xv, y_val=yv)
    assert head.best_epoch_ == 2
    assert head.n_epochs_ == 2 + 3  # early stop after `patience` epochs without improvement
    assert head.stop_reason_ == "patience"
    assert seen[0].shape == (len(Xv), X.shape[1])
    np.testing.assert_array_equal(head.transform(Xv), seen[1])
    assert not np.array_equal(seen[1], seen[-1])
    np.testing.assert_array_equal(head.history_.val_score.to_numpy(), [0, 1, 0, 0, 0])


def test_stop_rule_and_last_selection(data):
    X, y, _, _, _, _ = data
    head = BoostHead(max_epochs=50, selection="last", stop_loss=1e9).fit(X, y)
    assert head.n_epochs_ == 1 and head.best_epoch_ == 1 and head.stop_reason_ == "stop_loss"
    head = BoostHead(max_epochs=4, selection="last").fit(X, y)
    assert head.n_epochs_ == 4 and head.best_epoch_ == 4 and head.stop_reason_ == "max_epochs"
    assert head.history_.selected.tolist() == [False, False, False, True]


# ----------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("task", ["task1", "task3"])
def test_determinism(data, task):
    X, y, t, Xv, yv, tv = data
    kw = dict(task=task, gru_hidden=GRU_SMALL, max_epochs=3, patience=None)
    fit = lambda seed: BoostHead(seed=seed, **kw).fit(X, y, t, X_val=Xv, y_val=yv, tags_val=tv)  # noqa: E731
    threads = torch.get_num_threads()
    z1 = fit(0).transform(Xv)
    torch.rand(7)  # move the global RNG: the result must depend on `seed` only
    rng_before = torch.get_rng_state()
    z2 = fit(0).transform(Xv)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global torch RNG is untouched
    z3 = fit(1).transform(Xv)
    np.testing.assert_array_equal(z1, z2)
    assert not np.array_equal(z1, z3)
    assert torch.get_num_threads() == threads


# ----------------------------------------------------------------------------- bad input
def _bad_cases(X, y, t, Xv, yv, tv):
    Xnan = X.copy(); Xnan[3, 2] = np.nan  # noqa: E702
    Xinf = X.copy(); Xinf[0, 0] = np.inf  # noqa: E702
    y_single = y.copy(); y_single["b"] = "only"  # noqa: E702
    yv_unseen = yv.copy(); yv_unseen.loc[5, "c"] = "c_new"  # noqa: E702
    return [
        ("task1", (X, y.iloc[:-1]), {}, r"y has \d+ samples but X"),
        ("task2", (X, None, t[:-1]), {"selection": "last"}, r"tags has \d+ samples but X"),
        ("task1", (X, y), {"X_val": Xv, "y_val": yv.iloc[:-2]}, r"y_val has \d+ samples but X_val"),
        ("task2", (X, None, t), {"X_val": Xv, "tags_val": tv[:-1]}, r"tags_val has \d+ samples but X_val"),
        ("task1", (Xnan, y), {"selection": "last"}, r"X contains NaN or infinite"),
        ("task1", (Xinf, y), {"selection": "last"}, r"X contains NaN or infinite"),
        ("task1", (X, y), {"X_val": Xv[:, :-1], "y_val": yv}, r"X_val has \d+ features"),
        ("task1", (X, y_single), {"selection": "last"}, r"attribute 'b' has a single class"),
        ("task2", (X, y), {"selection": "last"}, r"tags .* required for task='task2'"),
        ("task3", (X, y), {"selection": "last"}, r"tags .* required for task='task3'"),
        ("task2", (X, None, [[] for _ in t]), {"selection": "last"}, r"vocabulary is empty"),
        ("task1", (X, None), {"selection": "last"}, r"y \(attribute labels\) is required"),
        ("task4", (X, y), {}, r"task must be one of"),
        ("task1", (X, y), {}, r"needs a validation split: pass X_val"),
        ("task1", (X, y), {"X_val": Xv}, r"requires y_val"),
        ("task1", (X, y), {"X_val": Xv[:3], "y_val": pd.DataFrame({"a": ["a0", "a1", "a2"], "b": ["b0"] * 3,
                                                                    "c": ["c0"] * 3}), "selection": "val_map@r"},
         r"no two validation items share their attributes"),
        ("task2", (X, None, t), {"X_val": Xv, "tags_val": tv, "selection": "val_map@r"},
         r"selection='val_map@r' needs y_val"),
        ("task3", (X, y, t), {"X_val": Xv, "y_val": yv, "tags_val": tv, "tag_weight": 1.5}, r"tag_weight must be"),
        ("task3", (X, y, t), {"X_val": Xv, "y_val": yv}, r"requires tags_val"),
        ("task2", (X, None, ["wa1 wb2"] * len(X)), {"selection": "last"}, r"tags\[0\] must be a list of tokens"),
    ]


def test_bad_inputs(data):
    X, y, t, Xv, yv, tv = data
    for task, args, kw, msg in _bad_cases(X, y, t, Xv, yv, tv):
        sel = kw.pop("selection", "val_loss")
        tw = kw.pop("tag_weight", 0.5)
        head = BoostHead(task=task, selection=sel, max_epochs=1, gru_hidden=GRU_SMALL, tag_weight=tw)
        with pytest.raises(ValueError, match=msg):
            head.fit(*args, **kw)


def test_bad_parameters_and_transform(task1_head, data):
    X, y, _, Xv, _, _ = data
    with pytest.raises(NotFittedError):
        BoostHead().transform(X)
    with pytest.raises(ValueError, match=r"X has \d+ features, but the estimator was fitted with \d+"):
        task1_head.transform(X[:, :-1])
    with pytest.raises(ValueError, match="X contains NaN"):
        task1_head.transform(np.full_like(Xv, np.nan))
    with pytest.raises(ValueError, match="selection must be one of"):
        BoostHead(selection="test_map").fit(X, y)
    with pytest.raises(ValueError, match="no tag decoder"):
        task1_head.predict_tags(Xv)


@pytest.mark.parametrize("param, value, error, msg", [
    ("batch_size", 0, ValueError, r"batch_size == 0, must be >= 1"),
    ("max_epochs", 2.0, TypeError, r"max_epochs must be an instance of int, not float \(got 2.0; expected an integer"),
    ("gru_hidden", True, TypeError, r"gru_hidden must be an integer >= 1, got True"),
    ("max_tag_len", None, TypeError, r"max_tag_len .*got None; expected an integer >= 1\)"),
    ("hidden_dim", "64", TypeError, r"hidden_dim .*got '64'; expected an integer >= 1 or None\)"),
    ("patience", 0, ValueError, r"patience == 0, must be >= 1"),
    ("num_threads", -1, ValueError, r"num_threads == -1, must be >= 1"),
])
def test_integer_parameters_are_checked_by_name_and_value(data, param, value, error, msg):
    X, y, _, _, _, _ = data
    with pytest.raises(error, match=msg):
        BoostHead(**{"selection": "last", "max_epochs": 1, param: value}).fit(X, y)


def test_parameters_after_task_are_keyword_only(data):
    X, y, _, _, _, _ = data
    with pytest.raises(TypeError, match="positional argument"):
        BoostHead("task1", 16)
    head = BoostHead("task1", hidden_dim=16, max_epochs=1, selection="last", patience=None,
                     num_threads=None).fit(X, y)  # None is allowed for these three
    assert head.transform(X[:3]).shape == (3, 16)
    assert clone(head).get_params() == head.get_params()


# ----------------------------------------------------------------------------- the study's one rule
def test_default_selection_is_validation_map_at_r_with_the_shared_patience_and_cap():
    """The default keeps the epoch with the best validation MAP@R (full attribute tuple as relevance),
    recomputed here independently from the kept model, and stops PATIENCE epochs after it."""
    from attrboost.study.baselines import MetricHead
    from attrboost.training import MAX_EPOCHS, PATIENCE

    X, y, t, Xv, yv, tv = split(*make_data(n=400, d=64, noise=3.0, label_noise=0.3, seed=1), n_train=300)
    head = BoostHead(max_epochs=40).fit(X, y, X_val=Xv, y_val=yv)
    h = head.history_
    assert (head.selection, head.patience, head.max_epochs, head.stop_loss) == ("val_map@r", PATIENCE, 40, None)
    assert BoostHead().max_epochs == MetricHead().max_epochs == MAX_EPOCHS
    assert MetricHead().patience == PATIENCE
    best = int(h.epoch.iloc[int(np.argmax(h["val_map@r"].to_numpy()))])  # first maximum wins
    assert head.best_epoch_ == best
    if head.stop_reason_ == "patience":
        assert head.n_epochs_ == best + PATIENCE
    # brute-force MAP@R of the returned model's validation embedding
    Z = head.transform(Xv)
    Zn = Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)
    groups = yv.astype(str).agg("|".join, axis=1).to_numpy()
    aps = []
    for q in range(len(Zn)):
        sim = Zn @ Zn[q]
        sim[q] = -np.inf
        order = np.lexsort((np.arange(len(Zn)), -sim.astype(np.float32)))[:-1]
        rel = groups[order] == groups[q]
        r = rel.sum()
        if r:
            top = rel[:r]
            aps.append((np.cumsum(top) / np.arange(1, r + 1) * top).sum() / r)
    assert 100 * np.mean(aps) == pytest.approx(h["val_map@r"].max(), abs=1e-6)


def test_unseen_validation_values_are_left_out_of_the_loss_not_of_the_retrieval_score(data):
    X, y, _, Xv, yv, _ = data
    yv_unseen = yv.copy()
    yv_unseen.loc[:9, "c"] = "c_new"  # 10 rows carry a value no classifier knows (split="by_group")
    head = BoostHead(max_epochs=2).fit(X, y, X_val=Xv, y_val=yv_unseen)
    assert head.n_val_loss_rows_ == len(Xv) - 10
    ref = BoostHead(max_epochs=2, selection="val_loss").fit(X, y, X_val=Xv[10:], y_val=yv.iloc[10:])
    np.testing.assert_allclose(head.history_["val_loss"], ref.history_["val_loss"], rtol=1e-6)
    from attrboost.metrics import map_at_r
    kept = head.history_.loc[head.history_["selected"], "val_map@r"].iloc[0]
    assert kept == pytest.approx(map_at_r(head.transform(Xv), yv_unseen), abs=1e-9)  # all 150 rows scored


def test_tag_weight_sets_the_tag_share_of_the_task3_loss(data):
    X, y, t, Xv, yv, tv = data
    head = BoostHead(task="task3", gru_hidden=GRU_SMALL, max_epochs=2, tag_weight=0.125).fit(
        X, y, t, X_val=Xv, y_val=yv, tags_val=tv)
    h = head.history_
    np.testing.assert_allclose(h.train_loss, 0.875 * h.train_attr_loss + 0.125 * h.train_tag_loss, rtol=1e-6)
    np.testing.assert_allclose(h.val_loss, 0.875 * h.val_attr_loss + 0.125 * h.val_tag_loss, rtol=1e-6)
