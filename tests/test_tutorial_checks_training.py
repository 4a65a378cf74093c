"""The exercise checks of notebooks 08 (backprop by hand) and 09 (fine-tuning) fail on plausible
wrong answers and pass on a right one, as ``test_tutorial_checks.py`` does for 01-07.

Each right answer here is written independently of the notebook's solution; each wrong one is
a mistake a student could plausibly make (the ones the checks' docstrings list). No PyTorch.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tutorials"))
import exercise_checks as check  # noqa: E402

from minibert import ops  # noqa: E402

pytestmark = pytest.mark.tutorials  # needs the model files (the tokenizer), as the tutorials do; no PyTorch


def fails(check_fn, answer):
    """True when the check rejects the answer: an AssertionError, or the wrong code's own error."""
    try:
        check_fn(answer)
    except (AssertionError, ValueError, IndexError, TypeError, FloatingPointError, ZeroDivisionError):
        return True
    return False


def assert_catches(check_fn, right, wrong):
    check_fn(right)  # the right answer passes
    for name, answer in wrong.items():
        assert fails(check_fn, answer), f"{check_fn.__name__}: the wrong answer {name!r} passed"


# --- 08 ----------------------------------------------------------------------------------


def ce_grad(logits, labels, divide_by="kept", zero_ignored=True, softmax=True, shift=True, sign=1):
    keep = labels != -100
    with np.errstate(over="ignore", invalid="ignore"):
        z = logits - logits.max(-1, keepdims=True) if shift else logits
        p = np.exp(z) / np.exp(z).sum(-1, keepdims=True) if softmax else np.zeros_like(logits)
    onehot = np.zeros_like(logits)
    rows = np.arange(len(labels)) if not zero_ignored else np.flatnonzero(keep)
    onehot[rows, labels[rows]] = 1  # label -100 indexes the last column when not skipped
    g = sign * (p - onehot)
    if zero_ignored:
        g[~keep] = 0
    return g / (keep.sum() if divide_by == "kept" else len(labels))


def test_cross_entropy_grad_catches_wrong_means_and_rows():
    wrong = {
        "divided by every row": lambda z, y: ce_grad(z, y, divide_by="all"),
        "ignored rows not zeroed (column -100)": lambda z, y: ce_grad(z, y, zero_ignored=False),
        "one-hot without the softmax": lambda z, y: ce_grad(z, y, softmax=False),
        "sign flipped": lambda z, y: ce_grad(z, y, sign=-1),
        "no shift by the row maximum": lambda z, y: ce_grad(z, y, shift=False),
    }
    assert_catches(check.cross_entropy_grad, ce_grad, wrong)


def rms_backward(dy, x, weight, eps, mean_term=False, r_term=True, sum_weight=True, raw_x=False):
    H = x.shape[-1]
    r = 1 / np.sqrt((x * x).mean(-1, keepdims=True) + eps)
    xhat = x * r
    g = dy * weight
    dx = r * g
    if r_term:
        dx = dx - r * xhat * (g * xhat).mean(-1, keepdims=True)
    if mean_term:
        dx = dx - r * g.mean(-1, keepdims=True)
    dweight = dy * (x if raw_x else xhat)
    dweight = dweight.reshape(-1, H).sum(0) if sum_weight else dweight[0, 0]
    return dx, dweight


def test_rms_norm_backward_catches_layer_norm_and_missing_terms():
    wrong = {
        "LayerNorm's mean term kept": lambda *a: rms_backward(*a, mean_term=True),
        "r * dy * w only": lambda *a: rms_backward(*a, r_term=False),
        "dweight of one row": lambda *a: rms_backward(*a, sum_weight=False),
        "dweight with the unnormalised x": lambda *a: rms_backward(*a, raw_x=True),
    }
    assert_catches(check.rms_norm_backward, rms_backward, wrong)


def test_first_failures_catches_wrong_order_and_names():
    measured = check._first_failures_measured()
    assert all(measured.values()), measured  # every planted bug is found
    right = dict(measured)
    gelu = "gelu_backward returns gelu(x) * dy"
    value = "attention_context_backward: dV = P dC, P not transposed"
    lookup = "embedding_backward keeps the last of repeated ids"
    tanh = "tanh_backward returns 1 - x^2"
    wrong = {
        "the first layer instead of the last": lambda: {**right, gelu: "encoder.layer.0.intermediate.dense"},
        "the step named after the buggy function": lambda: {**right, gelu: "encoder.layer.1.intermediate.gelu"},
        "d probs instead of d value": lambda: {**right, value: "encoder.layer.1.attention.self.probs"},
        "the word-embedding table first": lambda: {**right, lookup: "embeddings.word_embeddings.weight"},
        "the pooler's parameter, not its step": lambda: {**right, tanh: "pooler.dense.weight"},
    }
    assert_catches(check.first_failures, lambda: dict(right), wrong)
    # the measurement itself: what notebook 08's solution states
    assert measured == {
        gelu: "encoder.layer.1.intermediate.dense",
        value: "encoder.layer.1.attention.self.value",
        tanh: "pooler.dense",
        lookup: "embeddings.token_type_embeddings.weight",
    }
    assert ops.gelu_backward is not check.PLANTED[gelu][1]  # the check put the right functions back


# --- 09 ----------------------------------------------------------------------------------


def adamw_step(param, grad, lr, wd, bias_correction=True, decoupled=True, eps_inside=False, sgd=False):
    b1, b2, eps = 0.9, 0.999, 1e-8
    if sgd:
        return param - lr * grad - lr * wd * param
    if not decoupled:
        grad = grad + wd * param
    m, v = (1 - b1) * grad, (1 - b2) * grad * grad
    if bias_correction:
        m, v = m / (1 - b1), v / (1 - b2)
    denom = np.sqrt(v + eps) if eps_inside else np.sqrt(v) + eps
    new = param * (1 - lr * wd) if decoupled else param
    return new - lr * m / denom


def test_adamw_first_step_catches_missing_bias_correction_and_coupled_decay():
    wrong = {
        "no bias correction": lambda p, g, lr, wd: adamw_step(p, g, lr, wd, bias_correction=False),
        "plain SGD": lambda p, g, lr, wd: adamw_step(p, g, lr, wd, sgd=True),
        "weight decay in the gradient (Adam + L2)": lambda p, g, lr, wd: adamw_step(p, g, lr, wd, decoupled=False),
        "eps inside the square root": lambda p, g, lr, wd: adamw_step(p, g, lr, wd, eps_inside=True),
    }
    assert_catches(check.adamw_first_step, adamw_step, wrong)


def test_constant_loss_catches_log2_and_accuracy():
    def entropy(labels, num_labels, log=np.log):
        p = np.bincount(labels, minlength=num_labels) / len(labels)
        p = p[p > 0]
        return float(-(p * log(p)).sum())

    def majority_confident(labels, num_labels):
        k = labels.mean()
        q = 1 - 1e-9 if k > 0.5 else 1e-9
        return float(-(k * np.log(q) + (1 - k) * np.log(1 - q)))

    wrong = {
        "log 2 whatever the labels": lambda labels, n: float(np.log(2)),
        "entropy in bits": lambda labels, n: entropy(labels, n, np.log2),
        "majority-class error rate": lambda labels, n: float(1 - np.bincount(labels).max() / len(labels)),
        "all probability on the majority label": majority_confident,
    }
    assert_catches(check.constant_loss, entropy, wrong)
