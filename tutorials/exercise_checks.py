"""The checks of the tutorials' exercises: one function per exercise, named after it.

A notebook's check cell calls ``check.<name>(your_function)``; the function raises
``AssertionError`` with a message that says what is wrong, or returns quietly. Each check
computes what it expects in a different way from the one the exercise asks for (with minibert,
from properties the answer must have, or from a slower independent formula), so copying the
check does not answer the exercise. ``tests/test_tutorial_checks.py`` runs every check against
plausible wrong answers (listed in each docstring) and asserts that it fails on each of them.

The checks load what they need themselves (the model, the tokenizer), once per process.
"""

import functools
import math

import numpy as np

import tutorial_setup

import minibert  # noqa: E402  (tutorial_setup put this checkout first on sys.path)


@functools.lru_cache(maxsize=None)
def tokenizer():
    return minibert.Tokenizer.from_file(tutorial_setup.default_model())


@functools.lru_cache(maxsize=None)
def model(dtype="float32"):
    return minibert.load(tutorial_setup.default_model(), dtype=dtype, backend="numpy")


def _close(name, got, expected, tol):
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape, f"{name}: shape {got.shape}, expected {expected.shape}"
    assert np.all(np.isfinite(got)), f"{name}: contains NaN or inf"
    err = float(np.abs(got.astype(np.float64) - expected.astype(np.float64)).max()) if got.size else 0.0
    assert err <= tol, f"{name}: off by up to {err:.3g} (tolerance {tol:.0e})"


# --- 01 tokenization ---------------------------------------------------------------------

PAIR_CASES = [
    ("Where is the cat?", "On the mat.", 64),  # nothing to cut
    ("one two three four five six seven eight nine ten", "eleven twelve", 9),  # only A is cut
    ("one two", "three four five six seven eight nine ten eleven twelve", 9),  # only B is cut
    ("one two three four five six", "seven eight nine ten eleven twelve", 10),  # tie: B loses the odd one
    ("one two three four five six seven", "eight nine ten eleven twelve", 8),  # longer first, then both
]


def encode_pair(encode_pair, cases=PAIR_CASES):
    """01 Exercise 1: ``encode_pair(a, b, max_length)`` with longest-first truncation.

    Expected: minibert's tokenizer (``encode(a, b, max_length=..., truncation=True)``), itself
    tested token for token against transformers. Catches: no truncation; cutting A only;
    forgetting that the three special tokens count; cutting from the front; giving the odd
    token to A; typing the last [SEP] 0.
    """
    tok = tokenizer()
    for a, b, max_length in cases:
        expected = tok.encode(a, b, max_length=max_length, truncation=True)
        got = encode_pair(a, b, max_length)
        assert isinstance(got, tuple) and len(got) == 2, "return (input_ids, token_type_ids)"
        ids, types = list(got[0]), list(got[1])
        assert len(ids) <= max_length, f"{a!r} + {b!r}: {len(ids)} ids, more than max_length={max_length}"
        assert ids == expected["input_ids"], (
            f"{a!r} + {b!r}, max_length={max_length}:\n  got      {tok.convert_ids_to_tokens(ids)}\n"
            f"  expected {tok.convert_ids_to_tokens(expected['input_ids'])}")
        assert types == expected["token_type_ids"], f"token types {types}, expected {expected['token_type_ids']}"


WORD_TEXTS = [
    "Héllo, World! Tokenization isn't unbelievably hard: naïve café-owners agree.",
    "Crème brûlée, s'il vous plaît.",
]


def original_words(original_words, texts=WORD_TEXTS):
    """01 Exercise 2: the substrings of the original text, one per word the tokenizer saw.

    Expected: a regular expression (letters and digits, or one other symbol), a different
    route to the same words. Catches: one entry per piece (## not glued); lower-cased or
    accent-stripped words (taken from the tokens, not the text); special tokens kept.
    """
    import re

    for text in texts:
        expected = re.findall(r"\w+|[^\w\s]", text)
        got = list(original_words(text))
        assert got == expected, f"{text!r}:\n  got      {got}\n  expected {expected}"


# --- 02 embeddings -----------------------------------------------------------------------

def _layer_norm_changes():  # change -> function of the sum [B, T, H]
    direction = np.random.default_rng(0).standard_normal(384).astype(np.float32)  # [H]

    def dimension_0(x):
        x = x.copy()
        x[..., 0] += 5
        return x

    return {
        "add 5 to every number": lambda x: x + 5,
        "multiply every number by 3": lambda x: x * 3,
        "multiply each token's vector by its own positive number": lambda x: x * np.linspace(0.5, 4, x.shape[1], dtype=x.dtype)[None, :, None],
        "multiply every number by -1": lambda x: -x,
        "add 5 to hidden dimension 0 only": dimension_0,
        "add the same vector to every token": lambda x: x + direction[: x.shape[-1]],
    }


@functools.lru_cache(maxsize=None)
def _layer_norm_measured():  # change -> True if embeddings.LayerNorm stays the same (within 1e-4)
    m, tok = model(), tokenizer()
    ids = np.array([tok.encode("The cat sat on the mat because it was tired.")["input_ids"]])
    clean = m.trace(ids, only=["embeddings.LayerNorm"])["embeddings.LayerNorm"]
    measured = {}
    for name, change in _layer_norm_changes().items():
        patched = m.trace(ids, only=["embeddings.LayerNorm"], patch={"embeddings.sum": change})["embeddings.LayerNorm"]
        measured[name] = bool(np.abs(patched - clean).max() <= 1e-4)
    return measured


def layer_norm_undoes(layer_norm_undoes):
    """02 Exercise 1: predictions of which changes to ``embeddings.sum`` LayerNorm undoes.

    Expected: measured, by patching ``embeddings.sum`` in the real model and comparing
    ``embeddings.LayerNorm`` (same = within 1e-4). Catches: "LayerNorm undoes everything";
    "it undoes nothing"; confusing a shift of every number with a shift of one dimension.
    """
    answers = layer_norm_undoes()
    measured = _layer_norm_measured()
    assert set(answers) == set(measured), f"answer exactly these changes: {sorted(measured)}"
    wrong = []
    for name, same in measured.items():
        if answers[name] is not same:
            wrong.append(f"{name!r}: measured {'unchanged' if same else 'changed'}")
    assert not wrong, "these predictions are wrong (True/False only):\n  " + "\n  ".join(wrong)


def _sinusoidal(P, H):  # the Transformer's table: columns 2i, 2i+1 = sin, cos of p * 10000^(-2i/H)
    angle = np.arange(P)[:, None] * 10000.0 ** (-np.arange(0, H, 2)[None, :] / H)  # [P, H/2]
    return np.stack([np.sin(angle), np.cos(angle)], axis=-1).reshape(P, H)  # interleaved


def shift_matrix(shift_matrix, H=384, shifts=(1, 7, 100)):
    """02 Exercise 2: ``shift_matrix(k, H)`` with ``table[p] @ M == table[p + k]`` for every p.

    Expected: the property itself, tested on many p. Catches: the transposed rotation (a
    shift by -k); frequencies indexed by i instead of 2i; the identity; M applied on the left.
    """
    table = _sinusoidal(500 + max(shifts), H)
    for k in shifts:
        M = np.asarray(shift_matrix(k, H), dtype=np.float64)
        assert M.shape == (H, H), f"shift_matrix({k}, {H}) has shape {M.shape}, expected {(H, H)}"
        for p in range(0, 500, 37):
            err = np.abs(table[p] @ M - table[p + k]).max()
            assert err < 1e-8, f"table[{p}] @ shift_matrix({k}, {H}) differs from table[{p + k}] by {err:.2g}"


# --- 03 self-attention -------------------------------------------------------------------

def _padded_batch(texts):
    tok = tokenizer()
    batch = tok.encode_batch(texts)
    return batch["input_ids"], batch["attention_mask"]


def _softmax_rows_loop(scores, allowed):  # float64, one row at a time: the slow, obvious way
    out = np.zeros(scores.shape)
    for index in np.ndindex(*scores.shape[:-1]):
        keys = np.flatnonzero(allowed[index])
        row = scores[index][keys].astype(np.float64)
        e = np.exp(row - row.max())
        out[index + (keys,)] = e / e.sum()
    return out


@functools.lru_cache(maxsize=None)
def _layer_2_attention():  # scores [B, A, T, T], probs [B, A, T, T], mask [B, T] of a padded batch
    ids, mask = _padded_batch(["The cat sat.", "The cat sat on the mat because it was tired."])
    name = "encoder.layer.2.attention.self."
    trace = model().trace(ids, attention_mask=mask, only=[name + "scores", name + "probs"])
    return trace[name + "scores"], trace[name + "probs"], mask


def attention_probs(attention_probs):
    """03 Exercise 1: ``attention_probs(scores, attention_mask, causal)``.

    Expected: without ``causal``, minibert's probabilities of layer 2 on a padded batch; with
    it, a row-by-row float64 softmax over the allowed keys. Catches: masking the past instead
    of the future (tril/triu swapped); zeroing probabilities after the softmax (rows no
    longer sum to 1); ignoring the padding mask; no max subtraction (overflow at large scores).
    """
    scores, probs, mask = _layer_2_attention()
    _close("padding only (causal=False), against minibert", attention_probs(scores, mask, False), probs, 1e-6)
    T = scores.shape[-1]
    allowed = (mask[:, None, None, :] == 1) & np.tril(np.ones((T, T), bool))  # [B, 1, T, T]
    allowed = np.broadcast_to(allowed, scores.shape)
    got = np.asarray(attention_probs(scores, mask, True))
    assert got.shape == scores.shape, f"shape {got.shape}, expected {scores.shape}"
    assert np.all(got[~allowed] == 0), "causal: a key after the query, or a padding key, has probability > 0"
    _close("causal: row sums", got.sum(-1), np.ones(scores.shape[:-1]), 1e-5)
    _close("causal, against a row-by-row softmax", got, _softmax_rows_loop(scores, allowed), 1e-6)
    big = (scores * 100).astype(np.float32)  # scores of several hundred
    _close("scores x 100 (no overflow)", attention_probs(big, mask, True), _softmax_rows_loop(big, allowed), 1e-5)


CLS_TEXTS = ["Hello!", "The cat sat on the mat because it was tired and wanted to sleep.", "Dogs bark."]


def attention_to_cls(attention_to_cls, texts=CLS_TEXTS):
    """03 Exercise 2: mean attention to key 0 per layer, over heads and real query tokens.

    Expected: explicit loops over sentences, real tokens and heads. Catches: counting the
    padding rows; averaging per sentence first (short sentences weigh as much as long ones);
    looking at the [CLS] query row instead of the [CLS] key column.
    """
    attentions, mask, expected = _attention_to_cls_expected(tuple(texts))
    _close("attention to [CLS] per layer", attention_to_cls(attentions, mask), np.array(expected), 1e-6)


@functools.lru_cache(maxsize=None)
def _attention_to_cls_expected(texts):  # -> (attentions, mask, expected [L])
    ids, mask = _padded_batch(list(texts))
    attentions = model()(ids, attention_mask=mask, output_attentions=True).attentions
    expected = []
    for a in attentions:  # [B, A, T, T]
        total, count = 0.0, 0
        for b in range(ids.shape[0]):
            for t in range(int(mask[b].sum())):
                for h in range(a.shape[1]):
                    total += float(a[b, h, t, 0])
                    count += 1
        expected.append(total / count)
    return attentions, mask, expected


# --- 04 layer, encoder, pooler -----------------------------------------------------------

PUBLISHED_SIZES = {  # parameters of the Hugging Face checkpoints, with the pooler
    "bert-base-uncased": (dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072), 109_482_240),
    "bert-large-uncased": (dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096), 335_141_888),
}


def count_parameters(count_parameters):
    """04 Exercise 1: ``count_parameters(cfg) -> (per_layer, total)`` from the config alone.

    Expected: the sizes of the real MiniLM tensors; of minibert's shape table for an unusual
    shape (I != 4H, small vocabulary, 3 token types); BERT-base and BERT-large's published
    sizes. Catches: no biases; no LayerNorms; no pooler; no position or token-type table;
    4H written instead of the config's intermediate size.
    """
    from minibert import weights

    m = model()
    odd = minibert.BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                              intermediate_size=100, max_position_embeddings=128, type_vocab_size=3)
    shapes = weights.encoder_shapes(odd)
    cases = [
        ("all-MiniLM-L6-v2", m.config, sum(a.size for n, a in m.weights.items() if n.startswith("encoder.layer.0.")),
         sum(a.size for a in m.weights.values())),
        ("H=64, I=100, V=1000, P=128, 3 token types", odd,
         sum(math.prod(s) for n, s in shapes.items() if n.startswith("encoder.layer.0.")),
         sum(math.prod(s) for s in shapes.values())),
    ]
    for name, (fields, total) in PUBLISHED_SIZES.items():
        cases.append((name, minibert.BertConfig(**fields), None, total))
    for name, cfg, per_layer, total in cases:
        got = count_parameters(cfg)
        assert isinstance(got, tuple) and len(got) == 2, "return (per_layer, total)"
        if per_layer is not None:
            assert got[0] == per_layer, f"{name}: per_layer {got[0]:,}, expected {per_layer:,}"
        assert got[1] == total, f"{name}: total {got[1]:,}, expected {total:,} (off by {got[1] - total:+,})"


ENCODER_TEXTS = ["Every layer adds its own rounding.", "Float64 keeps about sixteen digits, float32 about seven."]


@functools.lru_cache(maxsize=None)
def _last_hidden_state64(text):
    return model("float64")(np.array([tokenizer().encode(text)["input_ids"]])).last_hidden_state


def last_hidden_state64(last_hidden_state64, texts=ENCODER_TEXTS):
    """04 Exercise 2: the whole encoder in float64 with the student's own functions.

    Expected: minibert's float64 model, to 1e-10 x max(1, max|ref|), computed before the
    student's function runs; minibert's forward pass is blocked while it runs. Catches:
    calling minibert's model; float32 weights (or input) cast to float64 at the end;
    skipping the embeddings' LayerNorm.
    """
    tok = tokenizer()
    for text in texts:
        ids = np.array([tok.encode(text)["input_ids"]])
        expected = _last_hidden_state64(text)
        blocked = minibert.BertModel.__call__

        def no_minibert(*args, **kwargs):
            raise AssertionError("the check blocks minibert's forward pass: compute it with your own functions")

        minibert.BertModel.__call__ = no_minibert
        try:
            got = last_hidden_state64(ids)
        finally:
            minibert.BertModel.__call__ = blocked
        got = np.asarray(got)
        assert got.dtype == np.float64, f"dtype {got.dtype}, expected float64"
        _close(f"{text!r}: last hidden state", got, expected, 1e-10 * max(1.0, float(np.abs(expected).max())))


# --- 05 checking yourself ----------------------------------------------------------------

FAILURE_TEXTS = ("The cat sat on the mat because it was tired.", "Hello world!")


@functools.lru_cache(maxsize=None)
def _reference_trace(texts=FAILURE_TEXTS):  # minibert in float64: a stand-in for PyTorch, no torch needed
    ids, mask = _padded_batch(list(texts))
    return model("float64").trace(ids, attention_mask=mask)


def _failing_steps(patch, texts=FAILURE_TEXTS):
    ids, mask = _padded_batch(list(texts))
    result = minibert.compare(model().trace(ids, attention_mask=mask, patch=patch), _reference_trace(texts))
    return [r.name for r in result.failures]


@functools.lru_cache(maxsize=None)
def _measured_failures():  # patch name -> the steps that fail
    scores = "encoder.layer.2.attention.self.scores"
    patches = {
        "embeddings.sum x 3": {"embeddings.sum": lambda x: x * 3},
        "layer 2 scores + 5": {scores: lambda s: s + 5},
        "layer 2 scores x 3": {scores: lambda s: s * 3},
    }
    return {name: _failing_steps(patch) for name, patch in patches.items()}


def predicted_failures(predicted_failures):
    """05 Exercise 1: predicted failing steps for three patches.

    Expected: measured, by running each patch and comparing with minibert's float64 trace.
    Catches: "everything after the patch fails" (LayerNorm and softmax undo the first two);
    "only the patched step fails" (not for the scaled scores); a scale read as harmless.
    """
    answers = predicted_failures()
    all_measured = _measured_failures()
    assert set(answers) == set(all_measured), f"answer exactly these patches: {sorted(all_measured)}"
    wrong = []
    for name, measured in all_measured.items():
        predicted = list(answers[name])
        if set(predicted) != set(measured):
            missing, extra = sorted(set(measured) - set(predicted)), sorted(set(predicted) - set(measured))
            wrong.append(f"{name!r}: {len(predicted)} predicted, {len(measured)} fail; "
                         f"not predicted {missing[:3]}{'...' if len(missing) > 3 else ''}; "
                         f"predicted but pass {extra[:3]}{'...' if len(extra) > 3 else ''}")
    assert not wrong, "wrong predictions:\n  " + "\n  ".join(wrong)


def swap_heads(swap_heads, D=32):
    """05 Exercise 2: ``swap_heads(value, i, j)`` returns a copy with heads i and j exchanged.

    Expected: properties, column block by column block. Catches: the aliasing tuple swap on
    one array (head j gets its own values back); changing the input in place; swapping token
    rows instead of head columns.
    """
    rng = np.random.default_rng(0)
    value = rng.standard_normal((2, 5, 12 * D)).astype(np.float32)  # [B, T, H]
    before = value.copy()
    cols = lambda h: slice(h * D, (h + 1) * D)  # noqa: E731
    for i, j in [(0, 1), (7, 3), (5, 5)]:
        got = np.asarray(swap_heads(value, i, j))
        assert np.array_equal(value, before), "swap_heads changed its input: return a new array"
        assert got.shape == value.shape, f"shape {got.shape}, expected {value.shape}"
        assert np.array_equal(got[..., cols(i)], value[..., cols(j)]), f"swap ({i}, {j}): head {i} should hold head {j}'s values"
        assert np.array_equal(got[..., cols(j)], value[..., cols(i)]), f"swap ({i}, {j}): head {j} should hold head {i}'s values"
        others = [h for h in range(12) if h not in (i, j)]
        for h in others:
            assert np.array_equal(got[..., cols(h)], value[..., cols(h)]), f"swap ({i}, {j}): head {h} changed"


# --- 06 making it fast -------------------------------------------------------------------

def softmax_rows(softmax_rows):
    """06 Exercise 1: a Numba row softmax ``[N, K] -> [N, K]``.

    Expected: a row-by-row float64 softmax (see ``_softmax_rows_loop``). Catches: no max
    subtraction (rows near +1000 overflow to inf/inf = NaN); a running maximum started at 0
    (rows near -1000 underflow to 0/0); dividing by the sum of the whole array.
    """
    rng = np.random.default_rng(1)
    base = rng.standard_normal((64, 48))
    masked = (5 * base).astype(np.float32)
    masked[:, 40:] = np.finfo(np.float32).min  # padding keys, as the model masks them
    cases = {
        "float32, scores of a few units": (5 * base).astype(np.float32),
        "float64": 5 * base,
        "float32, scores near +1000": (1000 + 5 * base).astype(np.float32),
        "float32, scores near -1000": (-1000 + 5 * base).astype(np.float32),
        "float32, masked with finfo.min": masked,
    }
    for name, s in cases.items():
        tol = 1e-12 if s.dtype == np.float64 else 1e-6
        _close(name, softmax_rows(s), _softmax_rows_loop(s, np.ones(s.shape, bool)), tol)


_TRACES = {}


def _float32_trace(ids, mask):  # the NumPy backend's trace, computed once per input
    key = (ids.tobytes(), mask.tobytes(), ids.shape)
    if key not in _TRACES:
        _TRACES[key] = model().trace(ids, attention_mask=mask)
    return _TRACES[key]


def make_backend(make_backend, layer_norm_kernel):
    """06 Exercise 2: ``make_backend(kernel)`` computes every LayerNorm with ``kernel``.

    Expected: the kernel is called once per LayerNorm of a forward pass (1 + 2L), and the
    pass matches the NumPy backend (``compare``). Catches: overriding ``layer_norm`` only
    (the layers use ``add_layer_norm``: one call instead of 13); an ``add_layer_norm`` that
    forgets the residual; results not reshaped back.
    """
    calls = []

    def counted(x, weight, bias, eps):
        calls.append(x.shape)
        return layer_norm_kernel(x, weight, bias, eps)

    reference = model()
    mine = minibert.BertModel(reference.config, reference.weights, backend="numpy")
    mine.F = make_backend(counted)
    ids, mask = _padded_batch(["Numba compiles loops.", "A backend is a module of functions with the same names."])
    result = minibert.compare(mine.trace(ids, attention_mask=mask), _float32_trace(ids, mask))
    expected_calls = 1 + 2 * reference.config.num_hidden_layers
    assert len(calls) == expected_calls, (
        f"your kernel ran {len(calls)} times in one forward pass; the model has {expected_calls} LayerNorms")
    assert result.passed, f"the forward pass differs from the NumPy backend from {result.first_failure.name} on"


# --- 07 using the model ------------------------------------------------------------------

SENTENCE_TEXTS = ["A man is playing a guitar.", "Hi!", "The recipe needs flour, yeast, water and a warm oven overnight."]


def embed_sentences(embed_sentences, texts=SENTENCE_TEXTS):
    """07 Exercise 1: ``embed_sentences(texts) -> [N, H]`` unit vectors (mean pooling).

    Expected: ``minibert.heads.sentence_embeddings`` (itself checked against
    sentence-transformers' recipe), to 1e-5, on a padded batch. Catches: the [CLS] vector
    instead of the mean; padding included in the mean; vectors not normalised.
    """
    expected = minibert.heads.sentence_embeddings(model(), tokenizer().encode_batch(texts))
    _close("sentence vectors", embed_sentences(list(texts)), expected, 1e-5)


def _cross_entropy_loop(logits, labels):  # one selected row at a time, math.fsum in float64
    losses = []
    for row, label in zip(np.asarray(logits, np.float64), labels):
        if label == -100:
            continue
        m = row.max()
        losses.append(-(row[label] - m - math.log(math.fsum(np.exp(row - m)))))
    return math.fsum(losses) / len(losses)


def masked_lm_loss(masked_lm_loss):
    """07 Exercise 2: ``masked_lm_loss(logits, labels)``, mean cross-entropy over labels != -100.

    Expected: a row-by-row loop, and log V for uniform logits. Catches: averaging over every
    position (or indexing column -100 for the ignored ones); no shift by the row maximum
    (overflow for logits in the thousands); log base 2; a sum instead of a mean.
    """
    rng = np.random.default_rng(0)
    V = 50
    labels = np.array([3, -100, 17, -100, 49, 0])
    cases = {
        "logits of a few units": rng.standard_normal((6, V)).astype(np.float32),
        "logits in the thousands": (3000 + 200 * rng.standard_normal((6, V))).astype(np.float32),
        "uniform logits (loss log V)": np.zeros((6, V), np.float32),
    }
    for name, logits in cases.items():
        got = float(masked_lm_loss(logits, labels))
        expected = _cross_entropy_loop(logits, labels)
        assert math.isfinite(got), f"{name}: loss is {got}"
        assert abs(got - expected) <= 1e-5 * max(1.0, abs(expected)), f"{name}: loss {got:.6f}, expected {expected:.6f}"


# --- 08 backprop by hand -----------------------------------------------------------------


def _directional_check(name, f, x, got, tol, h=1e-6, directions=8):
    """``got`` must be d f / d x: along random directions v, sum(got * v) must equal the centred
    difference (f(x + h v) - f(x - h v)) / 2h (float64). A route of its own: not the
    entry-by-entry finite differences of notebook 08, and no formula for the gradient."""
    x = np.asarray(x, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    assert got.shape == x.shape, f"{name}: shape {got.shape}, expected {x.shape}"
    assert np.all(np.isfinite(got)), f"{name}: contains NaN or inf"
    rng = np.random.default_rng(0)
    for _ in range(directions):
        v = rng.standard_normal(x.shape)
        numeric = (f(x + h * v) - f(x - h * v)) / (2 * h)
        analytic = float((got * v).sum())
        assert abs(analytic - numeric) <= tol * max(1.0, abs(numeric)), (
            f"{name}: along a random direction the gradient gives {analytic:.8f}, "
            f"finite differences {numeric:.8f}")


def _mean_cross_entropy(logits, labels):  # float64, shifted, ignoring -100 (the loop above, as a float)
    return _cross_entropy_loop(logits, labels)


def cross_entropy_grad(cross_entropy_grad):
    """08 Exercise 1: ``cross_entropy_grad(logits, labels) -> d loss / d logits`` [N, C].

    The loss is the mean cross-entropy over the rows whose label is not -100 (PyTorch's
    ``cross_entropy(ignore_index=-100)``). Expected: centred finite differences of a row-by-row
    loss loop along random directions, in float64 (and exact zeros on ignored rows). Catches: dividing by every row N
    instead of the rows kept; not zeroing the ignored rows (or indexing column -100); the
    one-hot alone without the softmax (or its sign flipped); no shift by the row maximum
    (overflow for logits in the thousands).
    """
    rng = np.random.default_rng(8)
    cases = {
        "a few units, two rows ignored": (rng.standard_normal((5, 4)), np.array([2, -100, 0, 3, -100])),
        "every row kept": (rng.standard_normal((3, 6)), np.array([5, 0, 1])),
        "one row kept of four": (rng.standard_normal((4, 3)), np.array([-100, -100, 1, -100])),
    }
    for name, (logits, labels) in cases.items():
        got = np.asarray(cross_entropy_grad(logits.copy(), labels.copy()), dtype=np.float64)
        _directional_check(f"{name}: d loss / d logits", lambda z, y=labels: _mean_cross_entropy(z, y), logits, got, 1e-7)
        assert np.all(got[labels == -100] == 0), f"{name}: the ignored rows must get exactly 0"
    big = 3000.0 + 200.0 * rng.standard_normal((3, 5))  # a trained model's logits can be large
    labels = np.array([1, -100, 4])
    with np.errstate(over="ignore", invalid="ignore"):
        got = np.asarray(cross_entropy_grad(big.copy(), labels.copy()), dtype=np.float64)
    _directional_check("logits in the thousands: d loss / d logits", lambda z: _mean_cross_entropy(z, labels), big, got,
                       1e-6, h=1e-3)


def _rms_norm(x, weight, eps):  # [..., H] -> [..., H]: x / sqrt(mean(x^2) + eps) * weight, no mean, no bias
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * weight


def rms_norm_backward(rms_norm_backward):
    """08 Exercise 2: ``rms_norm_backward(dy, x, weight, eps) -> (dx, dweight)`` for RMSNorm.

    Expected: centred differences of ``sum(dy * rms_norm(x))`` along random directions in float64, for x of shape
    [2, 3, 5] (two leading axes: dweight sums over both). Catches: LayerNorm's formula (with
    the mean term, which RMSNorm does not have); only ``r * dy * w`` (forgetting that r depends
    on every x of the row); dweight not summed over the leading axes (or summed with the
    unnormalised x).
    """
    rng = np.random.default_rng(80)
    x = rng.standard_normal((2, 3, 5)) + 0.5  # a non-zero mean: LayerNorm's answer differs
    weight = 1 + 0.3 * rng.standard_normal(5)
    dy = rng.standard_normal((2, 3, 5))
    eps = 1e-5
    got = rms_norm_backward(dy.copy(), x.copy(), weight.copy(), eps)
    assert isinstance(got, tuple) and len(got) == 2, "return (dx, dweight)"
    dx, dweight = (np.asarray(g, dtype=np.float64) for g in got)
    _directional_check("dx", lambda z: float((dy * _rms_norm(z, weight, eps)).sum()), x, dx, 1e-7)
    _directional_check("dweight", lambda w: float((dy * _rms_norm(x, w, eps)).sum()), weight, dweight, 1e-7)


@functools.lru_cache(maxsize=None)
def tiny_classifier64(seed=0):
    """A seeded random bert-tiny classifier (3 labels) in float64 on the NumPy backend, with
    every tensor jittered (no bias exactly 0, no LayerNorm weight exactly 1), and a padded pair
    batch with repeated ids: what notebook 08 differentiates. Returns (model, batch)."""
    from minibert import heads

    base = tutorial_setup.random_model("bert-tiny", head="classification", seed=seed)
    rng = np.random.default_rng(seed + 1)
    tensors = {n: (t + 0.05 * rng.standard_normal(t.shape)).astype(np.float32) for n, t in base.weights.items()}
    # float32 values (as an .h5 file holds), computed in float64: PyTorch gets exactly the same weights
    bert = minibert.BertModel(base.config, tensors, dtype="float64", backend="numpy", heads=["classification"])
    enc = tokenizer().encode_batch(["the cat sat on the mat, the cat sat.", "a dog"], ["it was tired.", "it ran away."])
    batch = dict(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                 token_type_ids=enc["token_type_ids"], labels=np.array([2, 0]))
    return heads.HEAD_CLASSES["classification"](bert), batch


PLANTED = {  # the bugs of 08 Exercise 3: name -> (ops function, wrong version)
    "gelu_backward returns gelu(x) * dy": (
        "gelu_backward", lambda dy, x: dy * minibert.ops.gelu(x)),
    "attention_context_backward: dV = P dC, P not transposed": (
        "attention_context_backward", lambda dc, p, v: (dc @ v.transpose(0, 1, 3, 2), p @ dc)),
    "tanh_backward returns 1 - x^2": (
        "tanh_backward", lambda dy, x: dy * (1.0 - x * x)),
    "embedding_backward keeps the last of repeated ids": (
        "embedding_backward", lambda dy, ids, n, padding_idx=None: _last_write_wins(dy, ids, n, padding_idx)),
}


def _last_write_wins(dy, ids, num_embeddings, padding_idx):
    dtable = np.zeros((num_embeddings, dy.shape[-1]), dy.dtype)
    dtable[ids.reshape(-1)] = dy.reshape(-1, dy.shape[-1])
    if padding_idx is not None:
        dtable[padding_idx] = 0
    return dtable


@functools.lru_cache(maxsize=None)
def _first_failures_measured():  # bug -> the first name minibert.compare reports
    from minibert import ops, train

    model, batch = tiny_classifier64()
    clean = train.trace_grads(model, **batch)
    found = {}
    for bug, (name, wrong) in PLANTED.items():
        right = getattr(ops, name)
        setattr(ops, name, wrong)  # the NumPy backend's functions are ops': the model now calls the wrong one
        try:
            result = minibert.compare(train.trace_grads(model, **batch), clean)
        finally:
            setattr(ops, name, right)
        found[bug] = result.first_failure.name if result.first_failure else None
    return found


def first_failures(first_failures):
    """08 Exercise 3: predictions of the first step the gradient trace flags for each planted bug.

    Expected: measured, by planting each bug in ``minibert.ops`` and comparing the gradient
    trace of notebook 08's tiny classifier with the clean one. Catches: the first layer
    instead of the last (the backward pass starts at the loss); the parameter instead of the
    step (or the other way round); the word-embedding table for the lookup bug (the token-type
    table, read with ids 0 and 1 only, comes first in backward order).
    """
    answers = first_failures()
    measured = _first_failures_measured()
    assert set(answers) == set(measured), f"answer exactly these bugs: {sorted(measured)}"
    wrong = [f"{bug!r}: you said {answers[bug]!r}" for bug in measured if answers[bug] != measured[bug]]
    assert not wrong, "these predictions are wrong (run the trace to see why):\n  " + "\n  ".join(wrong)


# --- 09 fine-tuning ----------------------------------------------------------------------


def adamw_first_step(adamw_first_step):
    """09 Exercise 1: ``adamw_first_step(param, grad, lr, weight_decay) -> the new param`` after
    AdamW's first step (betas 0.9, 0.999, eps 1e-8, as ``minibert.optim.AdamW``'s defaults).

    Expected: ``minibert.optim.AdamW`` itself (tested equal to ``torch.optim.AdamW``), one step,
    on gradients from 1e-6 to 1e3. Catches: no bias correction (a first step (1 - beta1) /
    sqrt(1 - beta2) ≈ 3.2 times too big); plain SGD (``lr * grad``); weight decay added to the
    gradient (Adam + L2, not decoupled); eps inside the square root.
    """
    from minibert import optim

    rng = np.random.default_rng(9)
    param = rng.standard_normal(7)
    grad = np.array([1e-6, -3e-4, 0.02, -0.5, 1.0, 40.0, -1e3])
    for lr, wd in ((1e-3, 0.0), (5e-2, 0.1)):
        weights = {"w": param.copy()}
        opt = optim.AdamW(weights, lr=lr, weight_decay=wd)
        opt.step({"w": grad.copy()}, lr=lr)
        got = np.asarray(adamw_first_step(param.copy(), grad.copy(), lr, wd), dtype=np.float64)
        _close(f"lr={lr}, weight_decay={wd}: the parameter after one step", got, weights["w"], 1e-12)


def constant_loss(constant_loss):
    """09 Exercise 2: ``constant_loss(labels, num_labels) -> the lowest mean cross-entropy`` of a
    classifier that ignores its input (the same probabilities for every example), in nats.

    Expected: the minimum over constant probability vectors, found by a grid over the
    two-label simplex (labels are 0/1 here), not by the formula the exercise asks for.
    Catches: log 2 whatever the labels (the untrained model's loss); the entropy in bits;
    the majority-class error rate; the loss of always putting probability 1 - 1e-9 on the
    majority label.
    """
    for labels in (np.array([0, 1, 1, 1]), np.array([0, 0, 1, 0, 0, 0, 0, 1, 0, 0]), np.array([1, 0] * 5)):
        p = np.linspace(1e-4, 1 - 1e-4, 20001)  # probability of label 1
        k = labels.mean()
        grid = -(k * np.log(p) + (1 - k) * np.log(1 - p))  # mean cross-entropy of each constant
        expected = float(grid.min())
        got = float(constant_loss(labels.copy(), 2))
        assert abs(got - expected) <= 1e-6, f"labels {labels.tolist()}: {got:.6f}, expected {expected:.6f}"
