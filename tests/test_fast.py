"""The fast path (``minibert.fast``) against the step path it replaces when nothing is traced.

``BertModel.forward`` sends untraced calls of a Numba model to ``fast.forward``; a trace, hooks
and ``output_attentions`` always take the step path. The two must agree: relative to the
tensor's scale, within ``fast.FLOAT32_BOUND`` (float32) and ``fast.FLOAT64_BOUND`` (float64),
on every preset shape, both dtypes, padded batches and fully masked rows, through both of its
layer functions (``layer_small``: few rows, all in Numba; ``layer_large``: BLAS products).
Each fused kernel is also checked against the ``ops`` functions it stands for.
"""

import dataclasses

import numpy as np
import pytest

from minibert import BertConfig, fast, kernels, ops

from helpers import PRESETS, seeded_model

DTYPES = ["float32", "float64"]


def bound(dtype):
    return fast.FLOAT32_BOUND if np.dtype(dtype) == np.float32 else fast.FLOAT64_BOUND


def assert_fast_equals_step(fast_value, step_value, dtype, what=""):
    assert fast_value.shape == step_value.shape and fast_value.dtype == step_value.dtype == np.dtype(dtype)
    scale = max(1.0, float(np.abs(step_value).max()))
    err = float(np.abs(fast_value.astype(np.float64) - step_value).max()) / scale
    assert err <= bound(dtype), f"{what}: fast - step = {err:.2e} of the scale > {bound(dtype):.0e}"


def preset_config(preset, **overrides):
    """A preset's shape with a small vocabulary (the weights are random anyway)."""
    return dataclasses.replace(BertConfig.preset(preset), vocab_size=1000, max_position_embeddings=128, **overrides)


def batches():
    """(name, ids, mask, types): one sentence of 8 tokens (few rows), a single token, a padded
    batch of 8 rows in all (few rows, padding), a padded batch of 3 x 30 with a fully masked
    row (many rows), 2 x 40 tokens, a padded 2 x 8 with a fully masked row (few rows), and one
    padded sequence of 100 tokens (many rows, one sequence: layer_small's query blocks of 64)."""
    rng = np.random.default_rng(7)
    cases = []
    for name, B, T in [("1x8", 1, 8), ("1x1", 1, 1), ("2x4 padded", 2, 4), ("3x30 masked row", 3, 30),
                       ("2x40", 2, 40), ("2x8 masked row", 2, 8), ("1x100 padded", 1, 100)]:
        ids, types = rng.integers(1, 1000, size=(B, T)), rng.integers(0, 2, size=(B, T))
        mask = np.ones((B, T), np.int64)
        if B > 1 or name.endswith("padded"):
            mask[-1, T // 2:] = 0  # a padded row
        if name.endswith("masked row"):
            mask[0] = 0  # every key masked: a uniform softmax, as transformers
        cases.append((name, ids, mask, types))
    return cases


def step_outputs(model, *inputs):
    model.use_fast_path = False
    try:
        return model(*inputs, output_hidden_states=True)
    finally:
        model.use_fast_path = True


@pytest.fixture
def layer_calls(monkeypatch):
    """Counts of fast.layer_small and fast.layer_large calls during the test."""
    calls = {"layer_small": 0, "layer_large": 0}
    for name in calls:
        original = getattr(fast, name)

        def counting(*args, _original=original, _name=name):
            calls[_name] += 1
            return _original(*args)

        monkeypatch.setattr(fast, name, counting)
    return calls


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("preset", PRESETS)
def test_fast_path_equals_step_path(preset, dtype, layer_calls):
    config = preset_config(preset)
    model = seeded_model(config, dtype)
    assert model.use_fast_path
    for name, ids, mask, types in batches():
        out = model(ids, mask, types, output_hidden_states=True)
        ref = step_outputs(model, ids, mask, types)
        assert_fast_equals_step(out.last_hidden_state, ref.last_hidden_state, dtype, f"{name} last_hidden_state")
        assert_fast_equals_step(out.pooler_output, ref.pooler_output, dtype, f"{name} pooler_output")
        assert len(out.hidden_states) == config.num_hidden_layers + 1
        for i, (h, r) in enumerate(zip(out.hidden_states, ref.hidden_states, strict=True)):
            assert_fast_equals_step(h, r, dtype, f"{name} hidden_states[{i}]")
        assert out.attentions is None
        if name.endswith("masked row"):  # a fully masked row is finite, as in the step path
            assert np.isfinite(out.last_hidden_state[0]).all()
    L = config.num_hidden_layers
    # 1x8, 1x1, 2x4 padded and 2x8 masked row have at most SMALL_ROWS rows: layer_small; so does
    # 1x100 padded, one sequence, from H = 256 (bert-tiny: layer_large); the batches 3x30 masked
    # row and 2x40 have more rows: layer_large.
    assert 16 <= fast.SMALL_ROWS < 80 and fast.ONE_SEQUENCE_MIN_HIDDEN == 256
    one_sequence = 1 if config.hidden_size >= 256 else 0
    assert layer_calls["layer_small"] == (4 + one_sequence) * L
    assert layer_calls["layer_large"] == (3 - one_sequence) * L


def test_hidden_size_not_a_multiple_of_4(layer_calls):
    """H = 258 (3 heads of 86), I = 130: every product of layer_small has a tail of 2 features
    after its blocks of 4, and 5 rows leave one row after a block of 4; one sequence of 70
    tokens (a block of 64 queries and one of 6): layer_small; 2 x 40 rows: layer_large."""
    config = preset_config("bert-tiny", hidden_size=258, num_attention_heads=3, intermediate_size=130)
    for dtype in DTYPES:
        model = seeded_model(config, dtype)
        for B, T in [(1, 5), (1, 8), (1, 70), (2, 40)]:
            ids = np.random.default_rng(B * T).integers(1, 1000, size=(B, T))
            out, ref = model(ids), step_outputs(model, ids, None, None)
            assert_fast_equals_step(out.last_hidden_state, ref.last_hidden_state, dtype, f"{dtype} {B}x{T}")
    assert layer_calls["layer_small"] == 2 * 3 * config.num_hidden_layers  # (1, 5), (1, 8), (1, 70); both dtypes
    assert layer_calls["layer_large"] == 2 * config.num_hidden_layers


def test_which_inputs_take_layer_small():
    """Up to SMALL_ROWS rows, or one sequence of any length from H = 256: layer_small; a batch of
    more rows, or a long sequence of bert-tiny (H = 128): layer_large."""
    for H in (128, 256, 384, 512):
        assert fast.takes_layer_small(1, 8, H) and fast.takes_layer_small(8, 8, H) and fast.takes_layer_small(2, 32, H)
        assert not fast.takes_layer_small(2, 40, H) and not fast.takes_layer_small(8, 128, H)
        assert fast.takes_layer_small(1, 128, H) == fast.takes_layer_small(1, 512, H) == (H >= 256)


@pytest.mark.parametrize("activation", sorted(fast.ACTIVATIONS))
def test_every_activation(activation):
    """Each hidden_act of config.SUPPORTED_ACTIVATIONS through both layer functions."""
    config = preset_config("bert-mini", hidden_act=activation)
    model = seeded_model(config, "float32")
    assert model.use_fast_path
    for name, ids, mask, types in batches()[::2]:  # 1x8 (few rows), 2x4 padded, 2x40
        out, ref = model(ids, mask, types), step_outputs(model, ids, mask, types)
        assert_fast_equals_step(out.last_hidden_state, ref.last_hidden_state, "float32", f"{activation} {name}")


def test_fast_path_covers_every_supported_activation_but_tanh():
    from minibert.config import SUPPORTED_ACTIVATIONS

    assert set(fast.ACTIVATIONS) == set(SUPPORTED_ACTIVATIONS) - {"tanh"}
    model = seeded_model(preset_config("bert-tiny", hidden_act="tanh"), "float32")
    assert not model.use_fast_path  # a tanh model takes the step path


def test_weights_changed_in_place_are_seen():
    """No second copy of the weights: zeroing a matrix in place changes the fast output."""
    model = seeded_model(preset_config("bert-mini"), "float32")
    _, ids, mask, types = batches()[0]
    before = model(ids, mask, types).last_hidden_state
    model.weights["encoder.layer.0.attention.self.value.weight"][...] = 0
    after = model(ids, mask, types).last_hidden_state
    assert np.abs(after - before).max() > 1e-2
    assert_fast_equals_step(after, step_outputs(model, ids, mask, types).last_hidden_state, "float32")


def test_traces_and_attention_maps_take_the_step_path(monkeypatch):
    model = seeded_model(preset_config("bert-mini"), "float32")
    _, ids, mask, types = batches()[0]
    expected = model(ids, mask, types).last_hidden_state

    def refuse(*args, **kwargs):
        raise AssertionError("the fast path ran")

    monkeypatch.setattr(fast, "forward", refuse)
    trace = model.trace(ids, mask, types)
    assert_fast_equals_step(expected, trace["encoder.layer.3.output.LayerNorm"], "float32", "trace")
    out = model(ids, mask, types, output_attentions=True)
    assert len(out.attentions) == 4
    assert_fast_equals_step(expected, out.last_hidden_state, "float32", "output_attentions")


def test_numpy_backend_never_takes_the_fast_path():
    assert not seeded_model(preset_config("bert-tiny"), "float32", backend="numpy").use_fast_path


# ---------------------------------------------------------------------------------------
# The fused kernels, each against the ops functions it stands for
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("rows", "features", "inputs"),
                         [(1, 5, 3), (8, 130, 384), (3, 1538, 384), (8, 1024, 256), (7, 66, 130), (32, 514, 256),
                          (130, 66, 64), (fast.QUARTER_BLOCKS_MAX_ROWS + 1, 514, 128)])
def test_linear_rows(rows, features, inputs, dtype):
    """Input rows and output features not multiples of 4, serial and parallel sizes (PARALLEL_MIN_MACS),
    few and many rows (QUARTER_BLOCKS_MAX_ROWS)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, inputs)).astype(dtype)
    w = (0.05 * rng.standard_normal((features, inputs))).astype(dtype)
    ref = ops.linear(x, w, np.zeros(features, dtype))
    assert_fast_equals_step(fast.linear_rows(x, w), ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_rows_block_order_keeps_the_bits(dtype):
    """Few rows take weight rows a quarter of the matrix apart, many rows four neighbours: the
    same dot product for each output, so the same bits."""
    rows = fast.QUARTER_BLOCKS_MAX_ROWS  # a multiple of 4: every row in blocks of four rows
    rng = np.random.default_rng(1)
    x = rng.standard_normal((rows + 4, 256)).astype(dtype)
    w = rng.standard_normal((514, 256)).astype(dtype)
    few, many = fast.linear_rows(x[:rows], w), fast.linear_rows(x, w)  # quarter blocks, neighbours
    np.testing.assert_array_equal(few, many[:rows])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", sorted(fast.ACTIVATIONS))
def test_bias_activation(activation, dtype):
    rng = np.random.default_rng(1)
    h = (3 * rng.standard_normal((5, 67))).astype(dtype)
    bias = rng.standard_normal(67).astype(dtype)
    ref = getattr(ops, activation)(h + bias)
    kind, p = fast.ACTIVATIONS[activation]
    assert_fast_equals_step(fast.bias_activation(h.copy(), bias, kind, p), ref, dtype, activation)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_add_layer_norm(dtype):
    rng = np.random.default_rng(2)
    h, residual = (rng.standard_normal((6, 384)).astype(dtype) for _ in range(2))
    bias, weight, ln_bias = (rng.standard_normal(384).astype(dtype) for _ in range(3))
    ref = ops.add_layer_norm(h + bias, residual, weight, ln_bias, 1e-12)
    assert_fast_equals_step(fast.bias_add_layer_norm(h, bias, residual, weight, ln_bias, 1e-12), ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("B", "T", "A", "D"), [(3, 5, 4, 16), (3, 150, 2, 24), (1, 64, 3, 32)])
def test_attention(B, T, A, D, dtype):
    """Against split_heads, attention_scores, masked_softmax, attention_context, merge_heads; a
    padded row and a fully masked one; T = 150 takes three blocks of queries (64, 64, 22)."""
    assert fast.QUERY_BLOCK == 64
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((B, T, A * D)).astype(dtype) for _ in range(3))
    bq, bk, bv = (rng.standard_normal(A * D).astype(dtype) for _ in range(3))
    mask = np.ones((B, T), np.int64)
    if B > 1:
        mask[1, T // 2:] = 0  # a padded row
        mask[2] = 0  # a fully masked row
    mask_bias = ops.attention_mask_bias(mask, np.dtype(dtype))  # [B, 1, 1, T]
    scale = np.dtype(dtype).type(D ** -0.5)
    heads = [ops.split_heads(m + b, A) for m, b in ((q, bq), (k, bk), (v, bv))]
    probs = ops.masked_softmax(ops.attention_scores(heads[0], heads[1], scale), mask_bias)
    ref = ops.merge_heads(ops.attention_context(probs, heads[2]))
    ours = fast.attention(q, k, v, mask_bias.reshape(B, T), bq, bk, bv, A, scale)
    assert_fast_equals_step(ours, ref, dtype)
    if B > 1:  # the fully masked row attends uniformly, as in transformers
        np.testing.assert_allclose(ours[2], np.broadcast_to(ref[2].mean(0), ref[2].shape), rtol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_attention_in_threads(dtype, monkeypatch):
    """A batch of at least as many sequences as BLAS has threads, with enough work, splits its
    attention over Python threads (by sequence); a single sequence does not."""
    calls = []
    original = fast.attention_in_threads
    monkeypatch.setattr(fast, "attention_in_threads", lambda *a: calls.append(a[0].shape) or original(*a))
    assert kernels._OPENBLAS is not None, "NumPy's wheels bundle OpenBLAS"
    default_threads = kernels._BLAS_THREADS
    monkeypatch.setattr(kernels, "_BLAS_THREADS", max(2, default_threads))  # a split on a 1-core machine too
    model = seeded_model(dataclasses.replace(preset_config("bert-mini"), max_position_embeddings=512), dtype)
    rng = np.random.default_rng(11)
    try:
        for B, T in [(5, 80), (1, 300)]:
            ids, mask = rng.integers(1, 1000, size=(B, T)), np.ones((B, T), np.int64)
            mask[-1, T // 3:] = 0  # padding
            if B > 1:
                mask[0] = 0  # a fully masked row
            out, ref = model(ids, mask), step_outputs(model, ids, mask)
            assert_fast_equals_step(out.last_hidden_state, ref.last_hidden_state, dtype, f"{B}x{T}")
            assert B * T * 256 * T >= fast.ATTENTION_THREADS_MIN_MACS
    finally:
        kernels._OPENBLAS[1](default_threads)
    assert calls == [(5, 4, 80, 64)] * 4  # every layer of the batch of 5; never the single sequence


# ---------------------------------------------------------------------------------------
# Numba's cache, filled in any order
# ---------------------------------------------------------------------------------------

CACHE_ORDER_SCRIPT = """
import sys
import numpy as np
import minibert
from minibert import fast
from minibert.weights import encoder_shapes

if sys.argv[1] == "product":  # linear_rows compiled on its own, and cached
    x, w = np.ones((8, 256), np.float32), np.ones((256, 256), np.float32)
    print(fast.linear_rows(x, w).sum())
else:  # a model whose layers take layer_small, compiled or loaded from the cache
    config = minibert.BertConfig.preset("bert-mini")
    rng = np.random.default_rng(0)
    weights = {name: 0.05 * rng.standard_normal(shape) for name, shape in encoder_shapes(config).items()}
    model = minibert.BertModel(config, weights)
    print(repr(model(np.arange(100, 108)).last_hidden_state.tolist()))
"""


def test_cached_kernels_load_in_any_order(tmp_path):
    """A regression test for a crash: with linear_rows compiled and cached by one process, a
    second process compiled layer_small against that cached parallel function, and the third
    process that loaded layer_small from the cache died of a segmentation fault (numba issue
    8578). No function with threads is called from another Numba function any more; each
    process here must finish, the last two with the same numbers."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}
    outputs = []
    for step in ("product", "layer", "layer"):
        done = subprocess.run([sys.executable, "-c", CACHE_ORDER_SCRIPT, step], env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, f"{step}: exit {done.returncode}\n{done.stderr[-2000:]}"
        outputs.append(done.stdout)
    assert outputs[0].strip() == str(float(8 * 256 * 256))
    assert outputs[1] == outputs[2] and len(outputs[1]) > 1000
