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
# The shared set-up (`tutorials/tutorial_setup.py`, notebook 1) puts this checkout's
# `minibert` first on the path and converts the model the first time.

# %%
import tutorial_setup  # tutorials/tutorial_setup.py: this checkout's minibert, the shared helpers
MODEL = tutorial_setup.default_model()  # weights/all-MiniLM-L6-v2.h5, converted the first time

# %%
import math

import matplotlib.pyplot as plt
import numpy as np

import exercise_checks as check  # the exercises' checks (tutorials/exercise_checks.py)
import minibert
from minibert.tokenizer import Tokenizer

model = minibert.load(MODEL, backend="numpy")  # the readable NumPy reference (notebook 6: the Numba backend)
tokenizer = Tokenizer.from_file(MODEL)
cfg = model.config
w = model.weights  # Hugging Face name -> NumPy array (float32)
H, I, A, L = cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads, cfg.num_hidden_layers
D, eps = H // A, cfg.layer_norm_eps
print(f"H={H}, I={I}, A={A}, L={L}, layer_norm_eps={eps}")

# %% [markdown]
# We record every named step of one forward pass with `model.trace` (notebook 2's tap, built
# in) and start from the
# attention context of layer 0, which notebook 3 computed by hand.

# %%
text = "The cat sat on the mat because it was tired."
input_ids = np.array([tokenizer.encode(text)["input_ids"]])  # [1, T]
seen = model.trace(input_ids)  # every named step, by name: notebook 2's recording tap, built in
x = seen["embeddings.LayerNorm"]  # [1, T, H], the input of layer 0
context = seen["encoder.layer.0.attention.self.context"]  # [1, T, H], heads merged
out = model(input_ids, output_hidden_states=True)
tokens, T = tokenizer.convert_ids_to_tokens(input_ids[0]), input_ids.shape[1]
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
# How big is what attention adds, compared with what it is added to? Measured per token, in
# every layer (the input `x` of each layer is the previous layer's output):

# %%
print("|x| per token, layer 0:            ", np.linalg.norm(x[0], axis=-1).round(1))
print("|attention out| per token, layer 0:", np.linalg.norm(h[0], axis=-1).round(1))
for i in range(L):
    layer_in = seen["embeddings.LayerNorm" if i == 0 else f"encoder.layer.{i - 1}.output.LayerNorm"]  # [1, T, H]
    ratio = np.linalg.norm(seen[f"encoder.layer.{i}.attention.output.dense"][0], axis=-1) / np.linalg.norm(layer_in[0], axis=-1)  # [T]
    print(f"layer {i}: |attention out| / |x| from {ratio.min():.2f} to {ratio.max():.2f}")

# %% [markdown]
# Not a small nudge: attention adds a vector from about a tenth to about the whole size of
# the one it is added to, depending on the token and the layer. The sum is then normalised by
# LayerNorm, so what matters is the direction it gives to the sum.

# %% [markdown]
# ## The feed-forward network
# Each token goes through a two-layer network on its own: widen from `H` to `I = 4H`, apply
# **GELU**, and come back to `H`. GELU is `x * Phi(x)` with `Phi` the normal distribution's
# CDF: `0.5 x (1 + erf(x / sqrt(2)))`. transformers' `hidden_act="gelu"`, the setting of our
# model and the one minibert implements, is this exact form. (Google's original TensorFlow
# BERT code computed the tanh approximation below under the name `gelu`; the two differ by
# less than 0.001, measured below, so checkpoints move between them with tiny changes.)

# %%
erf = np.vectorize(math.erf, otypes=[np.float64])  # NumPy has no erf; math.erf is exact


def gelu(x):  # [...] -> [...]
    return (0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))).astype(x.dtype)


z = np.linspace(-4, 4, 401)
plt.figure(figsize=(6, 3.5))
plt.plot(z, np.maximum(z, 0), label="ReLU", linestyle=":")
plt.plot(z, gelu(z), label="GELU (exact, BERT)")
plt.plot(z, 0.5 * z * (1 + np.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z**3))), label="GELU (tanh approx.)", linestyle="--")
plt.xlabel("input z")
plt.ylabel("activation(z)")
plt.legend()
plt.title("GELU lets small negative values through")
plt.show()
tanh_gelu = 0.5 * z * (1 + np.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z**3)))
print(f"largest |exact GELU - tanh approximation| on [-4, 4]: {np.abs(gelu(z) - tanh_gelu).max():.1e}")

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
# ## Contextual embeddings: the same word, different vectors
# The word-embedding table gives "bank" one vector, whatever the sentence. After the layers,
# each "bank" has gathered information from its neighbours. Two sentences about river banks,
# two about money banks: the cosine similarity of the "bank" vectors, layer by layer.

# %%
bank_sentences = ["He sat on the bank of the river.", "The river bank was muddy after the rain.",
                  "She deposited cash at the bank.", "The bank raised its interest rates."]
bank = []  # 4 lists of L + 1 vectors [H]
for sentence in bank_sentences:
    ids_s = np.array([tokenizer.encode(sentence)["input_ids"]])
    states_s = model(ids_s, output_hidden_states=True).hidden_states  # L + 1 arrays [1, T, H]
    at = tokenizer.convert_ids_to_tokens(ids_s[0]).index("bank")
    bank.append([s[0, at] for s in states_s])


def cos(a, b):  # [H], [H] -> float
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


same_sense = [np.mean([cos(bank[0][i], bank[1][i]), cos(bank[2][i], bank[3][i])]) for i in range(L + 1)]
other_sense = [np.mean([cos(bank[a][i], bank[b][i]) for a in (0, 1) for b in (2, 3)]) for i in range(L + 1)]
plt.figure(figsize=(7, 3.5))
plt.plot(range(L + 1), same_sense, "o-", label="same sense (river-river, money-money)")
plt.plot(range(L + 1), other_sense, "s-", label="different sense (river-money)")
plt.xticks(range(L + 1), ["emb."] + [f"after {i}" for i in range(L)])
plt.xlabel("hidden state (embeddings, then after each layer)")
plt.ylabel('cosine of the two "bank" vectors')
plt.legend()
plt.title('"bank" in context')
plt.show()
print("same sense: ", np.round(same_sense, 3))
print("other sense:", np.round(other_sense, 3))
assert same_sense[-1] > other_sense[-1] and same_sense[0] < other_sense[0]

# %% [markdown]
# After the embeddings the four vectors differ only by position and are all very similar
# (here the river-money pairs even come out slightly closer). From the first layer on, the
# two senses separate: the vectors are *contextual*. That is what sets BERT (and ELMo before
# it) apart from fixed word vectors such as word2vec's, one vector per word whatever the
# sentence.

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
# Each exercise has a solution cell (between `### BEGIN SOLUTION` and `### END SOLUTION`:
# replace it with your own code) and a check cell that must pass. The checks are functions
# in [`exercise_checks.py`](exercise_checks.py).
#
# **Exercise 1. Count the parameters from the config alone.** Write
# `count_parameters(cfg)` returning `(per_layer, total)`: the parameters of one encoder
# layer, and of the whole model (embeddings + `L` layers + pooler). Use only the config's
# fields (`hidden_size`, `intermediate_size`, `num_hidden_layers`, `vocab_size`,
# `max_position_embeddings`, `type_vocab_size`); remember biases and LayerNorms. The check
# tries MiniLM, a model of an unusual shape and the published sizes of BERT-base and
# BERT-large. The next section uses your function.

# %%
def count_parameters(cfg):  # BertConfig -> (per_layer, total)
    ### BEGIN SOLUTION
    H, I = cfg.hidden_size, cfg.intermediate_size
    attention = 4 * (H * H + H) + 2 * H  # Q, K, V, output dense; one LayerNorm
    feed_forward = (H * I + I) + (I * H + H) + 2 * H  # two dense layers; one LayerNorm
    per_layer = attention + feed_forward
    embeddings = (cfg.vocab_size + cfg.max_position_embeddings + cfg.type_vocab_size) * H + 2 * H
    return per_layer, embeddings + cfg.num_hidden_layers * per_layer + (H * H + H)
    ### END SOLUTION


# %%
check.count_parameters(count_parameters)
print(f"MiniLM: {count_parameters(cfg)[1]:,} parameters")
print("Exercise 1 passed")

# %% [markdown]
# **Exercise 2. The whole encoder in float64, your code only.** float32 keeps about 7
# significant digits. Write `last_hidden_state64(input_ids)` for a batch `[1, T]`: the
# embeddings (notebook 2) and your `encoder` above, all in float64 with float64 weights
# (from `minibert.load(MODEL, dtype="float64")`), returning `[1, T, H]` float64. The check
# compares with minibert's float64 model to 1e-10 relative, on new sentences, and **blocks
# minibert's forward pass while your function runs**: use minibert only for the weights.
# (`bert_layer` reads the global `w`; swap it for the float64 weights and back.)

# %%
model64 = minibert.load(MODEL, dtype="float64", backend="numpy")


def last_hidden_state64(input_ids):  # [1, T] -> [1, T, H] float64
    ### BEGIN SOLUTION
    global w
    saved, w = w, model64.weights  # the functions above read the global `w`
    try:
        T = input_ids.shape[1]
        x = (w["embeddings.word_embeddings.weight"][input_ids] + w["embeddings.token_type_embeddings.weight"][0]
             + w["embeddings.position_embeddings.weight"][:T])  # [1, T, H]
        x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])  # [1, T, H]
        return encoder(x, np.ones(input_ids.shape, np.int64))[-1]  # [1, T, H]
    finally:
        w = saved
    ### END SOLUTION


# %%
check.last_hidden_state64(last_hidden_state64)
states64 = last_hidden_state64(input_ids)
print(f"float32 vs float64 on our sentence: max difference {np.abs(states[-1] - states64).max():.1e}")
print("Exercise 2 passed")

# %% [markdown]
# ## Model sizes and compute
# The same architecture comes in many sizes. With your `count_parameters`: Google's four
# compact BERTs (Turc et al. 2019), MiniLM, and the paper's BERT-base and BERT-large.
#
# **Compute.** A matrix product `[T, in] @ [in, out]` costs `2 * in * out` floating-point
# operations (FLOPs) per token (a multiply and an add). Per token and per layer: the four
# `H x H` projections and the two feed-forward matrices, `2 * (4 H^2 + 2 H I)`, which does
# not depend on `T`; plus attention itself, `q k^T` and `probs @ v`, `2 * 2 * T * H`, which
# grows with `T`. Per sequence, attention's part is `4 T^2 H` per layer: the **O(T^2)** cost
# that limits BERT to short inputs. We count the matrix products only: the embeddings are
# lookups, and the softmax, GELU and LayerNorms cost a few operations per number, far less.

# %%
def flops_per_token(c, T):  # BertConfig, sequence length -> forward FLOPs per token (matrix products)
    H, I = c.hidden_size, c.intermediate_size
    return c.num_hidden_layers * (2 * (4 * H * H + 2 * H * I) + 4 * T * H)


sizes = {name: minibert.BertConfig.preset(name) for name in ("bert-tiny", "bert-mini", "bert-small", "bert-medium")}
sizes["MiniLM-L6 (ours)"] = cfg
sizes["BERT-base"] = minibert.BertConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
sizes["BERT-large"] = minibert.BertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
print(f"{'model':18s} {'L':>3s} {'H':>5s} {'parameters':>13s} {'embeddings':>11s} {'GFLOPs/token T=128':>19s} {'attention share T=512':>22s}")
for name, c in sizes.items():
    per_layer, total = count_parameters(c)
    emb_share = 1 - (c.num_hidden_layers * per_layer + c.hidden_size**2 + c.hidden_size) / total
    attn_share = c.num_hidden_layers * 4 * 512 * c.hidden_size / flops_per_token(c, 512)
    print(f"{name:18s} {c.num_hidden_layers:3d} {c.hidden_size:5d} {total:13,d} {emb_share:10.0%} "
          f"{flops_per_token(c, 128) / 1e9:19.3f} {attn_share:21.0%}")

# %% [markdown]
# The small models are mostly embedding table (the 30522 x H rows); the big ones mostly
# layers. The figure: FLOPs per token against sequence length, and the share of them spent in
# attention. The dense layers cost the same per token at any length; attention's cost per
# token grows with `T`, so its share rises, fastest for the narrow models (attention grows
# like `T H`, the dense part like `H^2`).

# %%
lengths = np.arange(16, 513, 16)
fig, axes = plt.subplots(1, 2, figsize=(12, 4))
for name, c in sizes.items():
    per_token = np.array([flops_per_token(c, t) for t in lengths])
    axes[0].semilogy(lengths, per_token, label=name)
    axes[1].plot(lengths, c.num_hidden_layers * 4 * lengths * c.hidden_size / per_token, label=name)
axes[0].set(xlabel="sequence length T (max 512)", ylabel="forward FLOPs per token (log scale)",
            title="compute per token")
axes[1].set(xlabel="sequence length T (max 512)", ylabel="attention's share of the FLOPs",
            title="attention grows with T (so per sequence, with T²)")
axes[1].legend(fontsize=8)
plt.show()
