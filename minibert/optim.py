"""The optimiser of BERT fine-tuning, written out: AdamW, a learning-rate schedule, clipping.

Each piece does exactly what its PyTorch twin does, operation for operation, so that a model
trained here and the same model trained by PyTorch stay equal to float64 rounding
(``tests/test_optim.py`` holds them equal):

* ``AdamW``            ``torch.optim.AdamW`` (Loshchilov & Hutter, "Decoupled Weight Decay
                       Regularization"), with the parameter groups of transformers' ``Trainer``:
                       no weight decay on biases and LayerNorm weights (``decay_parameter_names``);
* ``linear_schedule_with_warmup``   transformers' ``get_linear_schedule_with_warmup``;
* ``clip_grad_norm``   ``torch.nn.utils.clip_grad_norm_`` (one global L2 norm over every gradient).

Parameters and gradients are dicts keyed by the tensor names of the ``.h5`` file (what
``train.value_and_grad`` returns). The update is in place: the arrays of ``model.weights``
are changed, so every view of them (the tied masked-LM decoder) sees the new values.

In a training step, in the order of transformers' Trainer::

    loss, grads = train.value_and_grad(model, ids, attention_mask=mask, labels=labels)
    clip_grad_norm(grads, max_norm=1.0)
    optimizer.step(grads, lr=base_lr * schedule(optimizer.step_count))  # the lr of the step about to run
"""

import re

import numpy as np

from .errors import InputError

# transformers' Trainer.get_decay_parameter_names: parameters of LayerNorm layers and every name
# containing "bias" get no weight decay (the patterns are matched on the lower-cased name).
NO_DECAY_PATTERNS = [
    re.compile(p) for p in (r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)")
]


def decay_parameter_names(names):
    """The names that get weight decay: all but biases and LayerNorm weights (as the Trainer)."""
    return [n for n in names if not any(p.search(n.lower()) for p in NO_DECAY_PATTERNS)]


def adamw_update(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay):
    """One AdamW step on one tensor, in place; the operations of ``torch.optim.AdamW``.

    With g the gradient, t the step number (1 for the first step)::

        param <- param * (1 - lr * weight_decay)           decoupled decay, before the moments
        m     <- m + (1 - beta1) (g - m)                     torch's lerp_ (weight < 0.5 branch)
        v     <- v * beta2 + (1 - beta2) g g
        param <- param - (lr / (1 - beta1^t)) m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    eps is added after the bias correction of sqrt(v) (PyTorch's placement; the paper adds it to
    sqrt(v_hat) as well). Every array has the parameter's shape; ``step`` is an int >= 1.
    """
    if weight_decay != 0:
        param *= 1 - lr * weight_decay  # [...]
    exp_avg += (1 - beta1) * (grad - exp_avg)  # [...], m: running mean of g
    exp_avg_sq *= beta2  # [...], v: running mean of g^2
    exp_avg_sq += (1 - beta2) * grad * grad  # torch's addcmul_: self + value * t1 * t2
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    step_size = lr / bias_correction1
    denom = np.sqrt(exp_avg_sq) / bias_correction2**0.5 + eps  # [...]
    param += (-step_size * exp_avg) / denom  # torch's addcdiv_: self + value * t1 / t2


class AdamW:
    """``torch.optim.AdamW`` over a dict of named NumPy parameters, updated in place.

    ``params``: name -> array (``model.weights``; integer arrays are skipped).
    ``decay``: the names that get weight decay; default ``decay_parameter_names(params)``
    (transformers' Trainer: none on biases and LayerNorm weights).
    Defaults are PyTorch's (lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 0.01).
    ``fused``: True (default) updates with the Numba loop ``kernels.adamw_update``, False with the
    NumPy reference ``adamw_update``; the two give the same numbers (tests/test_optim.py).
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, decay=None, fused=True):
        if lr < 0 or eps < 0 or weight_decay < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise InputError(
                f"invalid AdamW settings lr={lr}, betas={betas}, eps={eps}, weight_decay={weight_decay}",
                "use lr >= 0, 0 <= beta < 1, eps >= 0, weight_decay >= 0",
            )
        self.params = {n: p for n, p in params.items() if np.issubdtype(p.dtype, np.floating)}
        self.lr, self.betas, self.eps, self.weight_decay = lr, tuple(betas), eps, weight_decay
        self.decay = set(decay_parameter_names(self.params) if decay is None else decay)
        self.exp_avg = {n: np.zeros_like(p) for n, p in self.params.items()}  # m, first moment
        self.exp_avg_sq = {n: np.zeros_like(p) for n, p in self.params.items()}  # v, second moment
        self.step_count = 0  # optimiser steps taken
        if fused:
            from . import kernels  # imports numba: only when a fused optimiser is made

            self.update = kernels.adamw_update
        else:
            self.update = adamw_update

    def step(self, grads, lr=None):
        """Update every parameter from its gradient (a dict with the same names), in place.

        ``lr``: the learning rate of this step (from a schedule); default the optimiser's.
        A parameter without a gradient is left alone, as PyTorch does for ``grad is None``.
        """
        unknown = set(grads) - set(self.params)
        if unknown:
            raise InputError(
                f"gradients for unknown parameters: {', '.join(sorted(unknown)[:3])}",
                "pass the grads dict of train.value_and_grad for the same model",
            )
        lr = self.lr if lr is None else lr
        self.step_count += 1
        beta1, beta2 = self.betas
        for name, param in self.params.items():
            if name not in grads:
                continue
            grad = grads[name]
            if grad.shape != param.shape:
                raise InputError(
                    f"gradient of {name} has shape {grad.shape}, the parameter {param.shape}",
                    "pass the grads dict of train.value_and_grad for the same model",
                )
            weight_decay = self.weight_decay if name in self.decay else 0.0
            grad = np.ascontiguousarray(grad, dtype=param.dtype)
            self.update(
                param,
                grad,
                self.exp_avg[name],
                self.exp_avg_sq[name],
                self.step_count,
                lr,
                beta1,
                beta2,
                self.eps,
                weight_decay,
            )

    def state_dict(self):
        """Everything needed to resume: the step count and both moments of every parameter."""
        return {"step_count": self.step_count, "exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq}

    def load_state_dict(self, state, source="optimizer state"):
        """Restore ``state_dict()``; every moment must match its parameter's name and shape."""
        for key in ("exp_avg", "exp_avg_sq"):
            if set(state[key]) != set(self.params):
                missing = sorted(set(self.params) ^ set(state[key]))[:3]
                raise InputError(
                    f"{source}: {key} does not cover the same parameters as the model (e.g. {', '.join(missing)})",
                    "resume with the checkpoint's own model file",
                )
            for name, value in state[key].items():
                if value.shape != self.params[name].shape:
                    raise InputError(
                        f"{source}: {key}/{name} has shape {value.shape}, the parameter {self.params[name].shape}",
                        "resume with the checkpoint's own model file",
                    )
                getattr(self, key)[name] = np.ascontiguousarray(value, dtype=self.params[name].dtype)
        self.step_count = int(state["step_count"])


def linear_schedule_with_warmup(num_warmup_steps, num_training_steps):
    """The learning-rate multiplier of step k (0-based), as transformers' linear schedule.

    Rises linearly from 0 to 1 over the warm-up steps, then falls linearly to 0 at
    ``num_training_steps``. Optimiser step t (1-based) uses ``lr * schedule(t - 1)``, as
    ``LambdaLR`` does when ``scheduler.step()`` follows ``optimizer.step()``.
    """

    def schedule(k):
        if k < num_warmup_steps:
            return float(k) / float(max(1, num_warmup_steps))
        return max(0.0, float(num_training_steps - k) / float(max(1, num_training_steps - num_warmup_steps)))

    return schedule


def global_norm(grads):
    """The L2 norm of all gradients seen as one vector: the norm of the per-tensor norms."""
    norms = np.array([np.linalg.norm(g.ravel()) for g in grads.values()])  # [N]
    return float(np.linalg.norm(norms))


def clip_grad_norm(grads, max_norm):
    """Scale every gradient in place by min(1, max_norm / (norm + 1e-6)); return the norm before.

    ``torch.nn.utils.clip_grad_norm_``: the multiplication happens even when the factor is 1.
    """
    total_norm = global_norm(grads)
    clip_coef = min(max_norm / (total_norm + 1e-6), 1.0)
    for g in grads.values():
        g *= g.dtype.type(clip_coef)
    return total_norm
