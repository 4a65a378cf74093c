"""Small models and data files for the training tests (optim, data, fit, export).

A vocabulary of ~130 tokens (the five specials, letters, '##' letters, digits, punctuation and a
few words) lets the tokenizer cover any lower-case ASCII text, so the models stay tiny
(V = 130, H = 32, L = 2) and a training step takes milliseconds.
"""

import json
import string

import minibert
from minibert import BertConfig, fit
from minibert.weights import save

WORDS = ["the", "cat", "dog", "sat", "on", "mat", "ran", "is", "an", "good", "bad", "movie", "film", "great", "awful"]


def tiny_vocab():
    letters = list(string.ascii_lowercase)
    return (
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        + letters
        + ["##" + c for c in letters]
        + list(string.digits)
        + list(".,!?'-")
        + WORDS
    )


def tiny_config(vocab, **overrides):
    return BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        **overrides,
    )


def tiny_model_file(path, heads=(), seed=0, id2label=None):
    """A freshly initialised tiny BERT saved at ``path`` with the given heads; returns the path."""
    vocab = tiny_vocab()
    w = fit.new_model(tiny_config(vocab, id2label=id2label or {}), vocab, True, list(heads), seed, source="tests")
    if "classification" in heads:  # the init of a new head is N(0, 0.02): make the test model less trivial
        import numpy as np

        rng = np.random.default_rng(seed + 1)
        for name, t in w.tensors.items():
            w.tensors[name] = (t + rng.normal(0, 0.05, t.shape)).astype(t.dtype)
    return save(path, w)


SENTIMENT = [  # (text, label): the label is whether the text says good/great (pos) or bad/awful (neg)
    ("the movie is good", "pos"),
    ("a great film", "pos"),
    ("the cat is good", "pos"),
    ("great dog", "pos"),
    ("the film is bad", "neg"),
    ("an awful movie", "neg"),
    ("the dog is bad", "neg"),
    ("awful cat", "neg"),
    ("good good film", "pos"),
    ("bad bad movie", "neg"),
    ("the mat is great", "pos"),
    ("the mat is awful", "neg"),
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def sentiment_files(directory):
    train = write_jsonl(directory / "train.jsonl", [{"text": t, "label": y} for t, y in SENTIMENT])
    dev = write_jsonl(directory / "dev.jsonl", [{"text": t, "label": y} for t, y in SENTIMENT[2:6]])  # 2 pos, 2 neg
    return train, dev


__all__ = ["minibert", "tiny_vocab", "tiny_config", "tiny_model_file", "sentiment_files", "write_jsonl", "SENTIMENT"]
