"""Memory: a forward pass holds only what it returns, plus one layer's working set.

NumPy reports its allocations to tracemalloc, so tracemalloc's peak during a forward pass is
the most memory the pass held at once (weights excluded: they exist before). The bound: the
bytes of the returned arrays plus one layer's working set, counted from the shapes below; a
pass that kept every layer's attention probabilities (the old behaviour with
output_attentions=False) exceeds it on the MiniLM-like case.
"""

import dataclasses
import tracemalloc

import numpy as np
import pytest

from minibert import BertConfig, BertModel
from minibert.weights import encoder_shapes


def seeded_model(config, dtype, backend):
    rng = np.random.default_rng(0)
    tensors = {name: 0.05 * rng.standard_normal(shape) for name, shape in encoder_shapes(config).items()}
    return BertModel(config, tensors, dtype=dtype, backend=backend)


def layer_working_set(config, B, T, itemsize, backend):
    """Bytes one layer may hold at once, generously: input, Q, K, V, scores and probs (and a
    copy of each, for the softmax's contiguous input), context, the intermediate activation
    twice (the product and its GELU), the output and the residual sum. The numpy backend's
    GELU (``ops.gelu``: math.erf through np.frompyfunc) also holds an object array of Python
    floats, ~40 bytes an element, counted by tracemalloc."""
    H, I, A = config.hidden_size, config.intermediate_size, config.num_attention_heads
    hidden = B * T * H
    objects = 40 * B * T * I if backend == "numpy" else 0
    return itemsize * (8 * hidden + 4 * B * A * T * T + 2 * B * T * I) + objects


def returned_bytes(out):
    arrays = [out.last_hidden_state, out.pooler_output]
    arrays += list(out.hidden_states or ()) + list(out.attentions or ())
    return sum(a.nbytes for a in arrays if a is not None)


def peak_of_forward(model, ids, mask, **options):
    model(ids[:, :2], mask[:, :2], **options)  # compile / warm-up outside the measurement
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        out = model(ids, mask, **options)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return peak, out


# MiniLM-like scaled down (H=384, A=12, I=1536, L=6 as all-MiniLM-L6-v2; T=128, B=4: the
# attention probs of all layers, 6 x [4, 12, 128, 128] float32 = 18.9 MB, would be kept on
# top of a 3.1 MB hidden state), and bert-tiny's shape.
CASES = {
    "minilm-like": (BertConfig(vocab_size=1000, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                               intermediate_size=1536, max_position_embeddings=128), 4, 128),
    "bert-tiny": (BertConfig(vocab_size=1000, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=512, max_position_embeddings=128), 2, 64),
}


@pytest.mark.parametrize(("case", "backend"),
                         [("minilm-like", "numba"), ("bert-tiny", "numba"), ("bert-tiny", "numpy")])
def test_forward_holds_only_what_it_returns(case, backend):  # numpy-backend MiniLM: ~13 s, the depth test covers it
    config, B, T = CASES[case]
    model = seeded_model(config, "float32", backend)
    rng = np.random.default_rng(1)
    ids, mask = rng.integers(0, 1000, size=(B, T)), np.ones((B, T), np.int64)
    peak, out = peak_of_forward(model, ids, mask)
    bound = returned_bytes(out) + layer_working_set(config, B, T, 4, backend)
    assert peak <= bound, f"peak {peak / 1e6:.1f} MB > bound {bound / 1e6:.1f} MB"


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_peak_memory_does_not_grow_with_depth(backend):
    """The MiniLM-like case with 2 and with 6 layers: the same peak (measured equal to 1 kB
    here), where keeping each layer's attention probs (3.1 MB a layer) would add 12.6 MB."""
    config, B, T = CASES["minilm-like"]
    rng = np.random.default_rng(1)
    ids, mask = rng.integers(0, 1000, size=(B, T)), np.ones((B, T), np.int64)
    peaks = {}
    for layers in (2, 6):
        model = seeded_model(dataclasses.replace(config, num_hidden_layers=layers), "float32", backend)
        peaks[layers], _ = peak_of_forward(model, ids, mask)
    probs_of_one_layer = B * config.num_attention_heads * T * T * 4
    assert peaks[6] - peaks[2] < probs_of_one_layer / 4, f"peak {peaks}: grows with depth"


def test_output_attentions_is_counted_in_what_is_returned():
    """With output_attentions=True the probs are returned, so held: the peak grows by the
    probs of the layers before the last two (those two are in the working set either way),
    and stays within the bound that counts them."""
    config, B, T = CASES["minilm-like"]
    model = seeded_model(config, "float32", "numba")
    rng = np.random.default_rng(1)
    ids, mask = rng.integers(0, 1000, size=(B, T)), np.ones((B, T), np.int64)
    peak_without, _ = peak_of_forward(model, ids, mask)
    peak_with, out = peak_of_forward(model, ids, mask, output_attentions=True)
    probs = sum(a.nbytes for a in out.attentions)
    assert peak_with >= peak_without + 0.5 * probs  # measured: + 4/6 of them
    assert peak_with <= returned_bytes(out) + layer_working_set(config, B, T, 4, "numba")
