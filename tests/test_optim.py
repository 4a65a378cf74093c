"""minibert.optim against PyTorch: AdamW, the linear warm-up schedule, gradient clipping.

The unit tests feed the same gradients to both optimisers (float64), so any difference is the
update rule itself; they must agree to float64 rounding. The 20-step test (in
test_training.py) runs the whole training step, gradients included.
"""

import numpy as np
import pytest

from minibert import kernels, optim
from minibert.errors import InputError

NAMES = {  # a few tensors named like BERT's, shapes kept small
    "embeddings.word_embeddings.weight": (11, 4),
    "embeddings.LayerNorm.weight": (4,),
    "embeddings.LayerNorm.bias": (4,),
    "encoder.layer.0.attention.self.query.weight": (4, 4),
    "encoder.layer.0.attention.self.query.bias": (4,),
    "classifier.weight": (3, 4),
}


def random_params(seed):
    rng = np.random.default_rng(seed)
    return {n: rng.normal(size=s) for n, s in NAMES.items()}


def torch_adamw(params, lr, betas, eps, weight_decay):
    """torch.optim.AdamW with the Trainer's two groups (decay / no decay)."""
    import torch

    tensors = {n: torch.tensor(p.copy(), requires_grad=True) for n, p in params.items()}
    decay = set(optim.decay_parameter_names(tensors))
    groups = [
        {"params": [t for n, t in tensors.items() if n in decay], "weight_decay": weight_decay},
        {"params": [t for n, t in tensors.items() if n not in decay], "weight_decay": 0.0},
    ]
    return tensors, torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)


@pytest.mark.torch
def test_decay_names_are_the_trainers():
    """Same split as transformers' Trainer.get_decay_parameter_names on a real BertForSequenceClassification."""
    transformers = pytest.importorskip("transformers")
    from transformers import BertConfig, BertForSequenceClassification

    model = BertForSequenceClassification(
        BertConfig(
            vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, num_labels=3
        )
    )
    trainer_decay = transformers.Trainer.get_decay_parameter_names(None, model)
    names = [n for n, _ in model.named_parameters()]
    assert optim.decay_parameter_names(names) == trainer_decay
    assert "bert.embeddings.LayerNorm.weight" not in trainer_decay and "classifier.weight" in trainer_decay


@pytest.mark.torch
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_adamw_equals_torch_with_schedule_and_clipping(weight_decay, fused):
    """8 steps, same gradients each step, warm-up schedule and clipping: equal to float64 rounding."""
    torch = pytest.importorskip("torch")
    from transformers import get_linear_schedule_with_warmup

    params = random_params(0)
    lr, betas, eps = 1e-2, (0.9, 0.98), 1e-6
    tensors, torch_opt = torch_adamw(params, lr, betas, eps, weight_decay)
    scheduler = get_linear_schedule_with_warmup(torch_opt, num_warmup_steps=3, num_training_steps=8)
    ours = optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, fused=fused)
    schedule = optim.linear_schedule_with_warmup(3, 8)
    rng = np.random.default_rng(1)
    worst = 0.0
    for step in range(8):
        grads = {n: rng.normal(size=p.shape) * (5.0 if step % 2 else 0.1) for n, p in params.items()}  # some clipped
        for n, t in tensors.items():
            t.grad = torch.tensor(grads[n].copy())
        torch_norm = torch.nn.utils.clip_grad_norm_(list(tensors.values()), max_norm=1.0)
        torch_lr = torch_opt.param_groups[0]["lr"]
        torch_opt.step()
        scheduler.step()

        our_norm = optim.clip_grad_norm(grads, max_norm=1.0)
        our_lr = lr * schedule(ours.step_count)
        ours.step(grads, lr=our_lr)
        assert our_lr == torch_lr
        assert abs(our_norm - float(torch_norm)) <= 1e-14 * our_norm
        for n, t in tensors.items():
            worst = max(worst, float(np.max(np.abs(params[n] - t.detach().numpy()))))
    print(
        f"AdamW (fused={fused}) vs torch, 8 steps, weight_decay={weight_decay}: "
        f"max abs parameter difference {worst:.1e}"
    )
    assert worst <= 1e-15 * 4  # a few float64 roundings of values of size ~1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_update_is_the_numpy_update(dtype):
    """The Numba loop and the NumPy reference: the same operations, so bit-identical results."""
    rng = np.random.default_rng(4)
    arrays = [rng.normal(size=(7, 33)).astype(dtype) for _ in range(4)]  # param, grad, m, v (v >= 0 below)
    arrays[3] = np.abs(arrays[3])
    a, b = [x.copy() for x in arrays], [x.copy() for x in arrays]
    for step in (1, 2, 3):
        optim.adamw_update(a[0], a[1], a[2], a[3], step, 3e-3, 0.9, 0.999, 1e-8, 0.01)
        kernels.adamw_update(b[0], b[1], b[2], b[3], step, 3e-3, 0.9, 0.999, 1e-8, 0.01)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_no_decay_on_bias_and_layernorm():
    """With a zero gradient and zero moments, only decayed parameters shrink: by exactly lr * wd."""
    params = random_params(2)
    before = {n: p.copy() for n, p in params.items()}
    opt = optim.AdamW(params, lr=0.1, weight_decay=0.5)
    opt.step({n: np.zeros_like(p) for n, p in params.items()})
    for n in NAMES:
        factor = (
            1 - 0.1 * 0.5
            if n
            in ("embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.query.weight", "classifier.weight")
            else 1.0
        )
        np.testing.assert_array_equal(params[n], before[n] * factor)


def test_schedule_values():
    s = optim.linear_schedule_with_warmup(2, 6)
    assert [s(k) for k in range(8)] == [0.0, 0.5, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0]


def test_clip_leaves_small_gradients_and_returns_norm():
    g = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}
    assert optim.clip_grad_norm(g, max_norm=10.0) == 5.0
    np.testing.assert_array_equal(g["a"], [3.0, 0.0])  # factor min(1, 10 / 5) = 1
    optim.clip_grad_norm(g, max_norm=1.0)
    np.testing.assert_allclose(optim.global_norm(g), 1.0, rtol=1e-6)


def test_state_dict_round_trip_and_errors():
    params = random_params(3)
    opt = optim.AdamW(params, lr=0.1)
    opt.step({n: np.ones_like(p) for n, p in params.items()})
    state = opt.state_dict()
    other = optim.AdamW(random_params(3), lr=0.1)
    other.load_state_dict(state)
    assert other.step_count == 1
    np.testing.assert_array_equal(other.exp_avg_sq["classifier.weight"], state["exp_avg_sq"]["classifier.weight"])
    with pytest.raises(InputError, match="unknown parameters"):
        opt.step({"nope": np.zeros(1)})
    with pytest.raises(InputError, match="has shape"):
        opt.step({"classifier.weight": np.zeros(2)})
    with pytest.raises(InputError, match="invalid AdamW"):
        optim.AdamW(params, lr=-1)
