"""The backward pass checked without torch: central finite differences in float64.

For an op ``y = f(x)`` and a fixed random ``R``, the scalar ``L = sum(f(x) * R)`` has
``dL/dy = R``, so ``f_backward(R, ...)`` must equal (L(x + h e) - L(x - h e)) / 2h entry by
entry. For the model, the loss of the inference path (``model(...)`` then ``model.loss``) is
differentiated the same way, a few entries of every parameter of the tiny fixture model
(tests/fixtures/tiny_model.h5: vocab 1000, H=32, L=2) with seeded random heads attached.
Relative error |fd - ours| / max(|fd|, |ours|) <= 1e-6 (absolute 1e-9 for entries under 1e-4,
below what a finite difference resolves; see SMALL).
"""

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from minibert import heads, kernels, ops, train
from minibert import weights as weights_format
from minibert.config import SUPPORTED_ACTIVATIONS
from minibert.model import BertModel

FIXTURE = Path(__file__).parent / "fixtures" / "tiny_model.h5"
STEP = 1e-5  # central differences: error ~ STEP^2 f''' + rounding ~ 1e-16 |L| / STEP
REL_TOL = 1e-6
# A finite difference of a loss L carries a rounding error of about 1e-16 |L| / STEP ~ 1e-10 here
# (|L| ~ 10): a gradient entry under SMALL (the query biases' are ~1e-5: the query bias shifts
# every score of a row nearly alike, which softmax ignores) cannot be resolved to 1e-6 relative;
# such entries are held to ABS_TOL, a few times that rounding error.
SMALL = 1e-4
ABS_TOL = 1e-9


def rel_err(a, b):
    return abs(a - b) / max(abs(a), abs(b), 1e-300)


def numeric_grad(loss, x, index):
    """(L(x + h) - L(x - h)) / 2h for one entry of x, restored afterwards."""
    old = x[index]
    x[index] = old + STEP
    up = loss()
    x[index] = old - STEP
    down = loss()
    x[index] = old
    return (up - down) / (2 * STEP)


def check_entries(label, loss, x, grad, n=6, seed=0):
    """Compare grad with finite differences at n entries of x: the largest |grad|, and random
    ones among those of at least 1% of the largest (below that, the finite difference's own
    rounding error, ~1e-16 |L| / STEP, is no longer small against the gradient)."""
    assert grad.shape == x.shape, f"{label}: gradient shape {grad.shape} != {x.shape}"
    rng = np.random.default_rng(seed)
    magnitude = np.abs(grad).ravel()
    large = np.flatnonzero(magnitude >= 0.01 * magnitude.max())
    largest = np.argsort(-magnitude)[: n // 2].tolist()
    flat = largest + rng.choice(large, min(len(large), n - n // 2), replace=False).tolist()
    for f in flat:
        index = np.unravel_index(f, x.shape)
        fd = numeric_grad(loss, x, index)
        message = f"{label}{list(index)}: finite difference {fd!r}, backward {grad[index]!r}"
        if abs(grad[index]) < SMALL:  # below the finite difference's resolution: compare absolutely
            assert abs(fd - grad[index]) <= ABS_TOL, message
            continue
        assert rel_err(fd, grad[index]) <= REL_TOL, message


# ---------------------------------------------------------------------------------------
# Each op's backward
# ---------------------------------------------------------------------------------------

rng0 = np.random.default_rng(0)


def randn(*shape):
    return rng0.standard_normal(shape)


def check_op(label, forward, inputs, backward, wrt):
    """forward(*inputs) -> y; backward(R) -> gradients of sum(y * R) w.r.t. inputs[i] for i in wrt."""
    R = randn(*np.shape(forward(*inputs)))
    grads = backward(R)
    grads = grads if isinstance(grads, tuple) else (grads,)
    for i, g in zip(wrt, grads, strict=True):
        check_entries(f"{label} d{i}", lambda: float((forward(*inputs) * R).sum()), inputs[i], g, n=8)


def test_linear_backward():
    x, w, b = randn(2, 3, 5), randn(4, 5), randn(4)
    check_op("linear", ops.linear, (x, w, b), lambda R: ops.linear_backward(R, x, w), wrt=(0, 1, 2))


def test_layer_norm_backward():
    x, w, b = randn(2, 3, 6) * 3 + 1, randn(6), randn(6)
    check_op("layer_norm", lambda *a: ops.layer_norm(*a, 1e-12), (x, w, b),
             lambda R: ops.layer_norm_backward(R, x, w, 1e-12), wrt=(0, 1, 2))


def test_add_layer_norm_backward():
    x, r, w, b = randn(2, 3, 6), randn(2, 3, 6), randn(6), randn(6)
    check_op("add_layer_norm", lambda *a: ops.add_layer_norm(*a, 1e-12), (x, r, w, b),
             lambda R: ops.add_layer_norm_backward(R, x, r, w, 1e-12), wrt=(0, 1, 2, 3))


@pytest.mark.parametrize("name", sorted(set(SUPPORTED_ACTIVATIONS) | {"tanh"}))  # every hidden_act; the pooler's
def test_activation_backward(name):
    assert hasattr(ops, name + "_backward"), f"ops.{name} has no backward: add {name}_backward(dy, x) beside it"
    forward = np.tanh if name == "tanh" else getattr(ops, name)
    x = randn(3, 7) * 2
    check_op(name, forward, (x,), lambda R: getattr(ops, name + "_backward")(R, x), wrt=(0,))


def test_softmax_backward():
    x = randn(3, 4, 6)
    check_op("softmax", ops.softmax, (x,), lambda R: ops.softmax_backward(R, ops.softmax(x)), wrt=(0,))


def test_masked_softmax_backward():
    scores = randn(1, 2, 5, 5)
    mask_bias = ops.attention_mask_bias(np.array([[1, 1, 1, 0, 0]]), np.dtype(np.float64))
    probs = ops.masked_softmax(scores, mask_bias)
    check_op("masked_softmax", lambda s: ops.masked_softmax(s, mask_bias), (scores,),
             lambda R: ops.masked_softmax_backward(R, probs), wrt=(0,))
    assert np.array_equal(ops.masked_softmax_backward(randn(*probs.shape), probs)[..., 3:], np.zeros((1, 2, 5, 2)))


def test_masked_softmax_backward_of_a_fully_masked_row_is_autograds():
    """A fully masked row: every score + finfo.min rounds to finfo.min, so the probabilities are a
    flat 1/T whatever the scores (a finite difference is 0). Autograd differentiates the formula
    instead (the mask's addition passes the gradient through): softmax's backward at the uniform
    row. minibert does what autograd does (checked against torch in test_grads.py, where B = 3
    batches end with a fully masked row)."""
    scores = randn(1, 2, 5, 5)
    probs = ops.masked_softmax(scores, ops.attention_mask_bias(np.zeros((1, 5), np.int64), np.dtype(np.float64)))
    assert np.array_equal(probs, np.full(probs.shape, 0.2))
    R = randn(*probs.shape)
    expected = 0.2 * (R - R.mean(-1, keepdims=True))  # softmax_backward at y = 1/5 everywhere
    np.testing.assert_allclose(ops.masked_softmax_backward(R, probs), expected, rtol=1e-13, atol=1e-15)


def test_attention_products_backward():
    q, k, v, p = randn(2, 3, 4, 5), randn(2, 3, 4, 5), randn(2, 3, 4, 5), randn(2, 3, 4, 4)
    scale = 5 ** -0.5
    check_op("attention_scores", lambda q, k: ops.attention_scores(q, k, scale), (q, k),
             lambda R: ops.attention_scores_backward(R, q, k, scale), wrt=(0, 1))
    check_op("attention_context", ops.attention_context, (p, v),
             lambda R: ops.attention_context_backward(R, p, v), wrt=(0, 1))


def test_split_and_merge_heads_backward():
    x, y = randn(2, 4, 6), randn(2, 3, 4, 2)
    check_op("split_heads", lambda x: ops.split_heads(x, 3), (x,), lambda R: ops.split_heads_backward(R), wrt=(0,))
    check_op("merge_heads", ops.merge_heads, (y,), lambda R: ops.merge_heads_backward(R, 3), wrt=(0,))


def test_embedding_backward_adds_repeated_ids_and_skips_padding():
    table = randn(7, 3)
    ids = np.array([[1, 4, 4, 0], [4, 2, 0, 1]])  # 4 three times, 1 twice, 0 (padding) twice
    check_op("embedding", lambda t: ops.embedding(ids, t), (table,),
             lambda R: ops.embedding_backward(R, ids, 7), wrt=(0,))
    R = randn(2, 4, 3)
    d = ops.embedding_backward(R, ids, 7, padding_idx=0)
    assert np.array_equal(d[0], np.zeros(3)) and np.allclose(d[4], R[0, 1] + R[0, 2] + R[1, 0])


def test_dropout_backward():
    x = randn(4, 5)
    mask = ops.dropout_mask(np.random.default_rng(1), x.shape, 0.3, x.dtype)
    check_op("dropout", lambda x: ops.dropout(x, mask), (x,), lambda R: ops.dropout_backward(R, mask), wrt=(0,))


def test_losses_backward():
    logits, labels = randn(5, 4), np.array([1, -100, 3, 0, -100])
    dlogits = heads.cross_entropy_backward(logits, labels)
    check_entries("cross_entropy", lambda: float(heads.cross_entropy(logits, labels)), logits, dlogits)
    assert np.array_equal(heads.cross_entropy_backward(logits, labels)[[1, 4]], np.zeros((2, 4)))  # ignored rows
    pred, target = randn(5), randn(5)
    check_entries("mse", lambda: float(heads.mse_loss(pred, target)), pred, heads.mse_loss_backward(pred, target))
    z, t = randn(3, 4) * 5, (randn(3, 4) > 0).astype(float)
    check_entries("bce", lambda: float(heads.bce_with_logits(z, t)), z, heads.bce_with_logits_backward(z, t))


def test_the_numba_backend_computes_the_backward_with_the_twins():
    """kernels.backend: the two backward kernels in place of their twins, ops' for the rest."""
    for name in (n for n in ops.__all__ if n.endswith("_backward")):
        twin = getattr(kernels, name, None)
        assert getattr(kernels.backend, name) is (twin if twin is not None else getattr(ops, name))
    for name in ("linear_backward", "gelu_backward", "attention_scores_backward", "attention_context_backward"):
        assert getattr(kernels.backend, name) is getattr(kernels, name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_twins_equal(dtype):
    """The kernels twins against ops': linear_backward and the attention products' backward
    (GEMMs, small ones on one BLAS thread), gelu_backward (a Numba loop; odd sizes, a single
    element, the serial and the parallel driver)."""
    tol = dict(rtol=1e-5, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-14)
    dy, x, w = randn(3, 5, 7).astype(dtype), randn(3, 5, 11).astype(dtype), randn(7, 11).astype(dtype)
    for ours, ref in zip(kernels.linear_backward(dy, x, w), ops.linear_backward(dy, x, w), strict=True):
        assert ours.dtype == dtype and ours.shape == ref.shape
        np.testing.assert_allclose(ours, ref, **tol)
    q, k, v = (randn(2, 3, 5, 4).astype(dtype) for _ in range(3))  # [B, A, T, D]
    p, ds = (randn(2, 3, 5, 5).astype(dtype) for _ in range(2))  # [B, A, T, T]
    scale = dtype(0.5)
    pairs = [(kernels.attention_scores_backward(ds, q, k, scale), ops.attention_scores_backward(ds, q, k, scale)),
             (kernels.attention_context_backward(q, p, v), ops.attention_context_backward(q, p, v))]
    for ours_pair, ref_pair in pairs:
        for ours, ref in zip(ours_pair, ref_pair, strict=True):
            assert ours.dtype == dtype and ours.shape == ref.shape
            np.testing.assert_allclose(ours, ref, **tol)
    for shape in [(1,), (3, 5, 7), (kernels.PARALLEL_MIN_ELEMENTS + 3,)]:
        x = (randn(*shape) * 3).astype(dtype)
        special = np.array([0.0, -8.0, 8.0, 1e-30], dtype)[: x.size]  # zero, both tails, tiny
        x.ravel()[: special.size] = special
        dy = randn(*shape).astype(dtype)
        ours = kernels.gelu_backward(dy, x)
        assert ours.dtype == dtype and ours.shape == x.shape
        # elementwise: a sample is enough (the special values, then random ones)
        some = np.r_[0:min(4, x.size), np.random.default_rng(0).integers(0, x.size, 20000)]
        np.testing.assert_allclose(ours.ravel()[some], ops.gelu_backward(dy.ravel()[some], x.ravel()[some]), **tol)


# ---------------------------------------------------------------------------------------
# The whole model: every parameter of the tiny fixture model, float64, no torch
# ---------------------------------------------------------------------------------------


def tiny_head_model(head):
    """The tiny fixture encoder with seeded random heads (masked-LM, next-sentence, classification)."""
    w = weights_format.load(FIXTURE)
    rng = np.random.default_rng(0)
    H, V = w.config.hidden_size, w.config.vocab_size
    extra = {
        "cls.predictions.transform.dense.weight": 0.2 * rng.standard_normal((H, H)),
        "cls.predictions.transform.dense.bias": 0.1 * rng.standard_normal(H),
        "cls.predictions.transform.LayerNorm.weight": 1 + 0.1 * rng.standard_normal(H),
        "cls.predictions.transform.LayerNorm.bias": 0.1 * rng.standard_normal(H),
        "cls.predictions.bias": 0.1 * rng.standard_normal(V),
        "cls.seq_relationship.weight": 0.2 * rng.standard_normal((2, H)),
        "cls.seq_relationship.bias": 0.1 * rng.standard_normal(2),
        "classifier.weight": 0.2 * rng.standard_normal((3, H)),
        "classifier.bias": 0.1 * rng.standard_normal(3),
    }
    config = replace(w.config, id2label={0: "a", 1: "b", 2: "c"})
    bert = BertModel(config, {**w.tensors, **extra}, dtype="float64", backend="numpy")
    return heads.HEAD_CLASSES[head](bert)


def fd_batch():
    ids = np.array([[101, 7, 7, 42, 102, 9, 102, 0], [101, 7, 55, 102, 0, 0, 0, 0]]) % 1000  # repeated ids, padding
    mask = (np.arange(8)[None, :] < np.array([[7], [4]])).astype(np.int64)
    types = np.array([[0, 0, 0, 0, 0, 1, 1, 0], [0] * 8])
    labels = np.full((2, 8), -100)
    labels[0, 2], labels[0, 5], labels[1, 1] = 7, 500, 13
    return ids, mask, types, labels, np.array([0, 1])


@pytest.mark.parametrize("head", ["pretraining", "classification"])
def test_finite_differences_every_parameter(head):
    model = tiny_head_model(head)
    ids, mask, types, mlm_labels, nsl = fd_batch()
    labels, extra = (mlm_labels, dict(next_sentence_label=nsl)) if head == "pretraining" else (np.array([2, 0]), {})

    def loss():  # the inference path: model(...) then the head's loss, as a user would compute it
        out = model(ids, mask, types)
        return model.loss(out, labels, **extra)

    value, grads = train.value_and_grad(model, ids, mask, types, labels=labels, **extra)
    assert math.isclose(value, loss(), rel_tol=1e-14)
    expected = [n for n in model.weights if not n.startswith("classifier." if head == "pretraining" else "cls.")]
    assert list(grads) == expected  # every parameter of the model, in the file's order
    for name, grad in grads.items():
        check_entries(f"{head}: {name}", loss, model.weights[name], grad, n=4)


def test_finite_differences_with_dropout():
    """With an rng, the same seed gives the same dropout masks: the gradient of that fixed
    sub-network is checked the same way (every dropout site of transformers is on)."""
    model = tiny_head_model("classification")
    model.config.hidden_dropout_prob, model.config.attention_probs_dropout_prob = 0.3, 0.2
    ids, mask, types, _, _ = fd_batch()
    labels = np.array([2, 0])

    def loss():
        return train.value_and_grad(model, ids, mask, types, labels=labels, rng=np.random.default_rng(7))[0]

    value, grads = train.value_and_grad(model, ids, mask, types, labels=labels, rng=np.random.default_rng(7))
    assert value != train.value_and_grad(model, ids, mask, types, labels=labels)[0]  # dropout did something
    for name in ("embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.query.weight",
                 "encoder.layer.1.output.dense.weight", "pooler.dense.weight", "classifier.weight"):
        check_entries(f"dropout: {name}", loss, model.weights[name], grads[name], n=4)
