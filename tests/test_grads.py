"""Gradients by hand (``minibert.train.value_and_grad``) against torch.autograd, every parameter.

Seeded random BertForPreTraining / BertForSequenceClassification models of the four preset
shapes and the real all-MiniLM-L6-v2 (with seeded random heads attached), converted by our
converter; each head; float32 and float64. The batches have padding, a two-segment pair,
repeated token ids (within and across rows, and [PAD], whose word-embedding row gets no
gradient from the lookup) and, where B = 3, a fully masked row. PyTorch's side is the
transformers ``BertFor*`` model built from the same .h5 (``minibert.reference.torch_model``)
in eval mode, its ``outputs.loss.backward()``.

Tolerances (tests/grad_parity.py), per parameter: float64 1e-10 x max(1, max|ref|), float32
1e-5 x max(1, max|ref|) (tightened from the issue's 1e-4: the worst measured is 3.7e-6); the
worst are printed at the end of the run.
"""

import numpy as np
import pytest

import minibert
from minibert import HeadError, InputError, reference, train
from minibert.config import SUPPORTED_ACTIVATIONS

from grad_parity import assert_close_scaled, assert_grads_close, torch_grads
from helpers import MNLI, PRESETS, padded_batch, randomize_

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

DTYPES = ["float32", "float64"]
# test head -> (minibert head, transformers class of the converted checkpoint, its config overrides)
HEAD_FILES = {
    "classification": ("classification", "BertForSequenceClassification", MNLI),
    "regression": ("classification", "BertForSequenceClassification", dict(num_labels=1)),
    "masked-lm": ("masked-lm", "BertForPreTraining", {}),  # a file with a pooler the masked-LM model leaves out
    "masked-lm (BertForMaskedLM file)": ("masked-lm", "BertForMaskedLM", {}),
    "next-sentence": ("next-sentence", "BertForPreTraining", {}),
    "pretraining": ("pretraining", "BertForPreTraining", {}),
}


# ---------------------------------------------------------------------------------------
# Inputs and labels
# ---------------------------------------------------------------------------------------


def grad_batch(seed, vocab_size, B=3, T=10):
    """A padded pair batch with repeated ids; with B = 3 its last row is fully masked ([PAD] only)."""
    lengths = (T, 6, 0)[:B]
    ids, mask, types = padded_batch(np.random.default_rng(seed), vocab_size, lengths=lengths, T=T)
    ids[1, 1:4] = ids[1, 1]  # the same id three times in a row
    ids[0, 5] = ids[1, 1]  # and once in another row
    return ids, mask, types


def make_labels(head, ids, seed, num_labels=3, vocab_size=30522):
    """Labels as transformers takes them; masked-LM labels are -100 except a few positions
    (one of them a repeated id, one a padding position, which a loss may still ask about)."""
    rng = np.random.default_rng(seed)
    B, T = ids.shape
    if head in ("classification",):
        return rng.integers(0, num_labels, size=B), None
    if head == "regression":
        return rng.standard_normal(B).astype(np.float32), None
    if head == "next-sentence":
        return rng.integers(0, 2, size=B), None
    labels = np.full((B, T), -100)
    labels[0, [1, 5, T - 1]] = rng.integers(0, vocab_size, size=3)
    labels[1, [2, 8]] = rng.integers(0, vocab_size, size=2)
    nsl = rng.integers(0, 2, size=B) if head == "pretraining" else None
    return labels, nsl


def torch_value_and_grad(h5, head, dtype, ids, mask, types, labels, next_sentence_label=None):
    """transformers' loss and every parameter's gradient, for the model of ``head`` built from the .h5."""
    model = reference.torch_model(h5, dtype, head=head)
    kwargs = dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), token_type_ids=torch.tensor(types),
                  labels=torch.tensor(labels))
    if next_sentence_label is not None:
        kwargs["next_sentence_label"] = torch.tensor(next_sentence_label)
    loss = model(**kwargs).loss
    loss.backward()
    return loss.item(), torch_grads(model)


def check_against_torch(label, h5, head, dtype, ids, mask, types, labels, nsl=None, backend="numba"):
    model = minibert.load(h5, dtype=dtype, head=head, backend=backend)
    loss, grads = train.value_and_grad(model, ids, mask, types, labels=labels, next_sentence_label=nsl)
    ref_loss, ref_grads = torch_value_and_grad(h5, head, dtype, ids, mask, types, labels, nsl)
    assert isinstance(loss, float)
    assert_close_scaled(label, "loss", np.array(loss, dtype=dtype), np.array(ref_loss), dtype)
    for name, g in grads.items():
        assert g.shape == model.weights[name].shape and g.dtype == model.weights[name].dtype, name
    return assert_grads_close(label, grads, ref_grads, dtype)


# ---------------------------------------------------------------------------------------
# Every parameter, every preset shape, every head, both dtypes
# ---------------------------------------------------------------------------------------

# The pretraining head runs every part (encoder, pooler, masked-LM transform and tied decoder,
# next-sentence): on all four shapes. The other heads on the two smaller ones (test-time budget).
CASES = [(preset, "pretraining") for preset in PRESETS]
CASES += [(preset, head) for preset in PRESETS[:2] for head in ("classification", "masked-lm", "next-sentence")]
CASES += [("bert-tiny", "regression"), ("bert-tiny", "masked-lm (BertForMaskedLM file)")]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("preset, case", CASES)
def test_gradients_match_autograd(preset, case, dtype, preset_model):
    head, model_class, overrides = HEAD_FILES[case]
    _, _, h5 = preset_model(preset, model_class, **overrides)
    B, T = (2, 12) if preset == "bert-medium" else (3, 10)
    ids, mask, types = grad_batch(1, 30522, B, T)
    labels, nsl = make_labels(case, ids, seed=2)
    check_against_torch(f"{preset} {case} [{B},{T}]", h5, head, dtype, ids, mask, types, labels, nsl)


@pytest.mark.parametrize("act", sorted(SUPPORTED_ACTIVATIONS))
def test_every_activation_matches_autograd(act, preset_model):
    """config.hidden_act picks the feed-forward and masked-LM transform activation; its backward
    is found by name (``<act>_backward``). bert-tiny's shape with a 1000-token vocabulary,
    pretraining heads, float64."""
    _, _, h5 = preset_model("bert-tiny", "BertForPreTraining", hidden_act=act, vocab_size=1000)
    ids, mask, types = grad_batch(14, 1000, B=2, T=10)
    labels, nsl = make_labels("pretraining", ids, seed=15, vocab_size=1000)
    check_against_torch(f"bert-tiny pretraining hidden_act={act} [2,10]", h5, "pretraining", "float64",
                        ids, mask, types, labels, nsl)


@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_lm_one_label(dtype, preset_model):
    """Every label -100 but one: the mean is over one token."""
    _, _, h5 = preset_model("bert-tiny", "BertForPreTraining")
    ids, mask, types = grad_batch(3, 30522)
    labels = np.full(ids.shape, -100)
    labels[1, 3] = ids[1, 3]  # the repeated id
    check_against_torch("bert-tiny masked-lm one label [3,10]", h5, "masked-lm", dtype, ids, mask, types, labels)


def test_numpy_backend_gradients_match_too(preset_model):
    """The default backend is numba; the readable NumPy reference gives the same gradients."""
    _, _, h5 = preset_model("bert-tiny", "BertForSequenceClassification", **MNLI)
    ids, mask, types = grad_batch(4, 30522)
    labels, _ = make_labels("classification", ids, seed=5)
    check_against_torch("bert-tiny classification numpy backend [3,10]", h5, "classification", "float64",
                        ids, mask, types, labels, backend="numpy")


# ---------------------------------------------------------------------------------------
# The real all-MiniLM-L6-v2, with seeded random heads
# ---------------------------------------------------------------------------------------


class HeadOnly:
    """A model seen through its head parameters only (those not under ``bert.``), for randomize_."""

    def __init__(self, model):
        self.model = model

    def named_parameters(self):
        return [(n, p) for n, p in self.model.named_parameters() if not n.startswith("bert.")]


@pytest.fixture(scope="module")
def minilm_with_heads(minilm_dir, tmp_path_factory):
    """all-MiniLM-L6-v2's encoder under a classification head and under BertForPreTraining's
    heads (MiniLM ships none: seeded random ones, of realistic scale), converted."""
    import transformers

    files = {}
    for head, model_class, overrides in (("classification", "BertForSequenceClassification", MNLI),
                                         ("pretraining", "BertForPreTraining", {})):
        torch.manual_seed(0)
        model = getattr(transformers, model_class).from_pretrained(minilm_dir, attn_implementation="eager", **overrides)
        randomize_(HeadOnly(model), seed=1)
        directory = tmp_path_factory.mktemp("minilm-" + head)
        model.save_pretrained(directory)
        files[head] = minibert.convert(directory, directory / "model.h5")
    return files


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head", ["classification", "pretraining"])
def test_minilm_gradients_match_autograd(head, dtype, minilm_with_heads):
    ids, mask, types = grad_batch(6, 30522, B=2, T=12)
    labels, nsl = make_labels(head, ids, seed=7)
    h5 = minilm_with_heads[head]
    check_against_torch(f"all-MiniLM-L6-v2 {head} [2,12]", h5, head, dtype, ids, mask, types, labels, nsl)


# ---------------------------------------------------------------------------------------
# The API's promises and its errors
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_classifier(preset_model):
    _, _, h5 = preset_model("bert-tiny", "BertForSequenceClassification", **MNLI)
    return h5


def test_loss_equals_the_inference_path(tiny_classifier):
    """value_and_grad's forward is the model's: its loss is model.loss(model(...)) exactly."""
    model = minibert.load(tiny_classifier, dtype="float32", head="classification")
    ids, mask, types = grad_batch(8, 30522)
    labels, _ = make_labels("classification", ids, seed=9)
    loss, _ = train.value_and_grad(model, ids, mask, types, labels=labels)
    assert loss == model.loss(model(ids, mask, types), labels)


def test_dropout(tiny_classifier):
    """rng=None: no dropout, deterministic. A Generator: the config's dropout, the same masks
    for the same seed, a different loss; with every probability set to 0 it is the identity."""
    model = minibert.load(tiny_classifier, dtype="float64", head="classification")
    ids, mask, types = grad_batch(10, 30522)
    labels, _ = make_labels("classification", ids, seed=11)
    plain, plain_grads = train.value_and_grad(model, ids, mask, types, labels=labels)
    again, _ = train.value_and_grad(model, ids, mask, types, labels=labels, rng=None)
    a, a_grads = train.value_and_grad(model, ids, mask, types, labels=labels, rng=np.random.default_rng(0))
    b, b_grads = train.value_and_grad(model, ids, mask, types, labels=labels, rng=np.random.default_rng(0))
    c, _ = train.value_and_grad(model, ids, mask, types, labels=labels, rng=np.random.default_rng(1))
    assert plain == again and a == b and a != plain and c != a
    assert all(np.array_equal(a_grads[n], b_grads[n]) for n in a_grads)
    model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = 0.0
    zero, zero_grads = train.value_and_grad(model, ids, mask, types, labels=labels, rng=np.random.default_rng(0))
    assert zero == plain and all(np.array_equal(zero_grads[n], plain_grads[n]) for n in zero_grads)


def test_dropout_mask_keeps_one_minus_p_and_rescales():
    rng = np.random.default_rng(0)
    mask = minibert.ops.dropout_mask(rng, (1000, 1000), 0.1, np.dtype(np.float32))
    assert mask.dtype == np.float32 and set(np.unique(mask)) == {np.float32(0), np.float32(1 / 0.9)}
    assert abs((mask > 0).mean() - 0.9) < 0.002 and abs(mask.mean() - 1.0) < 0.003


def test_errors(tiny_classifier, preset_model):
    model = minibert.load(tiny_classifier, head="classification")
    ids, mask, types = grad_batch(12, 30522)
    with pytest.raises(InputError, match="needs a model with a task head"):
        train.value_and_grad(minibert.load(tiny_classifier), ids, labels=np.zeros(3, int))
    with pytest.raises(InputError, match="needs labels"):
        train.value_and_grad(model, ids, mask)
    with pytest.raises(InputError, match=r"labels has shape \(2,\), expected \(3,\)"):
        train.value_and_grad(model, ids, mask, labels=np.zeros(2, int))
    with pytest.raises(InputError, match=r"labels\[1\] = 3 is not a class id in \[0, 3\)"):
        train.value_and_grad(model, ids, mask, labels=np.array([0, 3, 1]))
    with pytest.raises(InputError, match="expected a numpy.random.Generator"):
        train.value_and_grad(model, ids, mask, labels=np.zeros(3, int), rng=0)
    with pytest.raises(InputError, match="next_sentence_label is for head='pretraining'"):
        train.value_and_grad(model, ids, mask, labels=np.zeros(3, int), next_sentence_label=np.zeros(3, int))
    _, _, h5 = preset_model("bert-tiny", "BertForPreTraining")
    mlm = minibert.load(h5, head="masked-lm")
    with pytest.raises(InputError, match="every entry of labels is -100"):
        train.value_and_grad(mlm, ids, mask, labels=np.full(ids.shape, -100))
    with pytest.raises(InputError, match="needs next_sentence_label"):
        train.value_and_grad(minibert.load(h5, head="pretraining"), ids, mask, labels=np.full(ids.shape, 5))
    _, _, mlm_only = preset_model("bert-tiny", "BertForMaskedLM")
    with pytest.raises(HeadError, match="holds no pretraining head"):
        minibert.load(mlm_only, head="pretraining")


def test_pretraining_head_outputs(preset_model):
    """head="pretraining": masked-LM logits and seq_relationship_logits, as BertForPreTraining."""
    _, _, h5 = preset_model("bert-tiny", "BertForPreTraining")
    model = minibert.load(h5, head="pretraining", dtype="float64")
    ids, mask, types = grad_batch(13, 30522)
    out = model(ids, mask, types)
    tm = reference.torch_model(h5, "float64", head="pretraining")
    with torch.no_grad():
        ref = tm(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), token_type_ids=torch.tensor(types))
    label = "bert-tiny pretraining outputs"
    assert_close_scaled(label, "prediction_logits", out.logits, ref.prediction_logits.numpy(), "float64")
    nsp = ref.seq_relationship_logits.numpy()
    assert_close_scaled(label, "seq_relationship_logits", out.seq_relationship_logits, nsp, "float64")
