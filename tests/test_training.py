"""The estimators' shared internals: integer/feature checks, thread and seed control, the epoch loop."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from attrboost.checks import check_features, check_int
from attrboost.training import deterministic, fit_epochs, torch_threads


# ----------------------------------------------------------------------------- checks
def test_check_int():
    assert check_int(np.int64(3), "k") == 3 and type(check_int(np.int64(3), "k")) is int
    assert check_int(None, "k", allow_none=True) is None
    assert check_int(2, "k", min_val=2) == 2
    with pytest.raises(ValueError, match="k == 1, must be >= 2"):
        check_int(1, "k", min_val=2)
    with pytest.raises(TypeError, match=r"k must be an instance of int, not NoneType \(got None; expected an "
                                        r"integer >= 1\)"):
        check_int(None, "k")
    with pytest.raises(TypeError, match=r"k must be an integer >= 1 or None, got False"):
        check_int(False, "k", allow_none=True)
    with pytest.raises(TypeError, match=r"not float \(got 3.0;"):
        check_int(3.0, "k")


def test_check_features():
    X = check_features([[1, 2], [3, 4]])
    assert X.dtype == np.float32 and X.flags.c_contiguous
    np.testing.assert_array_equal(X, [[1, 2], [3, 4]])
    for bad, msg in [(np.ones(3), r"X must be 2-D"), (np.ones((0, 3)), "X has no samples"),
                     ([[1.0, np.inf]], "X contains NaN or infinite"), ([["a", "b"]], "X must be a numeric array")]:
        with pytest.raises(ValueError, match=msg):
            check_features(bad)
    with pytest.raises(ValueError, match="X_val has 2 features, but the estimator was fitted with 3"):
        check_features(X, "X_val", n_features=3)


# ----------------------------------------------------------------------------- torch control
def test_deterministic_and_threads_restore_global_state():
    torch.manual_seed(123)
    state, threads = torch.get_rng_state(), torch.get_num_threads()
    flags = torch.are_deterministic_algorithms_enabled()
    with torch_threads(1), deterministic(7):
        assert torch.get_num_threads() == 1 and torch.are_deterministic_algorithms_enabled()
        a = torch.rand(3)
    with deterministic(7):
        b = torch.rand(3)
    assert torch.equal(a, b)
    assert torch.equal(torch.get_rng_state(), state) and torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == flags
    with torch_threads(None):
        assert torch.get_num_threads() == threads


# ----------------------------------------------------------------------------- the epoch loop
def scripted(scores, losses=None):
    """A one-weight net whose weight is set to the epoch number; scores/losses follow a script."""
    net = nn.Linear(1, 1, bias=False)
    perms = []

    def train_epoch(perm):
        perms.append(perm.clone())
        with torch.no_grad():
            net.weight.fill_(len(perms))
        assert net.training
        return {"train_loss": 1.0 if losses is None else losses[len(perms) - 1]}

    def score_epoch(epoch):
        assert epoch == len(perms)
        s = scores[epoch - 1]
        return ({} if s is None else {"val": s}), s

    return net, train_epoch, score_epoch, perms


def test_fit_epochs_keeps_the_best_epoch_and_stops_after_patience():
    net, train, score, perms = scripted([0.1, 0.5, 0.5, 0.3, 0.9, 0.0])
    log = fit_epochs(net, train, score, n=5, seed=3, max_epochs=6, patience=3, name="toy")
    # epoch 3 ties epoch 2 (not better), 4 is worse, 5 is better: the count restarts, no patience stop
    assert log.best_epoch == 5 and log.stop_reason == "max_epochs"
    assert net.weight.item() == 5.0 and not net.training  # the kept epoch's weights, eval mode
    assert log.history["epoch"].tolist() == [1, 2, 3, 4, 5, 6]
    assert log.history["selected"].tolist() == [False] * 4 + [True, False]
    assert list(log.history.columns) == ["epoch", "train_loss", "val", "seconds", "selected"]
    gen = torch.Generator().manual_seed(3)  # the permutations: one seeded generator, one draw per epoch
    for p in perms:
        assert torch.equal(p, torch.randperm(5, generator=gen))

    net, train, score, _ = scripted([0.5, 0.4, 0.5, 0.2])
    log = fit_epochs(net, train, score, n=5, seed=0, max_epochs=10, patience=2)
    assert (log.best_epoch, len(log.history), log.stop_reason) == (1, 3, "patience")
    assert net.weight.item() == 1.0


def test_fit_epochs_last_epoch_and_stop_loss():
    net, train, score, _ = scripted([None] * 10, losses=[0.5, 0.3, 0.01, 0.001, 0.0])
    log = fit_epochs(net, train, score, n=4, seed=0, max_epochs=10, patience=1, stop_loss=0.002)
    # None score: the last epoch is kept and never counts as worse (patience does not stop it)
    assert (log.best_epoch, len(log.history), log.stop_reason) == (4, 4, "stop_loss")
    assert net.weight.item() == 4.0 and "val" not in log.history


def test_fit_epochs_divergence_names_the_estimator_and_epoch():
    net, train, score, _ = scripted([0.1, 0.2], losses=[0.5, float("nan")])
    with pytest.raises(RuntimeError, match="toy diverged .* at epoch 2"):
        fit_epochs(net, train, score, n=4, seed=0, max_epochs=2, name="toy")


def test_fit_epochs_progress_bar_does_not_change_the_run():
    logs = []
    for progress in (None, "toy"):
        net, train, score, _ = scripted([0.1, 0.3, 0.2])
        logs.append(fit_epochs(net, train, score, n=4, seed=0, max_epochs=3, progress=progress))
    assert logs[0].history.drop(columns="seconds").equals(logs[1].history.drop(columns="seconds"))


def test_the_progress_bar_counts_epochs_without_promising_the_cap(capsys):
    """A fit that stops at epoch 3 of at most 200 never shows "/200" as if 200 epochs were coming."""
    net, train, score, _ = scripted([0.5, 0.4, 0.5, 0.2])
    log = fit_epochs(net, train, score, n=5, seed=0, max_epochs=200, patience=2, progress="toy")
    assert len(log.history) == 3
    shown = [s for s in capsys.readouterr().err.split("\r") if "toy" in s]
    assert shown and not any("/200" in s for s in shown) and "at most 200" in shown[0]
