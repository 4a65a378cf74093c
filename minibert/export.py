"""Export a minibert .h5 file back to a Hugging Face model directory.

``export("model.h5", "out/")`` writes what transformers' ``from_pretrained`` reads:

    config.json            a BertConfig (``architectures`` names the BertFor* class of the file's heads;
                           id2label/label2id for a classifier)
    vocab.txt              the vocabulary, one token per line (and tokenizer_config.json: lower-casing)
    model.safetensors      every tensor under transformers' name (``bert.`` prefix on the encoder
                           for a BertFor* model), written by the small writer below

The writer is ours, beside the reader in ``safetensors.py``: the format is an 8-byte little-endian
header length, a JSON header (dtype, shape and byte range of each tensor) and the raw
little-endian bytes, so no torch or safetensors package is needed to export (minibert's runtime
needs only numpy, numba and h5py). ``tests/test_export.py`` loads the result with transformers
and compares its outputs with minibert's.
"""

import json
from pathlib import Path

import numpy as np

from . import weights as weights_format
from .errors import WeightsError
from .safetensors import write_safetensors
from .version import __version__

# The transformers class for the heads a file holds (the first match wins).
ARCHITECTURES = [
    ({"masked-lm", "next-sentence"}, "BertForPreTraining"),
    ({"masked-lm"}, "BertForMaskedLM"),
    ({"next-sentence"}, "BertForNextSentencePrediction"),
    ({"classification"}, "BertForSequenceClassification"),
    (set(), "BertModel"),
]
def architecture(heads):
    held = set(heads)
    return next(name for needed, name in ARCHITECTURES if needed <= held)


def hf_config(weights, arch):
    """The config.json of a WeightsFile, with transformers' key names."""
    c = weights.config
    d = {
        "architectures": [arch],
        "model_type": "bert",
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "intermediate_size": c.intermediate_size,
        "hidden_act": c.hidden_act,
        "max_position_embeddings": c.max_position_embeddings,
        "type_vocab_size": c.type_vocab_size,
        "layer_norm_eps": c.layer_norm_eps,
        "pad_token_id": c.pad_token_id,
        "initializer_range": 0.02,
        "hidden_dropout_prob": getattr(c, "hidden_dropout_prob", 0.1),
        "attention_probs_dropout_prob": getattr(c, "attention_probs_dropout_prob", 0.1),
        "classifier_dropout": getattr(c, "classifier_dropout", None),
        "position_embedding_type": "absolute",
        "tie_word_embeddings": "cls.predictions.decoder.weight" not in weights.tensors,
        "torch_dtype": "float64"
        if weights.tensors["embeddings.word_embeddings.weight"].dtype == np.float64
        else "float32",
    }
    if arch == "BertForSequenceClassification":
        d["id2label"] = {str(i): name for i, name in sorted(c.id2label.items())}
        d["label2id"] = {name: i for i, name in sorted(c.id2label.items())}
    return d


def hf_tensors(weights, arch):
    """transformers' state-dict names: the encoder under ``bert.`` for a BertFor* class.

    The tied masked-LM decoder is not written (transformers ties it to the word embeddings
    when loading); an untied one is.
    """
    prefix = "" if arch == "BertModel" else "bert."
    heads = ("cls.", "classifier.")
    return {
        (name if name.startswith(heads) else prefix + name): array
        for name, array in weights.tensors.items()
        if arch != "BertModel" or not name.startswith(heads)
    }


def export(path, out_dir):
    """Write ``config.json``, ``vocab.txt``, ``tokenizer_config.json`` and ``model.safetensors``; return out_dir."""
    weights = weights_format.load(path)
    if not weights.vocab:
        raise WeightsError(
            f"{path}: the file holds no vocabulary, and a Hugging Face directory needs vocab.txt",
            "convert the model from a directory that has vocab.txt",
        )
    arch = architecture(weights.heads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(hf_config(weights, arch), indent=2) + "\n", encoding="utf-8")
    (out_dir / "vocab.txt").write_text("".join(token + "\n" for token in weights.vocab), encoding="utf-8")
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "BertTokenizer",
                "do_lower_case": weights.do_lower_case,
                "model_max_length": weights.config.max_position_embeddings,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    write_safetensors(
        out_dir / "model.safetensors",
        hf_tensors(weights, arch),
        metadata={"format": "pt", "exported_by": f"minibert {__version__}", "source": str(path)},
    )
    return out_dir
