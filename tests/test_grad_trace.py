"""The gradient trace: d loss / d every named step and parameter, minibert against PyTorch
autograd, and planted backward bugs found where they begin.

``train.trace_grads`` records gradients in backward order; ``reference.trace_grads`` reads
PyTorch's with tensor hooks; ``minibert.compare`` walks ours in order and names the first
gradient beyond tolerance. Each bug below is planted in the open (a monkeypatched ``ops``
function, the model on the NumPy backend whose functions are ``ops``'), on a padded pair batch
with repeated ids, in float64.
"""

import numpy as np
import pytest

import minibert
from minibert import compare, ops, reference, train
from minibert.hooks import hook_points
from minibert.trace import Trace

from helpers import MNLI


def batch():
    ids = np.array([[101, 2054, 2054, 1996, 102, 7592, 2054, 102], [101, 7592, 2088, 102, 0, 0, 0, 0]])
    mask = (ids != 0).astype(np.int64)
    types = np.array([[0, 0, 0, 0, 0, 1, 1, 1], [0] * 8])
    return ids, mask, types, np.array([2, 0])


@pytest.fixture(scope="module")
def classifier(preset_model):
    _, _, h5 = preset_model("bert-tiny", "BertForSequenceClassification", **MNLI)
    return h5


@pytest.fixture(scope="module")
def references(classifier):
    ids, mask, types, labels = batch()
    return {
        dtype: reference.trace_grads(classifier, ids, mask, types, head="classification", labels=labels, dtype=dtype)
        for dtype in ("float32", "float64")
    }


def ours(h5, dtype="float64", backend="numpy"):
    ids, mask, types, labels = batch()
    model = minibert.load(h5, dtype=dtype, head="classification", backend=backend)
    return train.trace_grads(model, ids, mask, types, labels=labels)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_no_bug_every_gradient_matches(classifier, references, dtype):
    trace = ours(classifier, dtype, backend="numba")
    result = compare(trace, references[dtype])
    assert result.passed and result.first_failure is None, result.table()
    assert list(trace) == [r.name for r in result.rows]  # the same names on both sides, none missing
    forward_steps = {name for name, _ in hook_points(minibert.load(classifier).config)}
    assert forward_steps | {"classifier"} <= set(trace)  # every forward hook point has its gradient
    params = set(minibert.load(classifier, head="classification").weights)
    assert params <= set(trace)  # and every parameter
    assert abs(trace.meta["loss"] - references[dtype].meta["loss"]) <= 1e-5 * max(1, abs(trace.meta["loss"]))


def test_backward_order(classifier):
    """The trace runs from the loss back to the inputs: the head first, the embeddings last."""
    names = list(ours(classifier))
    assert names[0] == "classifier" and names[-1] == "embeddings.word_embeddings.weight"
    assert names.index("encoder.layer.1.output.LayerNorm") < names.index("encoder.layer.0.output.LayerNorm")
    assert names.index("encoder.layer.0.attention.self.probs") < names.index("encoder.layer.0.attention.self.scores")


def test_trace_only_and_save_round_trip(classifier, tmp_path):
    ids, mask, types, labels = batch()
    model = minibert.load(classifier, dtype="float64", head="classification")
    trace = train.trace_grads(model, ids, mask, types, labels=labels, only=["encoder.layer.0.*", "pooler"])
    assert set(trace) and all(n.startswith("encoder.layer.0.") or n == "pooler" for n in trace)
    back = Trace.load(trace.save(tmp_path / "grads.h5"))
    assert list(back) == list(trace) and back.meta["kind"] == "gradients" and back.meta["loss"] == trace.meta["loss"]
    assert back.meta["labels"] == labels.tolist()
    assert all(np.array_equal(back[n], trace[n]) for n in trace)


# --- the planted bugs ---------------------------------------------------------------------


RIGHT_LINEAR_BACKWARD = ops.linear_backward  # kept before any test patches ops


def linear_backward_without_transpose(dy, x, weight):  # dW = x^T dy: [in, out] instead of [out, in]
    dx, _, dbias = RIGHT_LINEAR_BACKWARD(dy, x, weight)
    return dx, x.reshape(-1, x.shape[-1]).T @ dy.reshape(-1, dy.shape[-1]), dbias


def layer_norm_backward_without_mean(dy, x, weight, eps):  # forgot that the mean depends on every x
    mean = x.mean(-1, keepdims=True)
    rstd = 1.0 / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps)
    xhat, g = (x - mean) * rstd, dy * weight
    dx = rstd * (g - xhat * (g * xhat).mean(-1, keepdims=True))  # no "- g.mean(-1)"
    return dx, (dy * xhat).reshape(-1, x.shape[-1]).sum(0), dy.reshape(-1, x.shape[-1]).sum(0)


def softmax_backward_without_row_sum(dy, y):  # y * dy: the diagonal of the Jacobian only
    return y * dy


def embedding_backward_without_accumulation(dy, ids, num_embeddings, padding_idx=None):  # last write wins
    dtable = np.zeros((num_embeddings, dy.shape[-1]), dy.dtype)
    dtable[ids.reshape(-1)] = dy.reshape(-1, dy.shape[-1])
    if padding_idx is not None:
        dtable[padding_idx] = 0
    return dtable


BUGS = {
    # In backward order the classifier is the first linear: its weight gradient has the wrong shape.
    "linear weight gradient without the transpose": (
        "linear_backward", linear_backward_without_transpose, "classifier.weight"),
    # LayerNorm's parameter gradients are right; the input gradient is the first wrong value:
    # d loss / d output.dense of the last layer.
    "LayerNorm backward without the mean term": (
        "layer_norm_backward", layer_norm_backward_without_mean, "encoder.layer.1.output.dense"),
    "softmax backward without the row sum": (
        "softmax_backward", softmax_backward_without_row_sum, "encoder.layer.1.attention.self.scores"),
    # The first table with repeated ids in backward order is the token-type table (ids 0 and 1 only).
    "embedding backward without accumulation": (
        "embedding_backward", embedding_backward_without_accumulation, "embeddings.token_type_embeddings.weight"),
}


@pytest.mark.parametrize("bug", BUGS)
def test_planted_backward_bug_is_found_where_it_begins(bug, classifier, references, monkeypatch):
    name, wrong, expected = BUGS[bug]
    monkeypatch.setattr(ops, name, wrong)  # the NumPy backend is ops: model.F.<name> is the wrong one
    result = compare(ours(classifier), references["float64"])
    assert result.first_failure is not None, f"{bug} went unnoticed:\n" + result.table()
    assert result.first_failure.name == expected, result.table()
    before = [r for r in result.rows[: result.rows.index(result.first_failure)]]
    assert before and all(r.passed for r in before)  # everything computed before the bug is right
