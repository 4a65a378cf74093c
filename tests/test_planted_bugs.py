"""Plant a classic porting bug in the forward pass; `compare` must name the step where it begins.

Each bug is planted in the open: a backend whose one function is wrong (the model computes
every step through ``model.F``), a monkeypatched ``ops`` function, or a weight dict with one
tensor transposed. The reference trace comes from transformers (PyTorch) on the same .h5.
The batch has padding, so a wrong mask shows.
"""

import types

import numpy as np
import pytest

import minibert
from minibert import compare, ops, reference
from minibert.model import BertModel

from helpers import padded_inputs

DTYPES = ["float32", "float64"]


@pytest.fixture(scope="module")
def references(tiny):
    """The PyTorch trace of the padded batch, per dtype."""
    return {dtype: reference.trace(tiny, *padded_inputs(), dtype=dtype) for dtype in DTYPES}


def backend_with(**wrong):
    """The ops module with some functions replaced: a buggy backend."""
    functions = {name: getattr(ops, name) for name in dir(ops) if not name.startswith("_")}
    functions.update(wrong)
    return types.SimpleNamespace(**functions)


def first_failure(model, references, dtype):
    result = compare(model.trace(*padded_inputs()), references[dtype], dtype=dtype)
    assert result.first_failure is not None, "the planted bug went unnoticed:\n" + result.table()
    return result.first_failure.name


# --- the bugs ---------------------------------------------------------------------------


def softmax_over_queries(scores, mask_bias):  # softmax over axis -2 instead of the keys
    x = scores + mask_bias
    e = np.exp(x - x.max(-2, keepdims=True))
    return e / e.sum(-2, keepdims=True)


def scores_without_scaling(query, key, scale):  # forgot the 1/sqrt(D)
    return query @ key.transpose(0, 1, 3, 2)


def tanh_gelu(x):  # the tanh approximation instead of the exact erf GELU
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def layer_norm_eps_1e5(x, weight, bias, eps):  # PyTorch's default eps instead of BERT's 1e-12
    return ops.layer_norm(x, weight, bias, 1e-5)


def mask_with_wrong_sign(attention_mask, dtype):  # +huge on padding instead of -huge
    return -ops.attention_mask_bias(attention_mask, dtype)


BACKEND_BUGS = {
    "softmax over the wrong axis": (dict(masked_softmax=softmax_over_queries), "encoder.layer.0.attention.self.probs"),
    "missing 1/sqrt(d) scaling": (
        dict(attention_scores=scores_without_scaling),
        "encoder.layer.0.attention.self.scores",
    ),
    "tanh-approximate GELU": (dict(gelu=tanh_gelu), "encoder.layer.0.intermediate.gelu"),
    "LayerNorm eps 1e-5": (dict(layer_norm=layer_norm_eps_1e5), "embeddings.LayerNorm"),
    "mask added with the wrong sign": (
        dict(attention_mask_bias=mask_with_wrong_sign),
        "encoder.layer.0.attention.self.probs",
    ),
}


@pytest.mark.parametrize("dtype", DTYPES)
def test_no_bug_no_failure(tiny, references, dtype):
    result = compare(minibert.load(tiny, dtype=dtype).trace(*padded_inputs()), references[dtype])
    assert result.passed and result.first_failure is None, result.table()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bug", BACKEND_BUGS)
def test_backend_bug_is_found_where_it_begins(bug, dtype, tiny, references):
    wrong, expected = BACKEND_BUGS[bug]
    model = minibert.load(tiny, dtype=dtype)
    model.F = backend_with(**wrong)  # every step computes through model.F
    assert first_failure(model, references, dtype) == expected


@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_norm_eps_from_the_config_is_found_too(dtype, tiny, references):
    """The same eps bug, planted as a wrong config value: every LayerNorm uses it."""
    model = minibert.load(tiny, dtype=dtype)
    model.config = type(model.config)(**{**model.config.to_dict(), "layer_norm_eps": 1e-5})
    assert first_failure(model, references, dtype) == "embeddings.LayerNorm"


@pytest.mark.parametrize("dtype", DTYPES)
def test_position_ids_off_by_one(dtype, tiny, references, monkeypatch):
    monkeypatch.setattr(ops, "position_ids", lambda seq_length: np.arange(1, seq_length + 1)[None, :])
    model = minibert.load(tiny, dtype=dtype)
    assert first_failure(model, references, dtype) == "embeddings.position_embeddings"


@pytest.mark.parametrize("dtype", DTYPES)
def test_transposed_weight(dtype, tiny, references):
    """A converter that forgot PyTorch's [out, in] layout for one square matrix in layer 1."""
    good = minibert.load(tiny, dtype=dtype)
    name = "encoder.layer.1.attention.output.dense.weight"
    tensors = {**good.weights, name: good.weights[name].T}
    model = BertModel(good.config, tensors, dtype=dtype)
    assert first_failure(model, references, dtype) == "encoder.layer.1.attention.output.dense"
