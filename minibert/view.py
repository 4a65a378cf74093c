"""See attention: one self-contained, interactive HTML page built from a trace.

``minibert.view(model, "The cat sat on the mat.")`` (or ``minibert view MODEL.h5 TEXT --out
view.html``) runs the forward pass with a trace and writes a page with three views:

* **head view** (as bertviz's): the tokens in two columns, a line from each query to each key
  it attends to, line opacity = attention weight, one colour per head; choose the layer,
  toggle heads, hover a token to keep only its lines; segments A/B and padding are marked;
* **model view**: every layer x head as a small heat map; a click opens that head in the head
  view and as a full heat map with token labels (values on hover);
* **step view**: every traced step's shape, mean, std, min and max; a click shows a histogram.

The page is one file: the JavaScript and CSS from ``view_assets/`` are inlined, the data is a
JSON block, and a Content-Security-Policy forbids every network request. It opens from the
file system in any current browser; ``AttentionView._repr_html_`` shows it in Jupyter.

Attention probabilities (in [0, 1]) are stored as ``round(p * ATTENTION_SCALE)`` in uint16,
little-endian, base64: 2 bytes a value, max error ``0.5 / ATTENTION_SCALE`` = 7.6e-6.
Steps are stored as statistics and a histogram, not as values.

B = batch, T = sequence length, L = layers, A = attention heads.
"""

import base64
import html
import json
import re
import warnings
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import InputError, MinibertError, WeightsError
from .tokenizer import Tokenizer, encode_texts
from .trace import Trace

VIEW_FORMAT = "minibert-view"
VIEW_FORMAT_VERSION = 1
ATTENTION_SCALE = 65535  # p in [0, 1] -> round(p * 65535) as uint16
ATTENTION_MAX_ERROR = 0.5 / ATTENTION_SCALE  # 7.6e-6: the stated rounding of the embedded attention
DEFAULT_THRESHOLD = 0.02  # head view: lines for weights >= this (the page has a control for it)
HISTOGRAM_BINS = 40
WARN_MB = 5.0  # above this the page still works, but is slow to open: warn
MAX_MB = 25.0  # above this, refuse and name the layers that fit (max_mb= / --max-mb raise it)

_PROBS = re.compile(r"encoder\.layer\.(\d+)\.attention\.self\.probs")
_ASSETS = "view_assets"


class ViewSizeWarning(UserWarning):
    """The page is larger than WARN_MB: it will open slowly."""


# ---------------------------------------------------------------------------------------
# The public entry point
# ---------------------------------------------------------------------------------------


def view(model_or_trace, text_or_ids=None, pair=None, *, truncate=False, layers=None, tokens=None,
         tokenizer=None, batch_index=0, threshold=DEFAULT_THRESHOLD, max_mb=MAX_MB, title=None):
    """An interactive attention page for one input: ``AttentionView`` (``.save(path)``, ``.html``).

    ``model_or_trace``: a model from ``minibert.load`` (the input is traced here), or a
    ``Trace`` (its own inputs are shown; ``text_or_ids``, if given, must match them).
    ``text_or_ids``: a text (tokenized with the model file's vocabulary, or ``tokenizer``),
    token ids ([T] or [B, T]), or a dict with ``input_ids`` and optionally
    ``attention_mask``/``token_type_ids`` (e.g. from ``Tokenizer.encode_batch``: padding is
    shown greyed). ``pair``: the second text (segment B).
    ``truncate``: a text longer than the model's positions is refused unless True (then
    truncated as transformers' ``truncation=True`` does). ``layers``: which layers' attention
    to embed (default all). ``tokens``: labels to show instead of the vocabulary's.
    ``batch_index``: the row of a batch to show. ``threshold``: the head view's initial
    display threshold. ``max_mb``: refuse pages larger than this (the error names the layers
    that fit).
    """
    if isinstance(model_or_trace, Trace):
        trace = model_or_trace
        if pair is not None or truncate:
            raise InputError("pair= and truncate= apply to a text, and a Trace holds its inputs already",
                             "pass the trace alone, or a model and the text")
        if text_or_ids is not None:
            _check_matches_trace(trace, text_or_ids, tokenizer or _tokenizer_of(trace.meta.get("model_file")))
        text = text_or_ids if isinstance(text_or_ids, str) else None
    else:
        model = model_or_trace
        if not hasattr(model, "trace") or not hasattr(model, "config"):
            raise InputError(f"view() takes a model or a Trace, got {type(model).__name__}",
                             'pass minibert.load("model.h5") or model.trace(ids)')
        if text_or_ids is None:
            raise InputError("view() needs the input to show", 'pass a text, e.g. minibert.view(model, "The cat sat.")')
        tokenizer = tokenizer or (_tokenizer_of(getattr(model, "path", None)) if isinstance(text_or_ids, str) else None)
        inputs = model_inputs(model, tokenizer, text_or_ids, pair, truncate)
        cfg = model.config  # refuse a page too large before running the model
        check_size(range(cfg.num_hidden_layers) if layers is None else list(layers), cfg.num_attention_heads,
                   np.shape(inputs["input_ids"])[-1], max_mb, warn=False)
        trace = model.trace(inputs["input_ids"], inputs.get("attention_mask"), inputs.get("token_type_ids"))
        text = text_or_ids if isinstance(text_or_ids, str) else None
    data = view_data(trace, layers=layers, tokens=tokens, tokenizer=tokenizer, batch_index=batch_index,
                     threshold=threshold, text=text, pair=pair, title=title, max_mb=max_mb)
    return AttentionView(data)


class AttentionView:
    """The page: ``.html`` (one self-contained document), ``.data`` (what it embeds), ``.save(path)``.

    In Jupyter, the last expression of a cell shows the page (``_repr_html_``) in an iframe,
    so its script and style stay apart from the notebook's.
    """

    def __init__(self, data):
        self.data = data
        self.html = render(data)

    @property
    def nbytes(self):
        """Size of the page in bytes (UTF-8)."""
        return len(self.html.encode("utf-8"))

    def save(self, path):
        """Write the page to ``path`` (parents created); returns the Path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.html, encoding="utf-8")
        return path

    def _repr_html_(self):
        T = len(self.data["tokens"])
        height = min(900, max(520, 22 * T + 260))  # px; the page scrolls inside the frame
        return (f'<iframe srcdoc="{html.escape(self.html, quote=True)}" title="minibert attention view" '
                f'style="width: 100%; height: {height}px; border: 1px solid #ddd;"></iframe>')

    def __repr__(self):
        d = self.data
        layers = [entry["layer"] for entry in d["attention"]]
        mb = self.nbytes / 1e6
        return f"<AttentionView: {len(d['tokens'])} tokens, layers {layers}, {d['num_heads']} heads, {mb:.2f} MB>"


# ---------------------------------------------------------------------------------------
# Inputs: text or ids -> [1, T] arrays (refusing, or truncating, a text that is too long)
# ---------------------------------------------------------------------------------------


def model_inputs(model, tokenizer, text_or_ids, pair=None, truncate=False):
    """A text, ids ([T] or [B, T]) or an encoding dict -> dict of int64 arrays for ``model.trace``."""
    if isinstance(text_or_ids, str):
        if tokenizer is None:
            raise InputError("no vocabulary to tokenize the text with (the model has no file, or its file holds none)",
                             "pass tokenizer=minibert.Tokenizer.from_file(...), or token ids instead of a text")
        pairs = None if pair is None else [pair]
        batch, _ = encode_texts(tokenizer, [text_or_ids], pairs, model.config.max_position_embeddings, truncate)
        return batch  # [1, T] int64 arrays
    if pair is not None:
        raise InputError("pair= is for a text, not for token ids", "pass token_type_ids in a dict, or the two texts")
    if isinstance(text_or_ids, dict):
        if "input_ids" not in text_or_ids:
            raise InputError(f"the input dict has no input_ids (keys: {', '.join(text_or_ids)})",
                             "pass the dict returned by Tokenizer.encode_batch")
        keys = ("input_ids", "attention_mask", "token_type_ids")
        return {k: np.asarray(text_or_ids[k]) for k in keys if text_or_ids.get(k) is not None}
    return {"input_ids": np.asarray(text_or_ids)}


def _tokenizer_of(path):
    """The Tokenizer of a model file, or None when there is no file or no vocabulary in it."""
    if not path or not Path(path).is_file():
        return None
    try:
        return Tokenizer.from_file(path)
    except (InputError, WeightsError):
        return None


def _check_matches_trace(trace, text_or_ids, tokenizer):
    ids = trace.meta["inputs"]["input_ids"]  # [B, T]
    if isinstance(text_or_ids, str):
        if tokenizer is None:
            raise InputError("cannot tokenize the text: the trace's model file has no readable vocabulary",
                             "pass the trace alone (its inputs are shown), or tokenizer=")
        given = np.array([tokenizer.encode(text_or_ids)["input_ids"]])
    else:
        given = np.asarray(text_or_ids["input_ids"] if isinstance(text_or_ids, dict) else text_or_ids)
    given = np.atleast_2d(given)  # [B, T]
    if given.shape[-1] != ids.shape[-1] or not np.array_equal(given[0], ids[0]):
        raise InputError(f"the input given ({given.shape[-1]} tokens) is not the input of this trace "
                         f"({ids.shape[-1]} tokens)",
                         "pass the trace alone: it holds its own inputs")


# ---------------------------------------------------------------------------------------
# The embedded data
# ---------------------------------------------------------------------------------------


def encode_attention(probs):  # [A, T, T] floats in [0, 1] -> base64 text of uint16 LE
    """Attention probabilities as base64 of little-endian uint16 ``round(p * ATTENTION_SCALE)``."""
    q = np.rint(np.asarray(probs, np.float64) * ATTENTION_SCALE).astype("<u2")  # [A, T, T]
    return base64.b64encode(q.tobytes()).decode("ascii")


def decode_attention(text, num_heads, seq_len):  # base64 text -> [A, T, T] float64
    """The inverse of ``encode_attention``: values within ATTENTION_MAX_ERROR of the originals."""
    q = np.frombuffer(base64.b64decode(text), dtype="<u2")
    return (q.astype(np.float64) / ATTENTION_SCALE).reshape(num_heads, seq_len, seq_len)


def attention_layers(trace):
    """{layer index: step name} of the attention probabilities a trace holds, in layer order."""
    found = {int(m.group(1)): name for name in trace if (m := _PROBS.fullmatch(name))}
    return dict(sorted(found.items()))


def view_data(trace, layers=None, tokens=None, tokenizer=None, batch_index=0, threshold=DEFAULT_THRESHOLD,
              text=None, pair=None, title=None, max_mb=MAX_MB):
    """The JSON-able dict a page embeds: tokens, segments, padding, attention, step statistics.

    Refuses (before encoding anything) attention larger than ``max_mb``; see ``check_size``.
    """
    found = attention_layers(trace)
    if not found:
        raise InputError("the trace holds no attention probabilities",
                         "trace without only=, or include '*.attention.self.probs'")
    if layers is None:
        layers = list(found)
    layers = sorted({int(i) for i in layers})
    if not layers:
        raise InputError("no layers chosen", f"choose --layers among {' '.join(map(str, found))}, or all (the default)")
    missing = [i for i in layers if i not in found]
    if missing:
        raise InputError(f"layer(s) {missing} not in the trace (it holds the attention of layers {list(found)})",
                         f"choose --layers among {' '.join(map(str, found))}")
    inputs = trace.meta.get("inputs") or {}
    if "input_ids" not in inputs:
        raise InputError("the trace has no inputs recorded", "record it with model.trace(ids) or Trace.load")
    input_ids = np.asarray(inputs["input_ids"])
    B, T = input_ids.shape
    if not 0 <= batch_index < B:
        raise InputError(f"batch_index {batch_index} is outside the batch of {B}", f"use 0 .. {B - 1}")
    mask = inputs.get("attention_mask")
    types = inputs.get("token_type_ids")
    row_ids = [int(i) for i in input_ids[batch_index]]
    labels = _token_labels(row_ids, tokens, tokenizer, trace.meta.get("model_file"))
    if not 0 <= threshold <= 1:
        raise InputError(f"threshold {threshold} is outside [0, 1]", "use e.g. threshold=0.02")

    num_heads = np.shape(trace[found[layers[0]]])[1]  # [B, A, T, T]
    check_size(layers, num_heads, T, max_mb)
    attention = []
    for i in layers:
        probs = np.asarray(trace[found[i]])[batch_index]  # [A, T, T]
        lo, hi = float(probs.min()), float(probs.max())
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -1e-6 or hi > 1 + 1e-6:
            raise InputError(f"{found[i]} holds values in [{lo:.4g}, {hi:.4g}], not probabilities in [0, 1] "
                             "(a patched trace?)",
                             "view a trace whose attention rows are probabilities, or choose other --layers")
        attention.append({"layer": i, "name": found[i], "data": encode_attention(np.clip(probs, 0.0, 1.0))})

    meta = trace.meta
    return {
        "format": VIEW_FORMAT,
        "format_version": VIEW_FORMAT_VERSION,
        "title": title or _default_title(text, pair),
        "text": text,
        "pair": pair,
        "model_file": Path(meta["model_file"]).name if meta.get("model_file") else None,
        "dtype": meta.get("dtype"),
        "backend": meta.get("backend"),
        "producer": meta.get("producer"),
        "tokens": labels,
        "input_ids": row_ids,
        "token_type_ids": [0] * T if types is None else [int(t) for t in np.asarray(types)[batch_index]],
        "attention_mask": [1] * T if mask is None else [int(m) for m in np.asarray(mask)[batch_index]],
        "num_layers": max(found) + 1,
        "num_heads": num_heads,
        "attention_scale": ATTENTION_SCALE,
        "attention": attention,  # [{layer, name, data: base64 uint16 LE [A, T, T]}]
        "threshold": float(threshold),
        "batch_index": batch_index,
        "batch_size": B,
        "steps": [step_stats(name, value) for name, value in trace.values.items()],
    }


def step_stats(name, value, bins=HISTOGRAM_BINS):
    """One row of the step view: shape, mean, std, min, max (float64, over the whole traced
    batch, as ``Trace.summary``) and a histogram of the finite values."""
    x = np.asarray(value, dtype=np.float64).ravel()
    finite = x[np.isfinite(x)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    counts, _ = np.histogram(finite, bins=bins, range=(lo, hi) if hi > lo else (lo - 0.5, hi + 0.5))
    return {
        "name": name,
        "shape": list(np.shape(value)),
        "mean": _number(x.mean()) if x.size else None,
        "std": _number(x.std()) if x.size else None,
        "min": _number(x.min()) if x.size else None,
        "max": _number(x.max()) if x.size else None,
        "nonfinite": int(x.size - finite.size),
        "hist": {"lo": _number(lo), "hi": _number(hi), "counts": counts.tolist()},
    }


def _number(v):
    """A float for JSON, 7 significant digits; NaN and infinities as the strings "nan", "inf", "-inf"."""
    v = float(v)
    return float(f"{v:.7g}") if np.isfinite(v) else str(v)


def _token_labels(ids, tokens, tokenizer, model_file):
    if tokens is not None:
        tokens = [str(t) for t in tokens]
        if len(tokens) != len(ids):
            raise InputError(f"tokens= has {len(tokens)} labels, the input has {len(ids)} tokens",
                             "give one label per token")
        return tokens
    tokenizer = tokenizer or _tokenizer_of(model_file)
    if tokenizer is None:  # no vocabulary: label the tokens with their ids
        return [str(i) for i in ids]
    return [tokenizer.ids_to_tokens.get(i, str(i)) for i in ids]


def _default_title(text, pair):
    if text is None:
        return "minibert attention"
    shown = text if pair is None else f"{text} | {pair}"
    return shown if len(shown) <= 80 else shown[:77] + "..."


def estimated_mb(num_layers, num_heads, seq_len):
    """Megabytes of embedded attention: L x A x T^2 values, 2 bytes each, base64 (x 4/3)."""
    return num_layers * num_heads * seq_len**2 * 2 * 4 / 3 / 1e6


def check_size(layers, num_heads, seq_len, max_mb=MAX_MB, warn=True):
    """Refuse attention over ``max_mb`` (naming the layers that fit); warn over WARN_MB."""
    A, T, layers = num_heads, seq_len, list(layers)
    mb = estimated_mb(len(layers), A, T)
    if mb > max_mb:
        fit = int(max_mb // estimated_mb(1, A, T))
        fits = layers[:fit]
        fix = (f"show fewer layers, e.g. --layers {' '.join(map(str, fits))} (layers={fits} in Python), "
               "or raise the limit with --max-mb" if fit else "use a shorter text, or raise the limit with --max-mb")
        raise InputError(f"the page would embed {mb:.1f} MB of attention ({len(layers)} layer(s) x {A} heads x {T}^2 "
                         f"values), more than {max_mb:g} MB", fix)
    if warn and mb > WARN_MB:
        warnings.warn(f"the page embeds {mb:.1f} MB of attention ({len(layers)} layer(s) x {A} heads x {T}^2 values) "
                      "and may open slowly; fewer --layers or a shorter text make it smaller",
                      ViewSizeWarning, stacklevel=4)


# ---------------------------------------------------------------------------------------
# The page: the template with the style, the script and the data inlined
# ---------------------------------------------------------------------------------------


def read_asset(name):
    """The text of one of the page's files (package data in minibert/view_assets/)."""
    try:
        return resources.files("minibert").joinpath(_ASSETS, name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MinibertError(f"minibert/{_ASSETS}/{name} is missing from the installed package",
                            "reinstall minibert (pip install -e .): the view's assets are package data") from None


def render(data):
    """The self-contained HTML document for ``data`` (from ``view_data``)."""
    # In a <script> element only "</script" and "<!--" can end or confuse it: escape every "<"
    # (it occurs only inside JSON strings, where \u003c is the same character).
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    parts = {"title": html.escape(data["title"]), "style": read_asset("view.css"), "script": read_asset("view.js"),
             "data": payload}
    # One pass: an inserted part is never scanned for markers (a text may contain "{{data}}").
    return re.sub(r"\{\{(title|style|script|data)\}\}", lambda m: parts[m.group(1)], read_asset("view.html"))


def read_data(page):
    """The data dict embedded in a page written by ``render`` (for tests and tools)."""
    m = re.search(r'<script type="application/json" id="minibert-data">(.*?)</script>', page, re.DOTALL)
    if m is None:
        raise InputError("not a minibert view page (no embedded data)", "pass the HTML written by minibert view")
    return json.loads(m.group(1))
