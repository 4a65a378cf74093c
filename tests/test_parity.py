"""minibert against transformers' BertModel (eager attention), tensor by tensor.

Seeded random models of the four preset shapes go through our converter end to end; the real
all-MiniLM-L6-v2 checks pretrained weights. Every hidden state and attention map is compared.
"""

import numpy as np
import pytest

import minibert
from minibert import Tokenizer

from helpers import PRESETS, assert_close, assert_model_outputs_close, padded_batch

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

DTYPES = ["float32", "float64"]
BACKENDS = ["numpy", "numba"]  # the NumPy reference and the Numba kernels, same checks, same tolerances


def torch_forward(model, dtype, input_ids, attention_mask=None, token_type_ids=None):
    model = model.double() if dtype == "float64" else model.float()
    kwargs = {"input_ids": torch.as_tensor(input_ids)}
    if attention_mask is not None:
        kwargs["attention_mask"] = torch.as_tensor(attention_mask)
    if token_type_ids is not None:
        kwargs["token_type_ids"] = torch.as_tensor(token_type_ids)
    with torch.inference_mode():
        return model(**kwargs, output_hidden_states=True, output_attentions=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("preset", PRESETS)
def test_preset_padded_batch(preset, dtype, backend, preset_model):
    torch_model, _, h5 = preset_model(preset)
    label = f"{preset} padded [4,24] ({backend})"
    check_padded_batch(label, h5, torch_model, dtype, backend, seed=1, lengths=[24, 17, 5, 1], T=24)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_minilm_padded_batch(dtype, backend, minilm_h5, minilm_torch):
    label = f"MiniLM-L6 padded [4,40] ({backend})"
    check_padded_batch(label, minilm_h5, minilm_torch, dtype, backend, seed=2, lengths=[40, 33, 12, 2], T=40)


def check_padded_batch(label, h5, torch_model, dtype, backend, seed, lengths, T):
    """Rows of the given lengths padded to T: every output of minibert against PyTorch."""
    model = minibert.load(h5, dtype=dtype, backend=backend)
    ids, mask, types = padded_batch(np.random.default_rng(seed), model.config.vocab_size, lengths=lengths, T=T)
    ours = model(ids, mask, types, output_hidden_states=True, output_attentions=True)
    assert_model_outputs_close(label, ours, torch_forward(torch_model, dtype, ids, mask, types), dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T", [1, 512])
def test_minilm_sequence_length_extremes(T, dtype, backend, minilm_h5, minilm_torch):
    model = minibert.load(minilm_h5, dtype=dtype, backend=backend)
    ids = np.random.default_rng(T).integers(1000, 30000, size=(1, T))
    ours = model(ids, output_hidden_states=True, output_attentions=True)
    ref = torch_forward(minilm_torch, dtype, ids)
    assert_model_outputs_close(f"MiniLM-L6 T={T} ({backend})", ours, ref, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_fully_masked_row_matches_transformers(dtype, backend, minilm_h5, minilm_torch):
    """A row whose mask is all zeros: transformers gives uniform attention, not NaN; so must we."""
    model = minibert.load(minilm_h5, dtype=dtype, backend=backend)
    ids = np.random.default_rng(3).integers(1000, 30000, size=(2, 9))
    mask = np.ones_like(ids)
    mask[1] = 0
    ours = model(ids, mask, output_hidden_states=True, output_attentions=True)
    ref = torch_forward(minilm_torch, dtype, ids, mask)
    assert_model_outputs_close(f"MiniLM-L6 fully masked row ({backend})", ours, ref, dtype)
    for probs in ours.attentions:
        np.testing.assert_array_equal(probs[1], np.full((12, 9, 9), 1 / 9, dtype=dtype))


REAL_TEXTS = [
    "The capital of France is Paris.",
    "A man is playing a guitar on the street while people walk by.",
    "minibert checks every hidden state against PyTorch.",
    "Hello!",
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_padded_batch_equals_one_by_one_on_real_tokens(dtype, backend, minilm_h5, minilm_torch):
    """Padding must not change a sentence's result: batch rows equal the texts run alone."""
    tok = Tokenizer.from_file(minilm_h5)  # identical to BertTokenizerLegacy (tests/test_tokenizer.py)
    batch = tok.encode_batch(REAL_TEXTS, [REAL_TEXTS[-1]] * 3 + [REAL_TEXTS[0]])
    assert (batch["input_ids"] != tok.unk_token_id).all()  # real word pieces, not [UNK]
    model = minibert.load(minilm_h5, dtype=dtype, backend=backend)
    out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    ref = torch_forward(minilm_torch, dtype, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    assert_close(
        f"MiniLM-L6 real tokens batch ({backend})",
        "last_hidden_state",
        out.last_hidden_state,
        ref.last_hidden_state,
        dtype,
    )
    tol = 1e-5 if dtype == "float32" else 1e-10
    for b in range(len(REAL_TEXTS)):
        n = int(batch["attention_mask"][b].sum())
        alone = model(batch["input_ids"][b : b + 1, :n], None, batch["token_type_ids"][b : b + 1, :n])
        scale = max(1.0, np.abs(alone.last_hidden_state).max())
        np.testing.assert_allclose(out.last_hidden_state[b, :n], alone.last_hidden_state[0], rtol=0, atol=tol * scale)
        np.testing.assert_allclose(out.pooler_output[b], alone.pooler_output[0], rtol=0, atol=tol * scale)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float64_computes_in_float64_throughout(backend, minilm_h5):
    model = minibert.load(minilm_h5, dtype="float64", backend=backend)
    seen = []
    model(np.array([[101, 7592, 102]]), tap=lambda name, value: seen.append((name, value.dtype)) or value)
    assert seen and all(dt == np.float64 for _, dt in seen), [s for s in seen if s[1] != np.float64]
