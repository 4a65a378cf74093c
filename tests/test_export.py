"""minibert export: the Hugging Face directory loads in transformers' BertFor* with equal outputs."""

import json

import numpy as np
import pytest
from training_fixtures import tiny_model_file

import minibert
from minibert import weights
from minibert.cli import main
from minibert.errors import WeightsError
from minibert.export import export

CASES = [  # heads in the file, transformers class, minibert head, output compared
    ((), "BertModel", None, "last_hidden_state"),
    (("classification",), "BertForSequenceClassification", "classification", "logits"),
    (("masked-lm",), "BertForMaskedLM", "masked-lm", "logits"),
    (("masked-lm", "next-sentence"), "BertForPreTraining", "masked-lm", "logits"),
]


@pytest.mark.torch
@pytest.mark.parametrize("heads, arch, head, output", CASES)
def test_export_loads_in_transformers_with_equal_outputs(tmp_path, heads, arch, head, output):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")

    id2label = {0: "neg", 1: "pos", 2: "neutral"} if "classification" in heads else None
    h5 = tiny_model_file(tmp_path / "m.h5", heads, seed=3, id2label=id2label)
    out_dir = export(h5, tmp_path / "hf")
    config = json.loads((out_dir / "config.json").read_text())
    assert config["architectures"] == [arch]
    ref = getattr(transformers, arch).from_pretrained(out_dir, attn_implementation="eager").eval()
    if id2label:
        assert ref.config.id2label == id2label
    tok = minibert.Tokenizer.from_file(h5)
    assert [line for line in (out_dir / "vocab.txt").read_text().splitlines()] == [
        tok.ids_to_tokens[i] for i in range(tok.vocab_size)
    ]
    hf_tok = transformers.BertTokenizer(str(out_dir / "vocab.txt"))
    batch = tok.encode_batch(["the cat sat on the mat", "a dog"], ["is good", "ran"])
    assert (
        hf_tok(["the cat sat on the mat", "a dog"], ["is good", "ran"], padding=True)["input_ids"]
        == batch["input_ids"].tolist()
    )
    ours = minibert.load(h5, head=head).__call__(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    with torch.no_grad():
        theirs = ref(**{k: torch.from_numpy(v) for k, v in batch.items()})
    theirs = getattr(theirs, "prediction_logits", None) if arch == "BertForPreTraining" else theirs[output]
    mine = getattr(ours, output)
    err = float(np.abs(mine - theirs.numpy()).max())
    assert err <= 1e-5 * max(1.0, float(np.abs(theirs.numpy()).max())), err
    # and back: converting the export gives the same tensors
    again = weights.load(minibert.convert(out_dir, tmp_path / "again.h5"))
    original = weights.load(h5)
    assert sorted(again.tensors) == sorted(original.tensors) and again.heads == original.heads
    for name, t in original.tensors.items():
        np.testing.assert_array_equal(again.tensors[name], t)


def test_export_cli_and_errors(tmp_path, capsys):
    h5 = tiny_model_file(tmp_path / "m.h5", ("classification",), id2label={0: "a", 1: "b"})
    assert main(["export", str(h5), str(tmp_path / "out")]) == 0
    assert "model.safetensors" in capsys.readouterr().out
    from minibert.convert import read_safetensors

    tensors = read_safetensors(tmp_path / "out" / "model.safetensors")
    assert "bert.embeddings.word_embeddings.weight" in tensors and "classifier.weight" in tensors
    w = weights.load(h5)
    w.vocab = []
    weights.save(tmp_path / "novocab.h5", w)
    with pytest.raises(WeightsError, match="no vocabulary"):
        export(tmp_path / "novocab.h5", tmp_path / "out2")
    assert main(["export", str(tmp_path / "missing.h5"), str(tmp_path / "out3")]) == 1
    assert "error:" in capsys.readouterr().err
