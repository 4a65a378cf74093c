# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 8. Backpropagation by hand
#
# To train BERT we need the **gradient** of the loss with respect to every one of its
# parameters: which way, and how strongly, each number should move to lower the loss.
# PyTorch computes it with `loss.backward()` (automatic differentiation). Here we do it
# ourselves, one operation at a time, with the chain rule:
#
# *if `y = f(x)` and we already know `dy = d loss / d y` (same shape as `y`), then
# `dx = d loss / d x` is `dy` pushed back through `f`.*
#
# Every forward function of `minibert.ops` has such a **backward** beside it
# (`ops.linear_backward`, `ops.layer_norm_backward`, ...), and `minibert.train.value_and_grad`
# chains them through the whole model. For each operation we
#
# 1. derive the backward on paper (a few lines of prose),
# 2. write it in NumPy and compare it with minibert's,
# 3. check both against **finite differences** (no calculus involved: nudge one input by `±h`
#    and watch the loss), in float64,
# 4. check against **PyTorch's autograd** (these cells say so, and are skipped without PyTorch).
#
# Then the whole model's gradient against PyTorch, and the **gradient trace**, which finds a
# bug planted in a backward function at the step where it begins.
#
# Axis legend: `B` batch, `T` tokens, `H` hidden size, `A` heads, `D = H // A` head size,
# `N` rows, `C` classes, `V` vocabulary size.

# %% [markdown]
# ## Set-up
# The shared set-up (`tutorials/tutorial_setup.py`, notebook 1) puts this checkout's
# `minibert` first on the path and converts the model the first time.

# %%
import tutorial_setup  # tutorials/tutorial_setup.py: this checkout's minibert, the shared helpers
MODEL = tutorial_setup.default_model()  # weights/all-MiniLM-L6-v2.h5, converted the first time

# %%
import matplotlib.pyplot as plt
import numpy as np

import exercise_checks as check  # the exercises' checks (tutorials/exercise_checks.py)
import minibert
from minibert import ops, train

rng = np.random.default_rng(0)

# %% [markdown]
# ## The tool that needs no calculus: centred finite differences
# For a scalar loss `f(x)`, `(f(x + h e_i) - f(x - h e_i)) / 2h` approximates `d f / d x_i`
# with an error of order `h²`. In float64 with `h = 1e-6` that is about `1e-10` relative: good
# enough to tell a right backward from a wrong one, and it knows nothing about the formula we
# derived. It costs two evaluations of `f` per entry, so we only use it on small arrays (or a
# few entries of big ones). PyTorch is not needed for it.
#
# A backward receives `dy` and returns `dx`. To check it with finite differences we make a
# scalar out of the forward: `f(x) = sum(dy * forward(x))`, whose gradient is exactly `dx`.

# %%
def numeric_grad(f, x, h=1e-6):  # f: array -> float; returns d f / d x, same shape as x (float64)
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        up = f(x)
        x[i] = old - h
        down = f(x)
        x[i] = old
        grad[i] = (up - down) / (2 * h)
    return grad


def rel_err(a, b):  # max |a - b| relative to the scale of b, as the project's parity tests
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / max(1.0, np.abs(b).max()))


errors = {}  # op -> (ours vs finite differences, minibert vs ours)

# %% [markdown]
# ## 1. Linear: `y = x Wᵀ + b`
# `x` is `[N, in]`, `W` is `[out, in]` (PyTorch stores it that way), `y` is `[N, out]`. Entry
# `y[n, o] = Σ_i x[n, i] W[o, i] + b[o]`. Differentiate:
#
# * `d y[n, o] / d x[n, i] = W[o, i]`, so `dx[n, i] = Σ_o dy[n, o] W[o, i]`: **`dx = dy W`**.
# * `d y[n, o] / d W[o, i] = x[n, i]`, summed over every row `n` that used the weight:
#   **`dW = dyᵀ x`**, `[out, N] @ [N, in] = [out, in]`, the shape of `W`.
# * **`db = Σ_n dy[n]`**: the bias is added to every row.
#
# A check on shapes catches the most common slip: `xᵀ dy` is `[in, out]`, the transpose of
# what we need (for a square `W` the shape does not warn you; the numbers do).

# %%
x = rng.standard_normal((5, 4))  # [N, in]
W = rng.standard_normal((3, 4))  # [out, in]
b = rng.standard_normal(3)  # [out]
dy = rng.standard_normal((5, 3))  # [N, out], some upstream gradient

dx = dy @ W  # [N, out] @ [out, in] -> [N, in]
dW = dy.T @ x  # [out, N] @ [N, in] -> [out, in]
db = dy.sum(0)  # [out]

fd = [numeric_grad(lambda v: (dy * ops.linear(v, W, b)).sum(), x),
      numeric_grad(lambda v: (dy * ops.linear(x, v, b)).sum(), W),
      numeric_grad(lambda v: (dy * ops.linear(x, W, v)).sum(), b)]
mb = ops.linear_backward(dy, x, W)  # minibert: (dx, dweight, dbias)
errors["linear"] = (max(map(rel_err, (dx, dW, db), fd)), max(map(rel_err, mb, (dx, dW, db))))
print("linear: ours vs finite differences %.1e, minibert vs ours %.1e" % errors["linear"])
assert errors["linear"][0] < 1e-8 and errors["linear"][1] < 1e-14

# %% [markdown]
# ## 2. LayerNorm
# Per row of `H` numbers: `μ = mean(x)`, `σ² = mean((x - μ)²)`, `r = 1 / sqrt(σ² + ε)`,
# `x̂ = (x - μ) r`, `y = x̂ w + b`.
#
# `dw = Σ dy x̂` and `db = Σ dy` (summed over the rows). For `dx`, let `g = dy w` (the
# gradient reaching `x̂`). The trap: `μ` and `r` depend on **every** `x` of the row, so
# changing one `x_i` moves all of `x̂`. Working it through (`d μ / d x_i = 1/H`,
# `d r / d x_i = -r³ (x_i - μ) / H`):
#
# `dx = r (g - mean(g) - x̂ mean(g x̂))`
#
# The `- mean(g)` term comes from `μ` (a constant added to the whole row changes nothing after
# LayerNorm, so its gradient has no component along `(1, ..., 1)`), and `- x̂ mean(g x̂)` from
# `r` (scaling the row changes nothing either). Forgetting the mean term is a classic bug:
# we will plant it later.

# %%
H = 8
x = rng.standard_normal((2, 3, H)) * 2 + 1  # [B, T, H], not centred on purpose
w, bias, eps = rng.standard_normal(H), rng.standard_normal(H), 1e-12
dy = rng.standard_normal((2, 3, H))

mu = x.mean(-1, keepdims=True)  # [B, T, 1]
r = 1 / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps)  # [B, T, 1]
xhat = (x - mu) * r  # [B, T, H]
g = dy * w  # [B, T, H]
dx = r * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True))  # [B, T, H]
dw = (dy * xhat).sum((0, 1))  # [H]
db = dy.sum((0, 1))  # [H]

fd = [numeric_grad(lambda v: (dy * ops.layer_norm(v, w, bias, eps)).sum(), x),
      numeric_grad(lambda v: (dy * ops.layer_norm(x, v, bias, eps)).sum(), w),
      numeric_grad(lambda v: (dy * ops.layer_norm(x, w, v, eps)).sum(), bias)]
mb = ops.layer_norm_backward(dy, x, w, eps)
errors["layer_norm"] = (max(map(rel_err, (dx, dw, db), fd)), max(map(rel_err, mb, (dx, dw, db))))
print("LayerNorm: ours vs finite differences %.1e, minibert vs ours %.1e" % errors["layer_norm"])

no_mean_term = r * (g - xhat * (g * xhat).mean(-1, keepdims=True))  # the classic bug
print(f"without the mean term: off by {rel_err(no_mean_term, fd[0]):.2f}")
print(f"the gradient's component along (1, ..., 1), per row: {np.abs(dx.sum(-1)).max():.1e} (zero, as argued)")
assert errors["layer_norm"][0] < 1e-8 and errors["layer_norm"][1] < 1e-12 and rel_err(no_mean_term, fd[0]) > 0.01

# %% [markdown]
# ## 3. GELU
# `gelu(x) = x Φ(x)` with `Φ` the standard normal CDF; its derivative is
# `Φ(x) + x φ(x)`, with `φ(x) = exp(-x²/2) / sqrt(2π)` the density. Element-wise, so
# `dx = dy (Φ(x) + x φ(x))`. The figure shows that the derivative dips slightly below 0
# (GELU is not monotonic) and overshoots 1.

# %%
x = np.linspace(-4, 4, 41)
dy = np.ones_like(x)
from math import erf, pi, sqrt  # noqa: E402

Phi = np.array([0.5 * (1 + erf(v / sqrt(2))) for v in x])  # [41]
phi = np.exp(-x * x / 2) / sqrt(2 * pi)  # [41]
dx = dy * (Phi + x * phi)
fd = numeric_grad(lambda v: (dy * ops.gelu(v)).sum(), x)
errors["gelu"] = (rel_err(dx, fd), rel_err(ops.gelu_backward(dy, x), dx))
print("GELU: ours vs finite differences %.1e, minibert vs ours %.1e" % errors["gelu"])
assert errors["gelu"][0] < 1e-8 and errors["gelu"][1] < 1e-14

fig, ax = plt.subplots(figsize=(6, 3.2))
ax.plot(x, ops.gelu(x), label="gelu(x)")
ax.plot(x, dx, label="d gelu / dx (by hand)")
ax.plot(x[::4], fd[::4], "o", mfc="none", label="finite differences")
ax.axhline(0, color="grey", lw=0.5)
ax.set(xlabel="x", ylabel="value", title="GELU and its derivative")
ax.legend()
plt.show()

# %% [markdown]
# ## 4. Softmax
# `y = softmax(x)` over a row: `y_i = e^{x_i} / Σ_j e^{x_j}`. Every output depends on every
# input: `d y_i / d x_j = y_i (δ_ij - y_j)` (the Jacobian). Multiply by `dy` and sum over `i`:
#
# `dx_j = y_j (dy_j - Σ_i dy_i y_i)`
#
# The row sum `Σ_i dy_i y_i` is what the off-diagonal entries of the Jacobian contribute.
# Dropping it (`dx = y dy`, the diagonal only) is the bug we plant below. A consequence of the
# right formula: each row of `dx` sums to 0 (adding a constant to every score of a row leaves
# the softmax unchanged, so the loss cannot depend on that direction).

# %%
x = rng.standard_normal((3, 6)) * 3  # [N, C] scores
dy = rng.standard_normal((3, 6))
y = ops.softmax(x)
dx = y * (dy - (dy * y).sum(-1, keepdims=True))  # [N, C]
jacobian = np.einsum("ni,ij->nij", y, np.eye(6)) - np.einsum("ni,nj->nij", y, y)  # [N, C, C], the long way
fd = numeric_grad(lambda v: (dy * ops.softmax(v)).sum(), x)
errors["softmax"] = (rel_err(dx, fd), rel_err(ops.softmax_backward(dy, y), dx))
print("softmax: ours vs finite differences %.1e, minibert vs ours %.1e" % errors["softmax"])
print(f"Jacobian route vs ours {rel_err(np.einsum('nij,ni->nj', jacobian, dy), dx):.1e}; "
      f"row sums of dx: {np.abs(dx.sum(-1)).max():.1e}; without the row sum: off by {rel_err(y * dy, fd):.2f}")
assert errors["softmax"][0] < 1e-8 and errors["softmax"][1] < 1e-14

# %% [markdown]
# ## 5. Attention
# One head: `S = s Q Kᵀ` (`s = 1/sqrt(D)`), `P = softmax(S + mask)`, `C = P V`. Each is a
# product or a softmax, so the rules above compose:
#
# * `C = P V` (a linear map twice): `dP = dC Vᵀ`, `dV = Pᵀ dC`;
# * `P = softmax(S + mask)`: the mask is a constant, so `dS` is softmax's backward; a masked
#   key has `P = 0`, hence gets no gradient;
# * `S = s Q Kᵀ`: `dQ = s dS K`, `dK = s dSᵀ Q`.
#
# We check all three inputs `Q, K, V` at once, with one padded key.

# %%
T, D = 5, 4
Q, K, V = (rng.standard_normal((1, 1, T, D)) for _ in range(3))  # [B, A, T, D]
mask_bias = ops.attention_mask_bias(np.array([[1, 1, 1, 1, 0]]), np.dtype(np.float64))  # [B, 1, 1, T]
s = 1 / np.sqrt(D)
dC = rng.standard_normal((1, 1, T, D))


def attention(q, k, v):  # [B, A, T, D] x3 -> [B, A, T, D]
    return ops.attention_context(ops.masked_softmax(ops.attention_scores(q, k, s), mask_bias), v)


P = ops.masked_softmax(ops.attention_scores(Q, K, s), mask_bias)  # [B, A, T, T]
dP = dC @ V.transpose(0, 1, 3, 2)  # [B, A, T, T]
dV = P.transpose(0, 1, 3, 2) @ dC  # [B, A, T, D]
dS = P * (dP - (dP * P).sum(-1, keepdims=True))  # [B, A, T, T]
dQ = s * dS @ K  # [B, A, T, D]
dK = s * dS.transpose(0, 1, 3, 2) @ Q  # [B, A, T, D]

fd = [numeric_grad(lambda v: (dC * attention(v, K, V)).sum(), Q),
      numeric_grad(lambda v: (dC * attention(Q, v, V)).sum(), K),
      numeric_grad(lambda v: (dC * attention(Q, K, v)).sum(), V)]
dP_mb, dV_mb = ops.attention_context_backward(dC, P, V)
dQ_mb, dK_mb = ops.attention_scores_backward(ops.masked_softmax_backward(dP_mb, P), Q, K, s)
errors["attention"] = (max(map(rel_err, (dQ, dK, dV), fd)), max(map(rel_err, (dQ_mb, dK_mb, dV_mb), (dQ, dK, dV))))
print("attention: ours vs finite differences %.1e, minibert vs ours %.1e" % errors["attention"])
print("the padded key's gradient:", np.abs(dK[0, 0, -1]).max(), "(it is never looked at)")
assert errors["attention"][0] < 1e-8 and errors["attention"][1] < 1e-14 and np.abs(dK[0, 0, -1]).max() == 0

# %% [markdown]
# ## 6. Embedding lookup, with repeated ids
# `y[b, t] = table[ids[b, t]]` copies a row. Its backward sends `dy[b, t]` back to row
# `ids[b, t]`, and a row read at several positions (the word "the", the token type 0)
# receives the **sum** of their gradients: a scatter-add. In NumPy `dtable[ids] += dy` does
# *not* do that (with repeated indices only one write survives); `np.add.at` does.

# %%
table = rng.standard_normal((6, 3))  # [N, H]
ids = np.array([[1, 4, 1, 1], [0, 4, 2, 1]])  # [B, T]: id 1 four times, id 4 twice
dy = rng.standard_normal((2, 4, 3))

dtable = np.zeros_like(table)
np.add.at(dtable, ids.reshape(-1), dy.reshape(-1, 3))  # [N, H]: repeated ids add up
wrong = np.zeros_like(table)
wrong[ids.reshape(-1)] += dy.reshape(-1, 3)  # looks the same, keeps one write per id
fd = numeric_grad(lambda v: (dy * ops.embedding(ids, v)).sum(), table)
errors["embedding"] = (rel_err(dtable, fd), rel_err(ops.embedding_backward(dy, ids, 6), dtable))
print("embedding: ours vs finite differences %.1e, minibert vs ours %.1e" % errors["embedding"])
print(f"'dtable[ids] += dy' is off by {rel_err(wrong, fd):.2f}; rows never read (3, 5) get 0: {np.abs(dtable[[3, 5]]).max()}")
assert errors["embedding"][0] < 1e-8 and errors["embedding"][1] < 1e-14 and rel_err(wrong, fd) > 0.1

# %% [markdown]
# ## 7. The loss: cross-entropy
# The classifier gives logits `z` `[N, C]`; the loss is the mean over rows of
# `-log softmax(z)[label]`. With `p = softmax(z)`,
# `-log p_y = -z_y + log Σ_j e^{z_j}`, whose derivative in `z_j` is `p_j - [j = y]`. Averaged
# over `N` rows: **`dz = (p - onehot(y)) / N`**. This is where every backward pass starts
# (`dloss = 1`). The gradient pushes the right class's logit up and every other one down, in
# proportion to the probability the model wrongly gave it. (Exercise 1 adds what PyTorch
# does with labels of `-100`.)

# %%
z = rng.standard_normal((4, 3))  # [N, C]
labels = np.array([2, 0, 0, 1])


def loss_fn(z):  # [N, C] -> float, mean cross-entropy
    shifted = z - z.max(-1, keepdims=True)
    return float(-(shifted[np.arange(len(labels)), labels] - np.log(np.exp(shifted).sum(-1))).mean())


dz = (ops.softmax(z) - np.eye(3)[labels]) / len(labels)  # [N, C]
errors["cross_entropy"] = (rel_err(dz, numeric_grad(loss_fn, z)), 0.0)
print(f"cross-entropy: ours vs finite differences {errors['cross_entropy'][0]:.1e}")
assert errors["cross_entropy"][0] < 1e-8

# %% [markdown]
# ## Against PyTorch's autograd
# The same operations, inputs and upstream gradients in PyTorch (float64): `y.backward(dy)`
# fills `x.grad` with exactly what our backward functions return. (This cell needs PyTorch;
# without it, it says so and the notebook carries on.)

# %%
if tutorial_setup.have_torch("each backward against torch.autograd"):
    import torch
    import torch.nn.functional as TF

    def torch_grads(fn, inputs, dy):  # -> the gradient of sum(dy * fn(*inputs)) for each input
        ts = [torch.tensor(a, requires_grad=True) for a in inputs]
        fn(*ts).backward(torch.tensor(dy))
        return [t.grad.numpy() for t in ts]

    r0 = np.random.default_rng(1)
    x, W, b = r0.standard_normal((5, 4)), r0.standard_normal((3, 4)), r0.standard_normal(3)
    x8, w8, b8 = r0.standard_normal((2, 3, 8)) + 1, r0.standard_normal(8), r0.standard_normal(8)
    z = r0.standard_normal((3, 6)) * 3
    table, ids = r0.standard_normal((6, 3)), np.array([[1, 4, 1, 1], [0, 4, 2, 1]])
    dy_lin, dy_ln, dy_sm, dy_emb = (r0.standard_normal(s) for s in ((5, 3), (2, 3, 8), (3, 6), (2, 4, 3)))
    autograd = {
        "linear": (torch_grads(TF.linear, (x, W, b), dy_lin), ops.linear_backward(dy_lin, x, W)),
        "layer_norm": (torch_grads(lambda v, w_, b_: TF.layer_norm(v, (8,), w_, b_, 1e-12), (x8, w8, b8), dy_ln),
                       ops.layer_norm_backward(dy_ln, x8, w8, 1e-12)),
        "gelu": (torch_grads(TF.gelu, (x8,), dy_ln), [ops.gelu_backward(dy_ln, x8)]),
        "softmax": (torch_grads(lambda v: torch.softmax(v, -1), (z,), dy_sm), [ops.softmax_backward(dy_sm, ops.softmax(z))]),
        "attention (Q, K, V)": (torch_grads(lambda q, k, v: torch.softmax(q @ k.transpose(-1, -2) * s + torch.tensor(mask_bias), -1) @ v,
                                            (Q, K, V), dC), [dQ_mb, dK_mb, dV_mb]),
        "embedding": (torch_grads(lambda t: TF.embedding(torch.tensor(ids), t), (table,), dy_emb),
                      [ops.embedding_backward(dy_emb, ids, 6)]),
    }
    for op, (theirs, ours_) in autograd.items():
        err = max(rel_err(a, t) for a, t in zip(ours_, theirs))
        print(f"{op:22s} minibert vs torch.autograd: {err:.1e}")
        assert err < 1e-12, op

# %% [markdown]
# ## 8. The whole model: `train.value_and_grad`
# `value_and_grad` runs BERT forward keeping what each backward needs (the *cache*), then the
# backward functions in reverse order, layer by layer, from the loss down to the embedding
# tables: `train.layer_backward` is `train.layer_forward` read from the bottom up.
#
# Our model: a seeded random BERT of the bert-tiny shape (2 layers, `H = 128`) with a
# three-way classification head, in float64. Every weight is jittered, so that no bias is
# exactly 0 and no LayerNorm weight exactly 1 (a bug can hide behind a 0 or a 1). The batch is
# a padded pair batch with repeated words. `check.tiny_classifier64` builds both (exercise 3
# uses the same).

# %%
clf, batch = check.tiny_classifier64()
print({k: v.shape for k, v in batch.items()}, "labels", batch["labels"])
print(minibert.Tokenizer.from_file(MODEL).convert_ids_to_tokens(batch["input_ids"][0]))
loss, grads = train.value_and_grad(clf, **batch)
print(f"loss {loss:.6f}; {len(grads)} parameter gradients, {sum(g.size for g in grads.values()):,} numbers")
assert set(grads) == set(clf.weights) and all(grads[n].shape == clf.weights[n].shape for n in grads)

# %% [markdown]
# **Finite differences on the real thing.** For a few entries of a few parameters, nudge the
# weight by `±h`, recompute the loss, and compare with `grads`. (One entry costs two forward
# passes, so we check 3 entries each of 8 parameters, picking the largest gradients.)

# %%
def loss_at(name, index, value):  # the loss with one weight entry replaced (train.forward: no backward)
    old = clf.weights[name][index]
    clf.weights[name][index] = value
    try:
        return train.forward(clf, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                             batch["labels"], None, None)[0]
    finally:
        clf.weights[name][index] = old


checked = ["embeddings.word_embeddings.weight", "embeddings.token_type_embeddings.weight",
           "encoder.layer.0.attention.self.query.weight", "encoder.layer.0.attention.output.LayerNorm.weight",
           "encoder.layer.1.intermediate.dense.bias", "encoder.layer.1.output.dense.weight", "pooler.dense.weight",
           "classifier.weight"]
fd_rows = []
for name in checked:
    for flat in np.argsort(-np.abs(grads[name]).ravel())[:3]:
        index = tuple(int(i) for i in np.unravel_index(flat, grads[name].shape))
        w0, h = clf.weights[name][index], 1e-5
        numeric = (loss_at(name, index, w0 + h) - loss_at(name, index, w0 - h)) / (2 * h)
        fd_rows.append((name, index, grads[name][index], numeric))
worst_fd = max(abs(a - n) / max(abs(n), 1e-8) for _, _, a, n in fd_rows)
for name, index, a, n in fd_rows[::3]:
    print(f"{name:48s} {str(index):12s} by hand {a:+.8f}  finite diff. {n:+.8f}")
print(f"worst relative error over {len(fd_rows)} entries: {worst_fd:.1e}")
assert worst_fd < 1e-6

# %% [markdown]
# **Against PyTorch.** `minibert.reference.trace_grads` builds transformers'
# `BertForSequenceClassification` from the same weights, runs `loss.backward()` and reads the
# gradient of every parameter (and of every named step, for the trace below). Every parameter,
# float64: (This cell needs PyTorch.)

# %%
weights_file = minibert.weights.WeightsFile(
    config=clf.config, tensors=clf.weights, heads=["classification"], source="notebook 08")
reference_trace = None  # PyTorch's gradient trace, when PyTorch is here
if tutorial_setup.have_torch("the whole model's gradients against PyTorch"):
    from minibert import reference

    reference_trace = reference.trace_grads(weights_file, head="classification", dtype="float64", **batch)
    worst = {n: rel_err(grads[n], reference_trace[n]) for n in grads}
    print(f"loss: minibert {loss:.12f}, PyTorch {reference_trace.meta['loss']:.12f}")
    for n in sorted(worst, key=worst.get, reverse=True)[:4]:
        print(f"  {n:50s} {worst[n]:.1e}")
    print(f"worst of {len(worst)} parameters: {max(worst.values()):.1e} (tolerance 1e-10)")
    assert max(worst.values()) <= 1e-10 and abs(loss - reference_trace.meta["loss"]) < 1e-12

# %% [markdown]
# ## 9. The gradient trace: where does a wrong backward begin?
# A wrong backward anywhere makes (almost) every parameter gradient below it wrong, so the
# list of wrong parameters does not tell you where the bug is. `train.trace_grads` records,
# **in backward order** (from the loss down), `d loss / d value` at every named step of the
# forward pass (the names of `model.trace`, notebook 5) and `d loss / d parameter`;
# `minibert.compare` walks it against a reference and names the **first** entry that
# differs: the bug is in the step just before it.
#
# Reference: PyTorch's trace when PyTorch is installed; otherwise our own correct trace
# (which the cell above proved equal to PyTorch's).
#
# We plant the softmax bug from section 4 (`dx = y dy`, no row sum) in `minibert.ops`: the
# model runs on the NumPy backend, whose functions are `ops`', so it now calls the wrong one.

# %%
clean = train.trace_grads(clf, **batch)
reference_for_trace = reference_trace if reference_trace is not None else clean
print("reference:", reference_for_trace.meta["producer"])
print("backward order, first 8 of", len(clean), ":", list(clean)[:8])

right_softmax_backward = ops.softmax_backward
ops.softmax_backward = lambda dy, y: y * dy  # the planted bug
try:
    buggy = train.trace_grads(clf, **batch)
finally:
    ops.softmax_backward = right_softmax_backward  # always put the right one back

result = minibert.compare(buggy, reference_for_trace)
print("first failure:", result.first_failure.name)
assert result.first_failure.name == "encoder.layer.1.attention.self.scores"

# %% [markdown]
# The first wrong value is `d loss / d scores` of **layer 1**, the last layer: the backward
# pass meets it first. Everything before it in backward order (the classifier, the pooler,
# the feed-forward block, `d probs`) is still right, because the softmax's backward had not
# run yet. The plot shows the error of each entry in backward order: rounding, then from the
# planted step on, wrong nearly everywhere. The few right entries just after it are the
# value projection's: `d V = Pᵀ d C` never goes through the softmax's backward. Below them,
# everything (layer 0, the embeddings) is wrong, which is why the *first* failure, not the
# list of failures, locates the bug.

# %%
names = [row.name for row in result.rows]
errs = np.array([row.max_abs_error if np.isfinite(row.max_abs_error) else np.nan for row in result.rows])
first = names.index(result.first_failure.name)
fig, ax = plt.subplots(figsize=(9, 3.2))
ax.semilogy(np.arange(len(names)), np.maximum(errs, 1e-18), ".", ms=4)
ax.axvline(first, color="C3", lw=1, label=f"first failure: {names[first]}")
ax.axhline(1e-10, color="grey", ls="--", lw=1, label="tolerance (float64, scale 1)")
ax.set(xlabel="entry of the gradient trace, in backward order (loss -> embeddings)",
       ylabel="max |ours - reference|", title="a planted backward bug: softmax without the row sum")
ax.legend(fontsize=8, loc="lower right")
plt.show()
print(result.table().splitlines()[0])
for row in result.rows[first - 2: first + 2]:
    print(f"  {row.name:50s} {row.status:8s} {row.max_abs_error:.1e}")

# %% [markdown]
# ## Exercises
# Each exercise has a solution cell (between `### BEGIN SOLUTION` and `### END SOLUTION`:
# replace it with your own code) and a check cell that must pass. The checks are functions
# in [`exercise_checks.py`](exercise_checks.py) that compare your answer with finite
# differences or with a measurement; none needs PyTorch.
#
# **Exercise 1. Derive: cross-entropy with ignored labels.** PyTorch's `cross_entropy` (and
# BERT's masked-LM loss, notebook 7) skips rows whose label is `-100` and averages over the
# rows it keeps. Derive `d loss / d logits` and write `cross_entropy_grad(logits, labels)`
# returning it (`[N, C]`). Before you write it: what is the gradient of an ignored row? What
# do you divide by? It must work for logits in the thousands, too.

# %%
def cross_entropy_grad(logits, labels):  # [N, C], [N] ints (-100 = ignored) -> [N, C]
    ### BEGIN SOLUTION
    keep = labels != -100  # [N]
    z = logits - logits.max(-1, keepdims=True)  # [N, C], shifted: exp cannot overflow
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)  # [N, C]
    p[keep, labels[keep]] -= 1  # p - onehot on the kept rows
    p[~keep] = 0  # ignored rows do not touch the loss
    return p / keep.sum()  # the mean over the kept rows
    ### END SOLUTION


# %%
check.cross_entropy_grad(cross_entropy_grad)
### BEGIN HIDDEN TESTS
g = cross_entropy_grad(np.zeros((3, 4)), np.array([1, -100, 1]))
assert np.allclose(g.sum(-1), 0) and np.allclose(g[0], [0.125, -0.375, 0.125, 0.125])
### END HIDDEN TESTS
print("Exercise 1 passed")

# %% [markdown]
# **Exercise 2. Vary: RMSNorm.** Many newer models (T5, LLaMA) replace LayerNorm by
# **RMSNorm**: no mean, no bias, `y = x r w` with `r = 1 / sqrt(mean(x²) + ε)` over the last
# axis. Derive its backward the way section 2 did (which term disappears, which stays?) and
# write `rms_norm_backward(dy, x, weight, eps)` returning `(dx, dweight)` for `x` of any
# shape `[..., H]`.

# %%
def rms_norm_backward(dy, x, weight, eps):  # [..., H], [..., H], [H] -> [..., H], [H]
    ### BEGIN SOLUTION
    r = 1 / np.sqrt((x * x).mean(-1, keepdims=True) + eps)  # [..., 1]
    xhat = x * r  # [..., H]
    g = dy * weight  # [..., H], d loss / d xhat
    dx = r * (g - xhat * (g * xhat).mean(-1, keepdims=True))  # [..., H]: no mean term, r's term stays
    dweight = (dy * xhat).reshape(-1, x.shape[-1]).sum(0)  # [H]
    return dx, dweight
    ### END SOLUTION


# %%
check.rms_norm_backward(rms_norm_backward)
print("Exercise 2 passed")

# %% [markdown]
# **Exercise 3. Predict: where does the trace flag each bug?** Four more bugs, each planted
# in one `ops` backward function of the model of section 8 (classifier on the pooler, two
# layers). For each, predict the **first** name `minibert.compare` reports (a step like
# `encoder.layer.1.output.dense`, or a parameter like `pooler.dense.weight`) before running
# anything. Think about the backward order (what runs first?), which values the wrong function
# produces, and which are computed before it. Then check; if a prediction is wrong, run
# `train.trace_grads` with the bug planted and read `result.table()`. The bugs are in
# `check.PLANTED`:
#
# 1. `gelu_backward returns gelu(x) * dy`: the function instead of its derivative;
# 2. `attention_context_backward: dV = P dC, P not transposed`;
# 3. `tanh_backward returns 1 - x^2`: the formula applied to the input instead of the output
#    (the pooler's activation);
# 4. `embedding_backward keeps the last of repeated ids`: `dtable[ids] = dy`.

# %%
def first_failures():  # -> {bug: the first name compare reports}
    ### BEGIN SOLUTION
    return {
        # d loss / d (intermediate.dense output) = act_backward(...) is the first wrong value, in layer 1
        "gelu_backward returns gelu(x) * dy": "encoder.layer.1.intermediate.dense",
        # dP is right (it uses V, not P); dV is the first wrong one, tapped under the value step of layer 1
        "attention_context_backward: dV = P dC, P not transposed": "encoder.layer.1.attention.self.value",
        # the pooler runs first in backward order: d loss / d pooler.dense output
        "tanh_backward returns 1 - x^2": "pooler.dense",
        # lookups go positions (no repeats), then token types (ids 0 and 1, repeated), then words
        "embedding_backward keeps the last of repeated ids": "embeddings.token_type_embeddings.weight",
    }
    ### END SOLUTION


# %%
check.first_failures(first_failures)
print("Exercise 3 passed")

# %% [markdown]
# ## What you have seen
# * Each backward is the chain rule applied to one small function; the traps are the
#   dependencies that are easy to forget (LayerNorm's mean, softmax's row sum, repeated ids).
# * Finite differences check any backward without trusting its derivation; PyTorch's autograd
#   checks it against an independent implementation.
# * `train.value_and_grad` chains these functions through BERT, equal to PyTorch to float64
#   rounding; the gradient trace names the step where a wrong backward begins.
#
# Next, notebook 9 uses these gradients to fine-tune a model. More: `docs/training.md`
# (gradients, optimiser, training loop, the measured runs).
