"""The task heads (masked-LM, next-sentence, classification), sentence embeddings and the CLI
verbs fill-mask / classify / similarity, against transformers.

Seeded random BertForMaskedLM / BertForPreTraining / BertForSequenceClassification models of the
four preset shapes go through our converter; their logits, encoder outputs and every head step
(tapped by its transformers module name, captured in PyTorch by a forward hook on the module of
that name) are compared with helpers.assert_close. Sentence embeddings are checked on the real
all-MiniLM-L6-v2.
"""

import json
import shutil

import h5py
import numpy as np
import pytest

import minibert
from minibert import HeadError, InputError, WeightsError, fast
from minibert.cli import main
from minibert.convert import read_safetensors
from minibert.errors import ConversionError
from minibert.tokenizer import Tokenizer

from helpers import MNLI, PRESETS, assert_close, assert_model_outputs_close, padded_batch

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

DTYPES = ["float32", "float64"]
MLM_STEPS = [
    "cls.predictions.transform.dense",
    "cls.predictions.transform.transform_act_fn",
    "cls.predictions.transform.LayerNorm",
    "cls.predictions",
]
SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A monkey is playing drums, loudly, in the park!",
]


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def small_batch(seed):
    """Random ids [3, 12] with padding and two segments (smaller than test_parity's: the heads
    are what is new here, and the full-vocabulary logits are [B, T, 30522])."""
    return padded_batch(np.random.default_rng(seed), 30522, lengths=(12, 5, 1), T=12)


def recorder():
    """A tap that records every named step (what minibert.trace does, in three lines)."""
    values = {}

    def tap(name, value):
        values[name] = value
        return value

    return tap, values


def torch_run(model, dtype, ids, mask, types, steps):
    """Run a transformers BertFor* model and its encoder; capture the outputs of the head modules
    named in ``steps`` with forward hooks. Returns (head output, encoder output, {step: tensor})."""
    model = model.double() if dtype == "float64" else model.float()
    modules = dict(model.named_modules())
    captured = {}
    hooks = [
        modules[name].register_forward_hook(lambda m, i, o, name=name: captured.__setitem__(name, o)) for name in steps
    ]
    kwargs = dict(
        input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask), token_type_ids=torch.as_tensor(types)
    )
    try:
        with torch.inference_mode():
            out = model(**kwargs, output_hidden_states=True, output_attentions=True)
            enc = model.bert(**kwargs, output_hidden_states=True, output_attentions=True)
    finally:
        for h in hooks:
            h.remove()
    return out, enc, captured


def assert_steps_close(label, tapped, captured, dtype):
    for name, ref in captured.items():
        assert name in tapped, f"{label}: minibert has no tap point {name}"
        assert_close(label, name, tapped[name], ref, dtype)


def with_vocab(h5_source_dir, vocab_dir, dest):
    """A copy of an HF model directory with a vocab.txt added, converted: a file the CLI can tokenize for."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(h5_source_dir / name, dest / name)
    shutil.copy(vocab_dir / "vocab.txt", dest / "vocab.txt")
    return minibert.convert(dest, dest / "model.h5")


def save_safetensors(tensors, path):
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata={"format": "pt"})


# ---------------------------------------------------------------------------------------
# Parity of each head with transformers, four preset shapes, float32 and float64
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("preset", PRESETS[:2])
def test_masked_lm_parity(preset, dtype, preset_model):
    """BertForMaskedLM: no pooler, tied decoder left out of the checkpoint. Two shapes only, to
    save CI time: the same head math runs on all four shapes in the BertForPreTraining test."""
    torch_model, _, h5 = preset_model(preset, "BertForMaskedLM")
    model = minibert.load(h5, dtype=dtype, head="masked-lm")
    ids, mask, types = small_batch(1)
    tap, tapped = recorder()
    ours = model(ids, mask, types, output_hidden_states=True, output_attentions=True, tap=tap)
    ref, ref_enc, captured = torch_run(torch_model, dtype, ids, mask, types, MLM_STEPS)
    label = f"{preset} MaskedLM [3,12]"
    assert ours.logits.shape == (3, 12, 30522)
    assert_close(label, "logits", ours.logits, ref.logits, dtype)
    assert ours.pooler_output is None  # BertForMaskedLM has no pooling layer
    assert_close(label, "last_hidden_state", ours.last_hidden_state, ref_enc.last_hidden_state, dtype)
    for i, (a, b) in enumerate(zip(ours.hidden_states, ref.hidden_states, strict=True)):
        assert_close(label, f"hidden_states[{i}]", a, b, dtype)
    for i, (a, b) in enumerate(zip(ours.attentions, ref.attentions, strict=True)):
        assert_close(label, f"attentions[{i}]", a, b, dtype)
    assert set(captured) == set(MLM_STEPS)
    assert_steps_close(label, tapped, captured, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("preset", PRESETS)
def test_pretraining_parity_both_heads(preset, dtype, preset_model):
    """A BertForPreTraining checkpoint holds the masked-LM and the next-sentence head."""
    torch_model, _, h5 = preset_model(preset, "BertForPreTraining")
    ids, mask, types = small_batch(2)
    ref, ref_enc, captured = torch_run(torch_model, dtype, ids, mask, types, MLM_STEPS + ["cls.seq_relationship"])
    label = f"{preset} PreTraining [3,12]"

    mlm = minibert.load(h5, dtype=dtype, head="masked-lm")
    tap, tapped = recorder()
    ours = mlm(ids, mask, types, output_hidden_states=True, output_attentions=True, tap=tap)
    assert_close(label, "prediction_logits", ours.logits, ref.prediction_logits, dtype)
    assert_model_outputs_close(label, ours, ref_enc, dtype)  # the pooler is there this time

    nsp = minibert.load(h5, dtype=dtype, head="next-sentence")
    assert nsp.bert.heads == ["masked-lm", "next-sentence"]
    ours = nsp(ids, mask, types, tap=tap)
    assert ours.logits.shape == (3, 2)
    assert_close(label, "seq_relationship_logits", ours.logits, ref.seq_relationship_logits, dtype)
    assert_steps_close(label, tapped, captured, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("preset", PRESETS)
def test_sequence_classification_parity(preset, dtype, preset_model):
    torch_model, _, h5 = preset_model(preset, "BertForSequenceClassification", **MNLI)
    model = minibert.load(h5, dtype=dtype, head="classification")
    assert model.id2label == MNLI["id2label"]
    ids, mask, types = small_batch(3)
    tap, tapped = recorder()
    ours = model(ids, mask, types, output_hidden_states=True, output_attentions=True, tap=tap)
    ref, ref_enc, captured = torch_run(torch_model, dtype, ids, mask, types, ["classifier"])
    label = f"{preset} SequenceClassification [3,12]"
    assert ours.logits.shape == (3, 3)
    assert_close(label, "logits", ours.logits, ref.logits, dtype)
    assert_model_outputs_close(label, ours, ref_enc, dtype)
    assert_steps_close(label, tapped, captured, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_next_sentence_prediction_checkpoint(dtype, preset_model):
    """A BertForNextSentencePrediction checkpoint: the next-sentence head alone."""
    torch_model, _, h5 = preset_model("bert-tiny", "BertForNextSentencePrediction")
    model = minibert.load(h5, dtype=dtype, head="next-sentence")
    assert model.bert.heads == ["next-sentence"]
    ids, mask, types = small_batch(4)
    ref, _, _ = torch_run(torch_model, dtype, ids, mask, types, [])
    assert_close("bert-tiny NextSentencePrediction [3,12]", "logits", model(ids, mask, types).logits, ref.logits, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_lm_positions_equal_full_logits(dtype, preset_model):
    """Logits at chosen positions only ([N, V]) are the full logits' rows, in argwhere order."""
    torch_model, _, h5 = preset_model("bert-mini", "BertForMaskedLM")
    model = minibert.load(h5, dtype=dtype, head="masked-lm")
    ids, mask, types = small_batch(5)
    positions = np.zeros(ids.shape, bool)
    positions[0, [3, 10]] = positions[1, 0] = positions[1, 4] = positions[2, 0] = True
    tap, tapped = recorder()
    chosen = model(ids, mask, types, positions=positions, tap=tap).logits
    full = model(ids, mask, types).logits
    ref, _, _ = torch_run(torch_model, dtype, ids, mask, types, [])
    rows = tuple(np.argwhere(positions).T)
    assert chosen.shape == (5, 30522)
    assert tapped["cls.predictions"].shape == (5, 30522)
    assert_close("bert-mini MaskedLM positions", "logits[positions] vs ours full", chosen, full[rows], dtype)
    assert_close("bert-mini MaskedLM positions", "logits[positions]", chosen, ref.logits.numpy()[rows], dtype)


def test_masked_lm_positions_must_be_a_boolean_mask(preset_model):
    _, _, h5 = preset_model("bert-tiny", "BertForMaskedLM")
    model = minibert.load(h5, head="masked-lm")
    ids = np.array([[101, 2000, 103, 102]])
    with pytest.raises(InputError, match="positions has dtype int64 and shape \\(2,\\)"):
        model(ids, positions=np.array([0, 2]))
    one = model(ids[0], positions=ids[0] == 103)  # a single sequence and its 1-D mask
    assert one.logits.shape == (1, 30522)


# ---------------------------------------------------------------------------------------
# The converter: tied decoder, old-style names, shapes, heads recorded
# ---------------------------------------------------------------------------------------


def test_converted_masked_lm_file(preset_model):
    """transformers leaves the tied decoder out of model.safetensors; the .h5 follows suit."""
    _, hf_dir, h5 = preset_model("bert-tiny", "BertForMaskedLM")
    saved = read_safetensors(hf_dir / "model.safetensors")
    assert "cls.predictions.decoder.weight" not in saved and "cls.predictions.bias" in saved
    w = minibert.weights.load(h5)
    assert w.heads == ["masked-lm"]
    assert w.config.id2label == {}  # labels mean nothing without a classification head
    assert "cls.predictions.decoder.weight" not in w.tensors and "pooler.dense.weight" not in w.tensors
    model = minibert.load(h5, head="masked-lm")
    assert model.decoder_weight is model.weights["embeddings.word_embeddings.weight"]  # tied


def test_stored_tied_copies_are_dropped_and_decoder_bias_renamed(preset_model, tmp_path):
    """Older checkpoints store the tied decoder weight, and sometimes only decoder.bias."""
    torch_model, hf_dir, _ = preset_model("bert-tiny", "BertForMaskedLM")
    tensors = read_safetensors(hf_dir / "model.safetensors")
    tensors["cls.predictions.decoder.weight"] = tensors["bert.embeddings.word_embeddings.weight"]
    tensors["cls.predictions.decoder.bias"] = tensors.pop("cls.predictions.bias")
    shutil.copy(hf_dir / "config.json", tmp_path / "config.json")
    save_safetensors(tensors, tmp_path / "model.safetensors")
    w = minibert.weights.load(minibert.convert(tmp_path, tmp_path / "model.h5"))
    assert "cls.predictions.decoder.weight" not in w.tensors and "cls.predictions.decoder.bias" not in w.tensors
    np.testing.assert_array_equal(w.tensors["cls.predictions.bias"], tensors["cls.predictions.decoder.bias"])
    ids, mask, types = small_batch(6)
    ours = minibert.load(tmp_path / "model.h5", head="masked-lm")(ids, mask, types)
    ref, _, _ = torch_run(torch_model, "float32", ids, mask, types, [])
    assert_close("bert-tiny MaskedLM old names", "logits", ours.logits, ref.logits, "float32")


def test_untied_decoder_is_kept_and_used_as_transformers_does(preset_model, tmp_path):
    """A decoder weight/bias that differ from their tie source: transformers 5 loads them
    untied; so does minibert."""
    from transformers import BertForMaskedLM

    _, hf_dir, _ = preset_model("bert-tiny", "BertForMaskedLM")
    tensors = read_safetensors(hf_dir / "model.safetensors")
    rng = np.random.default_rng(7)
    V, H = tensors["bert.embeddings.word_embeddings.weight"].shape
    tensors["cls.predictions.decoder.weight"] = (0.05 * rng.standard_normal((V, H))).astype(np.float32)
    tensors["cls.predictions.decoder.bias"] = (0.1 * rng.standard_normal(V)).astype(np.float32)
    config = json.loads((hf_dir / "config.json").read_text())
    config["tie_word_embeddings"] = False
    (tmp_path / "config.json").write_text(json.dumps(config))
    save_safetensors(tensors, tmp_path / "model.safetensors")
    h5 = minibert.convert(tmp_path, tmp_path / "model.h5")
    model = minibert.load(h5, head="masked-lm")
    np.testing.assert_array_equal(model.decoder_weight, tensors["cls.predictions.decoder.weight"])
    torch_model = BertForMaskedLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    ids, mask, types = small_batch(7)
    ref, _, _ = torch_run(torch_model, "float32", ids, mask, types, [])
    assert_close("bert-tiny MaskedLM untied", "logits", model(ids, mask, types).logits, ref.logits, "float32")


def test_untied_config_without_decoder_weight_is_a_conversion_error(preset_model, tmp_path):
    _, hf_dir, _ = preset_model("bert-tiny", "BertForMaskedLM")
    config = json.loads((hf_dir / "config.json").read_text())
    config["tie_word_embeddings"] = False
    (tmp_path / "config.json").write_text(json.dumps(config))
    shutil.copy(hf_dir / "model.safetensors", tmp_path / "model.safetensors")
    with pytest.raises(
        ConversionError, match="tie_word_embeddings=false but the checkpoint has no cls.predictions.decoder.weight"
    ):
        minibert.convert(tmp_path, tmp_path / "model.h5")


def test_misshaped_head_tensor_is_a_conversion_error(preset_model, tmp_path):
    _, hf_dir, _ = preset_model("bert-tiny", "BertForSequenceClassification", **MNLI)
    tensors = read_safetensors(hf_dir / "model.safetensors")
    tensors["classifier.weight"] = tensors["classifier.weight"][:, :100]
    shutil.copy(hf_dir / "config.json", tmp_path / "config.json")
    save_safetensors(tensors, tmp_path / "model.safetensors")
    with pytest.raises(
        ConversionError, match=r"classifier.weight of the classification head has shape \(3, 100\), expected \(3, 128\)"
    ):
        minibert.convert(tmp_path, tmp_path / "model.h5")


def test_file_missing_a_listed_head_tensor_is_a_weights_error(preset_model, tmp_path):
    _, _, h5 = preset_model("bert-tiny", "BertForPreTraining")
    shutil.copy(h5, tmp_path / "broken.h5")
    with h5py.File(tmp_path / "broken.h5", "a") as f:
        del f["weights/cls.seq_relationship.bias"]
    with pytest.raises(WeightsError, match="cls.seq_relationship.bias of the next-sentence head is missing"):
        minibert.load(tmp_path / "broken.h5")


def test_missing_head_names_the_heads_the_file_has(preset_model, minilm_h5):
    _, _, h5 = preset_model("bert-tiny", "BertForSequenceClassification", **MNLI)
    with pytest.raises(HeadError, match="holds no masked-lm head; the heads it holds: classification"):
        minibert.load(h5, head="masked-lm")
    with pytest.raises(HeadError, match=r"holds no next-sentence head; the heads it holds: none \(encoder only\)"):
        minibert.load(minilm_h5, head="next-sentence")
    with pytest.raises(HeadError, match="unknown head 'mlm'"):
        minibert.load(minilm_h5, head="mlm")


# ---------------------------------------------------------------------------------------
# Sentence embeddings on the real all-MiniLM-L6-v2
# ---------------------------------------------------------------------------------------


def torch_sentence_embeddings(model, encoding, dtype):
    """sentence-transformers' recipe for all-MiniLM-L6-v2, in PyTorch: mean pooling, normalize."""
    model = model.double() if dtype == "float64" else model.float()
    ids, mask = torch.as_tensor(encoding["input_ids"]), torch.as_tensor(encoding["attention_mask"])
    with torch.inference_mode():
        h = model(
            input_ids=ids, attention_mask=mask, token_type_ids=torch.as_tensor(encoding["token_type_ids"])
        ).last_hidden_state
        m = mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / torch.clamp(m.sum(1), min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1).numpy()


@pytest.mark.parametrize("dtype", DTYPES)
def test_minilm_sentence_embeddings_and_cosine(dtype, minilm_h5, minilm_torch):
    model = minibert.load(minilm_h5, dtype=dtype)
    enc = Tokenizer.from_file(minilm_h5).encode_batch(SENTENCES)  # padded: the mask matters
    assert (enc["attention_mask"] == 0).any()
    ours = minibert.heads.sentence_embeddings(model, enc)
    ref = torch_sentence_embeddings(minilm_torch, enc, dtype)
    assert_close("MiniLM-L6 sentence embeddings", "embeddings", ours, ref, dtype)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, rtol=0, atol=1e-6 if dtype == "float32" else 1e-14)
    assert_close("MiniLM-L6 sentence embeddings", "cosine matrix", ours @ ours.T, ref @ ref.T, dtype)


def test_mean_pooling_ignores_padding():
    h = np.arange(2 * 3 * 2, dtype=np.float64).reshape(2, 3, 2)  # [B=2, T=3, H=2]
    mask = np.array([[1, 1, 0], [1, 1, 1]])
    np.testing.assert_array_equal(minibert.mean_pooling(h, mask), [[1.0, 2.0], [8.0, 9.0]])
    np.testing.assert_array_equal(minibert.l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]])), [[0.6, 0.8], [0.0, 0.0]])


# ---------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------


def run_cli(capsys, *argv):
    code = main(list(map(str, argv)))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def mlm_with_vocab(preset_model, minilm_dir, tmp_path_factory):
    torch_model, hf_dir, _ = preset_model("bert-mini", "BertForMaskedLM")
    return torch_model, with_vocab(hf_dir, minilm_dir, tmp_path_factory.mktemp("mlm-vocab"))


@pytest.fixture(scope="module")
def classifier_with_vocab(preset_model, minilm_dir, tmp_path_factory):
    torch_model, hf_dir, _ = preset_model("bert-mini", "BertForSequenceClassification", **MNLI)
    return torch_model, with_vocab(hf_dir, minilm_dir, tmp_path_factory.mktemp("cls-vocab"))


def test_cli_fill_mask_top_k_matches_transformers(capsys, mlm_with_vocab):
    torch_model, h5 = mlm_with_vocab
    text = "The capital of France is [MASK], and of Italy [MASK]."
    code, out, err = run_cli(capsys, "fill-mask", h5, text, "--top-k", 3)
    assert code == 0, err
    tok = Tokenizer.from_file(h5)
    ids = torch.tensor([tok.encode(text)["input_ids"]])
    with torch.inference_mode():
        probs = torch.softmax(
            torch_model.float()(input_ids=ids).logits[ids == tok.mask_token_id].double(), -1
        )  # [2, V]
    top = torch.topk(probs, 3)
    expected = []
    for i in range(2):
        expected.append(f"[MASK] {i + 1}:")
        expected += [
            f"  {p:8.4f}  {tok.convert_ids_to_tokens(int(t))}"
            for p, t in zip(top.values[i].tolist(), top.indices[i].tolist())
        ]
    assert out.splitlines() == expected


def test_cli_fill_mask_without_mask_is_an_error(capsys, mlm_with_vocab):
    code, out, err = run_cli(capsys, "fill-mask", mlm_with_vocab[1], "The capital of France is Paris.")
    assert code == 1 and out == ""
    assert "error: the text has no [MASK] token" in err and "fix: write [MASK]" in err


def test_cli_fill_mask_on_encoder_only_file_lists_heads(capsys, minilm_h5):
    code, _, err = run_cli(capsys, "fill-mask", minilm_h5, "Paris is the [MASK] of France.")
    assert code == 1
    assert "holds no masked-lm head; the heads it holds: none (encoder only)" in err


def test_cli_classify_pair_matches_transformers(capsys, classifier_with_vocab):
    torch_model, h5 = classifier_with_vocab
    premise, hypothesis = "A soccer game with multiple males playing.", "Some men are playing a sport."
    code, out, err = run_cli(capsys, "classify", h5, premise, "--pair", hypothesis)
    assert code == 0, err
    enc = Tokenizer.from_file(h5).encode(premise, hypothesis)
    assert 1 in enc["token_type_ids"]  # the pair is really two segments
    with torch.inference_mode():
        logits = torch_model.float()(**{k: torch.tensor([v]) for k, v in enc.items()}).logits
    probs = torch.softmax(logits.double(), -1)[0].tolist()
    ranked = sorted(zip(MNLI["id2label"].values(), probs), key=lambda item: -item[1])
    assert out.splitlines() == [f"{label:<13}  {p:.4f}" for label, p in ranked]


@pytest.mark.parametrize("dtype", DTYPES)
def test_cli_similarity_on_minilm(dtype, capsys, minilm_h5, minilm_torch):
    a, b = SENTENCES[0], SENTENCES[1]
    code, out, err = run_cli(capsys, "similarity", minilm_h5, a, b, "--dtype", dtype)
    assert code == 0, err
    ref = torch_sentence_embeddings(minilm_torch, Tokenizer.from_file(minilm_h5).encode_batch([a, b]), dtype)
    assert out == f"cosine similarity: {float(ref[0] @ ref[1]):.4f}\n"


def test_cli_classify_single_label_is_a_sigmoid(capsys, preset_model, minilm_dir, tmp_path):
    """One label (e.g. a score): softmax would always say 1.0; the sigmoid, as the pipeline does."""
    torch_model, hf_dir, _ = preset_model("bert-tiny", "BertForSequenceClassification", num_labels=1)
    h5 = with_vocab(hf_dir, minilm_dir, tmp_path)
    code, out, err = run_cli(capsys, "classify", h5, "A man is eating food.")
    assert code == 0, err
    enc = Tokenizer.from_file(h5).encode("A man is eating food.")
    with torch.inference_mode():
        logit = torch_model.float()(**{k: torch.tensor([v]) for k, v in enc.items()}).logits.double()
    assert out == f"LABEL_0  {torch.sigmoid(logit).item():.4f}\n"


def test_head_model_trace_records_encoder_and_head_steps(preset_model):
    _, _, h5 = preset_model("bert-tiny", "BertForPreTraining")
    model = minibert.load(h5, head="masked-lm")
    ids, mask, types = small_batch(8)
    t = model.trace(ids, mask, types)
    assert "encoder.layer.1.output.LayerNorm" in t and list(t)[-4:] == MLM_STEPS
    np.testing.assert_array_equal(t["cls.predictions"], t.output.logits)
    # A trace runs the step path; model(...) the fast path (minibert.fast), equal to rounding.
    fast_logits = model(ids, mask, types).logits
    scale = max(1.0, float(np.abs(t.output.logits).max()))
    assert float(np.abs(fast_logits - t.output.logits).max()) <= fast.FLOAT32_BOUND * scale
    model.use_fast_path = False
    np.testing.assert_array_equal(t.output.logits, model(ids, mask, types).logits)  # the same steps: the same bits
