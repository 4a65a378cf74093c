"""Every hidden_act minibert accepts (config.SUPPORTED_ACTIVATIONS), against transformers.

For each name: ``ops.<name>`` and its Numba twin ``kernels.<name>`` against transformers'
``ACT2FN[name]`` (float32 and float64); ``ops.<name>_backward`` against torch.autograd and
against centred finite differences in float64; and a whole bert-tiny-shaped model with that
activation (encoder and masked-LM head) against transformers' BertForMaskedLM.
"""

import numpy as np
import pytest

import minibert
from minibert import kernels, ops
from minibert.config import SUPPORTED_ACTIVATIONS, BertConfig
from minibert.errors import ConfigError

from helpers import assert_close

pytestmark = pytest.mark.torch  # the PyTorch reference (dev extra)

NAMES = list(SUPPORTED_ACTIVATIONS)
WITH_BACKWARD_HERE = NAMES  # gelu_backward came with the training code; it passes the same checks


def inputs(dtype):
    """Values where the functions bend (|x| < 4), large ones where they saturate, and exact 0."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(2000) * 3, np.linspace(-12, 12, 97), [0.0, -100.0, 100.0, -1e4, 1e4]])
    return x.astype(dtype)


def torch_activation(name):
    from transformers.activations import ACT2FN

    return ACT2FN[name]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", NAMES)
def test_forward_matches_transformers(name, dtype):
    import torch

    x = inputs(dtype)
    ref = torch_activation(name)(torch.from_numpy(x)).numpy()
    for backend in (ops, kernels.backend):
        ours = getattr(backend, name)(x)
        assert_close(f"activation {name} ({backend.__name__})", name, ours, ref, dtype)
        # and element by element, relative to each value (the large inputs make the scale above loose)
        rel = 1e-6 if dtype == np.float32 else 1e-14  # float32: ~8 ulp
        err = np.abs(ours.astype(np.float64) - ref) / np.maximum(1.0, np.abs(ref))
        assert err.max() <= rel, f"{name} ({backend.__name__}): worst at x={x[err.argmax()]}: {err.max():.2e}"


@pytest.mark.parametrize("driver", ["serial", "parallel"])
@pytest.mark.parametrize("name", NAMES)
def test_kernel_twin_keeps_shape_and_dtype(name, driver, monkeypatch):
    """Both drivers of the Numba twin (the size threshold moved), on a non-contiguous [3, 4, 100] input."""
    monkeypatch.setattr(kernels, "PARALLEL_MIN_ELEMENTS", 0 if driver == "parallel" else 1 << 62)
    x = inputs(np.float32).reshape(-1)[:2100].reshape(3, 7, 100)[:, ::2]
    out = getattr(kernels.backend, name)(x)
    assert out.shape == x.shape and out.dtype == np.float32
    tol = 8 * np.finfo(np.float32).eps * max(1.0, np.abs(out).max())
    np.testing.assert_allclose(out, getattr(ops, name)(x), rtol=0, atol=tol)


@pytest.mark.parametrize("name", WITH_BACKWARD_HERE)
def test_backward_matches_autograd_and_finite_differences(name):
    import torch

    x = inputs(np.float64)
    x = x[np.abs(x) < 50]  # finite differences are meaningless where tanh/exp saturate to the last bit
    x = x[x != 0.0] if name == "relu" else x  # relu has no derivative at 0 (PyTorch says 0, so do we)
    dy = np.random.default_rng(1).standard_normal(x.shape)
    ours = getattr(ops, name + "_backward")(dy, x)
    xt = torch.from_numpy(x).requires_grad_(True)
    torch_activation(name)(xt).backward(torch.from_numpy(dy))
    np.testing.assert_allclose(ours, xt.grad.numpy(), rtol=1e-12, atol=1e-14)
    h = 1e-6
    f = getattr(ops, name)
    numeric = dy * (f(x + h) - f(x - h)) / (2 * h)
    np.testing.assert_allclose(ours, numeric, rtol=1e-6, atol=1e-8)
    assert callable(getattr(kernels.backend, name + "_backward"))  # the numba backend has every backward too
    assert (
        ours.dtype == np.float64
        and getattr(ops, name + "_backward")(dy.astype(np.float32), x.astype(np.float32)).dtype == np.float32
    )


def test_relu_backward_at_zero_is_zero_as_pytorch():
    assert ops.relu_backward(np.ones(3), np.array([-1.0, 0.0, 1.0])).tolist() == [0.0, 0.0, 1.0]


def test_unknown_activation_is_a_clear_config_error():
    d = dict(vocab_size=10, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    with pytest.raises(ConfigError, match="hidden_act='mish' is not supported; minibert implements gelu, gelu_new"):
        BertConfig.from_dict({**d, "hidden_act": "mish"})
    for name in NAMES:  # every listed name builds, and names a function of both backends
        assert BertConfig.from_dict({**d, "hidden_act": name}).hidden_act == name
        assert callable(getattr(ops, name)) and callable(getattr(kernels.backend, name))


@pytest.mark.parametrize("name", NAMES)
def test_whole_model_with_each_activation_matches_transformers(preset_model, name):
    """bert-tiny's shape (8,000 tokens) with hidden_act=name: encoder and masked-LM head, both backends and dtypes."""
    import torch

    from helpers import padded_inputs

    torch_model, _, h5 = preset_model("bert-tiny", model_class="BertForMaskedLM", hidden_act=name, vocab_size=8000)
    ids, mask, types = padded_inputs()
    for dtype in ("float32", "float64"):
        ref_model = torch_model.double() if dtype == "float64" else torch_model.float()
        with torch.no_grad():
            ref = ref_model(
                torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(types), output_hidden_states=True
            )
        keep = mask.astype(bool)
        for backend in ("numpy", "numba"):
            model = minibert.load(h5, dtype=dtype, backend=backend, head="masked-lm")
            assert model.config.hidden_act == name
            out = model(ids, mask, types)
            label = f"bert-tiny MaskedLM hidden_act={name} ({backend})"
            assert_close(
                label, "last_hidden_state", out.last_hidden_state[keep], ref.hidden_states[-1].numpy()[keep], dtype
            )
            assert_close(label, "logits", out.logits[keep], ref.logits.numpy()[keep], dtype)
    torch_model.float()
