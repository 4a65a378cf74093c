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
from minibert.tokenizer import Tokenizer

model = minibert.load(MODEL, backend="numpy")  # the readable NumPy reference (notebook 6: the Numba backend)
tokenizer = Tokenizer.from_file(MODEL)
cfg = model.config
w = model.weights  # Hugging Face name -> NumPy array (float32)
H, A, L = cfg.hidden_size, cfg.num_attention_heads, cfg.num_hidden_layers
D = H // A
print(f"H={H}, A={A} heads, D={D} numbers per head, L={L} layers")

# %% [markdown]
# ## The input: a real sentence after the embeddings
# We run minibert, and trace it (`model.trace` records every named step, notebook 2's tap), and take
# the input of layer 0: the output of the embeddings, `x` of shape `[1, T, H]`.

# %%
text = "The cat sat on the mat because it was tired."
input_ids = np.array([tokenizer.encode(text)["input_ids"]])  # [1, T]
tokens = tokenizer.convert_ids_to_tokens(input_ids[0])
T = len(tokens)

out = model(input_ids, output_attentions=True)
seen = model.trace(input_ids)  # every named step, by name: a tap that records (notebook 2), built in
x = seen["embeddings.LayerNorm"]  # [1, T, H], the input of layer 0
print(tokens)
print("x", x.shape)

# %% [markdown]
# ## A worked example with two words (from The Illustrated Transformer)
# Jay Alammar's walk-through uses two words, "Thinking Machines", and one head with `D = 64`.
# Say the query of "Thinking" scores 112 against its own key and 96 against the key of
# "Machines". Divide by `sqrt(64) = 8`: 14 and 12. Softmax: `e^14 / (e^14 + e^12) = 0.88` and
# `0.12`. The output for "Thinking" is `0.88 v_Thinking + 0.12 v_Machines`. With made-up
# two-number values:

# %%
toy_scores = np.array([112.0, 96.0]) / np.sqrt(64)  # [2]: 14, 12
toy_probs = np.exp(toy_scores - toy_scores.max()) / np.exp(toy_scores - toy_scores.max()).sum()  # [2]
toy_values = np.array([[1.0, 0.0], [0.0, 1.0]])  # [2, 2]: v_Thinking, v_Machines
print("scores / 8:", toy_scores, " probabilities:", toy_probs.round(2), " output:", (toy_probs @ toy_values).round(2))

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
# **Scores.** Row `i`, column `j` is how well query `i` matches key `j`. The dot product of
# two vectors of `D` independent components of mean 0 and variance 1 has mean 0 and standard
# deviation `sqrt(D)`; dividing by `sqrt(D)` brings the scores back to a spread that does not
# depend on the head size, which keeps the softmax from saturating (measured below, in "Why
# divide by sqrt(D)?").

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
# ## Bidirectional, not causal: BERT's defining choice
# Every token of BERT attends to every other token, before and after it: the model is
# **bidirectional**. A GPT-style language model uses a **causal** mask instead: query `i` may
# only look at keys `j <= i`, so that it can be trained to predict the next token without
# seeing it. The causal mask is one more bias added to the scores, `finfo.min` above the
# diagonal:

# %%
T_demo = 6
causal_bias = np.triu(np.full((T_demo, T_demo), np.finfo(np.float32).min, np.float32), k=1)  # [T, T], 0 on and below the diagonal
fig, axes = plt.subplots(1, 2, figsize=(7, 3.2))
for ax, allowed, title in [(axes[0], np.ones((T_demo, T_demo)), "BERT: bidirectional"), (axes[1], causal_bias == 0, "GPT: causal")]:
    ax.imshow(allowed, cmap="Greens", vmin=0, vmax=1)
    ax.set(title=title, xlabel="key j", ylabel="query i")
fig.suptitle("which keys each query may attend to (green)")
plt.show()

# %% [markdown]
# **Experiment.** Change the *last* word of a sentence ("tired" -> "hungry") and measure how
# much each position's final vector changes. We run the real model as it is (bidirectional),
# and the same weights with a causal bias added to the scores of every layer (a `patch`, see
# notebook 5). The causal run is not a model anyone trained, it only shows which tokens *can*
# be influenced: with a causal mask, nothing before the change can see it.

# %%
def causal(scores):  # [B, A, T, T] -> the same scores with finfo.min above the diagonal
    T = scores.shape[-1]
    return scores + np.triu(np.full((T, T), np.finfo(scores.dtype).min, scores.dtype), k=1)


causal_patch = {f"encoder.layer.{i}.attention.self.scores": causal for i in range(L)}
last = f"encoder.layer.{L - 1}.output.LayerNorm"
pair_ids = [np.array([tokenizer.encode(t)["input_ids"]]) for t in (text, text.replace("tired", "hungry"))]
change = {}
for name, patch in [("bidirectional (BERT)", None), ("causal mask", causal_patch)]:
    a, b = (model.trace(i, only=[last], patch=patch)[last][0] for i in pair_ids)  # [T, H] each
    change[name] = np.linalg.norm(a - b, axis=-1)  # [T]
changed_at = tokens.index("tired")
assert np.all(change["causal mask"][:changed_at] == 0)  # nothing before the change moved
assert np.all(change["bidirectional (BERT)"][:changed_at] > 0)  # everything moved

fig, ax = plt.subplots(figsize=(9, 3.2))
for k, (name, c) in enumerate(change.items()):
    ax.bar(np.arange(T) + 0.4 * k - 0.2, c, width=0.4, label=name)
ax.set_xticks(range(T), [f"{t}" for t in tokens], rotation=45)
ax.axvline(changed_at, color="grey", linestyle=":")
ax.set(ylabel="|change of final vector|", title='"tired" -> "hungry": which positions change?')
ax.legend()
plt.show()

# %% [markdown]
# ## Why divide by sqrt(D)?
# First the statistics: for random `q` and `k` with independent components of variance 1,
# the standard deviation of `q · k` is `sqrt(D)`.

# %%
rng = np.random.default_rng(0)
head_sizes = [4, 16, 32, 64, 128, 256]
spread = [(rng.standard_normal((20000, d)) * rng.standard_normal((20000, d))).sum(-1).std() for d in head_sizes]
for d, sd in zip(head_sizes, spread):
    print(f"D = {d:3d}: std of q.k = {sd:6.2f}   sqrt(D) = {np.sqrt(d):6.2f}")

# %% [markdown]
# Then the effect on the real model: for every layer, the probabilities with the trained
# scaling, `softmax(q k^T / sqrt(D))`, and without it, `softmax(q k^T)`, from the same
# queries and keys. Two summaries per row: the largest probability, and the **entropy**
# `-sum p log p` (in nats; 0 when one key gets everything, `log T` when attention is
# uniform). Without the division the softmax is much sharper: most rows put nearly all their
# weight on one key. Vaswani et al. (2017, section 3.2.1) give this as the reason for the
# scaling: large dot products push the softmax "into regions where it has extremely small
# gradients", which makes training slow.

# %%
def entropy_of(probs):  # [..., T] -> [...], in nats, with 0 log 0 = 0
    return -np.where(probs > 0, probs * np.log(np.where(probs > 0, probs, 1)), 0).sum(-1)


qk = model.trace(input_ids, only=["encoder.layer.*.attention.self.query", "encoder.layer.*.attention.self.key"])
summary = {"with 1/sqrt(D)": ([], []), "without": ([], [])}
for i in range(L):
    q_i = split_heads(qk[f"encoder.layer.{i}.attention.self.query"])  # [1, A, T, D]
    k_i = split_heads(qk[f"encoder.layer.{i}.attention.self.key"])  # [1, A, T, D]
    raw = q_i @ k_i.transpose(0, 1, 3, 2)  # [1, A, T, T]
    for name, s in [("with 1/sqrt(D)", raw / np.sqrt(D)), ("without", raw)]:
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)  # [1, A, T, T]
        summary[name][0].append(entropy_of(p).mean())
        summary[name][1].append(p.max(-1).mean())
for name, (ent, top) in summary.items():
    print(f"{name:15s} mean entropy per layer {np.round(ent, 2)}  mean max probability {np.round(top, 2)}")
print(f"uniform attention over T = {T} keys: entropy log T = {np.log(T):.2f}")
assert all(a > b for a, b in zip(*(summary[n][0] for n in summary)))  # unscaled is sharper in every layer

fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
for name, (ent, top) in summary.items():
    axes[0].plot(range(L), ent, "o-", label=name)
    axes[1].plot(range(L), top, "o-", label=name)
axes[0].axhline(np.log(T), color="grey", linestyle=":", label="uniform (log T)")
axes[0].set(xlabel="layer", ylabel="mean entropy (nats)", title="attention entropy")
axes[1].set(xlabel="layer", ylabel="mean of each row's max", title="largest probability per row", ylim=(0, 1.05))
axes[0].legend()
axes[1].legend()
plt.show()

# %% [markdown]
# ## Attention heat maps of a real sentence
# Every layer has its own heads. Some look at the next or previous token, some mostly at
# `[CLS]` or `[SEP]`, some at words related to the query's word. Here are all heads of
# layers 0 and 5 for our sentence (rows: the query token, columns: the key token it looks at).

# %%
def plot_heads(attentions, layer, tokens):  # attentions: L arrays [1, A, T, T]
    fig, axes = plt.subplots(3, A // 3, figsize=(4.2 * A // 3, 12.6))
    for head, ax in enumerate(axes.flat):
        ax.imshow(attentions[layer][0, head], cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"layer {layer}, head {head}", fontsize=9)
        ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=7)
        ax.set_yticks(range(len(tokens)), tokens, fontsize=7)
    fig.suptitle(f"layer {layer}: rows = query tokens, columns = key tokens", y=0.995)
    fig.tight_layout()
    plt.show()


for layer in (0, L - 1):
    plot_heads(out.attentions, layer, tokens)

# %% [markdown]
# ## The same attention, to explore
# `minibert.view` puts every head of every layer in one interactive page that needs no network
# (`minibert view MODEL.h5 "text" --out view.html` writes the same page to a file). In the
# **head view**, choose a layer, click a head's colour to toggle it (double-click: that head
# only) and hover a token to keep only its lines. The **model view** shows all layers x heads
# as small heat maps (click one to open it); the **step view** lists every step of the forward
# pass with its statistics and a histogram of its values.

# %%
from minibert.view import decode_attention

page = minibert.view(model, text)  # traces the text; page.save("attention.html") writes the page to a file
stored = decode_attention(page.data["attention"][L - 1]["data"], A, T)  # the last layer as the page holds it: [A, T, T]
assert np.abs(stored - out.attentions[L - 1][0]).max() < 1e-5  # the page's numbers are the model's (stored to 7.6e-6)
page  # the last expression of a cell: the page itself, shown in the notebook

# %% [markdown]
# ## Where the attention goes: `[CLS]`, `[SEP]` and "attention sinks"
# Many heads put much of their weight on `[CLS]` or `[SEP]`, tokens that carry little meaning
# of their own. A common reading (Clark et al. 2019, "What does BERT look at?", on BERT-base;
# Xiao et al. 2023 call such tokens *attention sinks*) is that a head with nothing useful to
# gather parks its probability there: the softmax must put 1 somewhere. We measure, for each
# layer, the average probability that the real word tokens give to `[CLS]`, to `[SEP]`, to
# themselves and to the other words, over a few sentences and all heads.

# %%
sink_texts = [text, "I went to the bank to deposit my salary.", "A man is playing a guitar on stage tonight.",
              "Stock markets fell sharply after the announcement."]
shares = np.zeros((L, 4))  # [L, 4]: [CLS], [SEP], itself, other words
for t in sink_texts:
    ids_t = np.array([tokenizer.encode(t)["input_ids"]])
    att = model(ids_t, output_attentions=True).attentions  # L arrays [1, A, T, T]
    n = ids_t.shape[1]
    for i in range(L):
        rows = att[i][0][:, 1 : n - 1]  # [A, T-2, T]: the word tokens' rows
        to_self = np.stack([rows[:, r, r + 1] for r in range(n - 2)], axis=1)  # [A, T-2]
        shares[i] += [rows[..., 0].mean(), rows[..., n - 1].mean(), to_self.mean(), 0]
shares /= len(sink_texts)
shares[:, 3] = 1 - shares[:, :3].sum(1)
for i in range(L):
    print(f"layer {i}: [CLS] {shares[i, 0]:.2f}  [SEP] {shares[i, 1]:.2f}  itself {shares[i, 2]:.2f}  other words {shares[i, 3]:.2f}")

fig, ax = plt.subplots(figsize=(8, 3.5))
bottom = np.zeros(L)
for k, label in enumerate(["[CLS]", "[SEP]", "itself", "other words"]):
    ax.bar(range(L), shares[:, k], bottom=bottom, label=label)
    bottom += shares[:, k]
ax.set(xlabel="layer", ylabel="mean attention of a word token", title="all-MiniLM-L6-v2: where word tokens look")
ax.legend(loc="upper right", fontsize=8)
plt.show()

# %% [markdown]
# In this model the word tokens of layers 1 to 4 give more than half of their attention
# (0.55 to 0.60) to `[CLS]` and little to `[SEP]`. That is a property of *this* model: all-MiniLM-L6-v2 was
# distilled from a larger model (MiniLM) and then fine-tuned contrastively for sentence
# embeddings. Clark et al. found a different pattern in BERT-base (much attention on `[SEP]`
# in the middle layers). Measure before you generalise from one model.
#
# ## Does a head "resolve" pronouns? A minimal-pair experiment
# Look at the last layer's grid: in head 11, "it" looks mostly at "cat", and it is tempting
# to say the head links the pronoun to the noun it stands for. Test it: keep everything the
# same but change what "it" refers to, with one word. If the head followed the meaning, its
# choice would change with the referent.

# %%
minimal_pairs = [  # (sentence, the noun "it" refers to)
    ("The cat sat on the mat because it was tired.", "cat"),
    ("The cat sat on the mat because it was soft.", "mat"),
    ("The dog chased the ball because it was hungry.", "dog"),
    ("The dog chased the ball because it was round.", "ball"),
    ("The trophy did not fit in the suitcase because it was too big.", "trophy"),
    ("The trophy did not fit in the suitcase because it was too small.", "suitcase"),
]
layer, head = L - 1, 11
picked = []
for sentence, referent in minimal_pairs:
    ids_s = np.array([tokenizer.encode(sentence)["input_ids"]])
    toks = tokenizer.convert_ids_to_tokens(ids_s[0])
    row = model(ids_s, output_attentions=True).attentions[layer][0, head, toks.index("it")]  # [T]
    picked.append(toks[row.argmax()])
    print(f"{sentence:66s} 'it' means {referent:9s} head looks most at {picked[-1]:8s} ({row.max():.2f})")
assert picked[0::2] == picked[1::2]  # both sentences of every pair: the same word, whatever "it" means

# %% [markdown]
# In every pair the head picks the **same** noun (the first one, the subject), whatever "it"
# refers to: it follows position or syntax, not meaning. It is "right" exactly when the
# referent happens to be the subject ("tired", "hungry", "too big").
# The lesson generalises: **attention weights are not explanations** (Jain & Wallace 2019,
# "Attention is not Explanation"; Wiegreffe & Pinter 2019). A weight says where a head read
# from, not why the model decided anything: the value vectors, the other heads and the
# layers after it all matter. Claims about what a head "does" need controlled experiments
# like this one, or interventions (notebook 5's patches).

# %% [markdown]
# ## Exercises
# Each exercise has a solution cell (between `### BEGIN SOLUTION` and `### END SOLUTION`:
# replace it with your own code) and a check cell that must pass. The checks are functions
# in [`exercise_checks.py`](exercise_checks.py).
#
# **Exercise 1. One softmax for both masks.** Write `attention_probs(scores, attention_mask,
# causal)`: from raw scaled scores `[B, A, T, T]` and a padding mask `[B, T]` (1 = real
# token), return the probabilities, with padding keys at exactly 0 and, if `causal` is True,
# also every key after the query at exactly 0. Each row must sum to 1, and it must not
# overflow for scores of several hundred. Think first: which of `np.triu` / `np.tril` hides
# the future, and what happens to a row if you zero probabilities *after* the softmax?

# %%
def attention_probs(scores, attention_mask, causal=False):  # [B, A, T, T], [B, T], bool -> [B, A, T, T]
    ### BEGIN SOLUTION
    T = scores.shape[-1]
    allowed = attention_mask[:, None, None, :] == 1  # [B, 1, 1, T]: real keys
    if causal:
        allowed = allowed & np.tril(np.ones((T, T), bool))  # [B, 1, T, T]: and not after the query
    s = np.where(allowed, scores, np.finfo(scores.dtype).min)  # [B, A, T, T]
    e = np.exp(s - s.max(-1, keepdims=True))  # [B, A, T, T], the largest exponent is 0
    return e / e.sum(-1, keepdims=True)
    ### END SOLUTION


# %%
check.attention_probs(attention_probs)
print("Exercise 1 passed")

# %% [markdown]
# **Exercise 2. Attention to `[CLS]` in a padded batch.** Write `attention_to_cls(attentions,
# attention_mask)`: from a model's `attentions` (`L` arrays `[B, A, T, T]`) for a *padded*
# batch, return an array `[L]`: for each layer, the mean probability given to key 0
# (`[CLS]`), averaged over all heads and over every **real** query token of every sentence
# (each real token counts once; padding rows do not count, even though they hold numbers).

# %%
def attention_to_cls(attentions, attention_mask):  # L x [B, A, T, T], [B, T] -> [L]
    ### BEGIN SOLUTION
    real = attention_mask.astype(bool)  # [B, T]
    return np.array([a[..., 0].transpose(0, 2, 1)[real].mean() for a in attentions])  # [B, T, A][real] -> [N, A]
    ### END SOLUTION


# %%
check.attention_to_cls(attention_to_cls)
### BEGIN HIDDEN TESTS
check.attention_to_cls(attention_to_cls, texts=["Hi.", "A somewhat longer sentence here.", "Medium length one."])
### END HIDDEN TESTS
print("Exercise 2 passed")
