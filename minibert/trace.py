"""Step through the forward pass: capture every named step, change one, compare two runs.

The forward pass in ``model.py`` passes every step's value through ``tap(name, value)``. This
module supplies the taps:

* ``capture(model, ...)`` (or ``model.trace(...)``) records the steps into a ``Trace``: an
  ordered mapping name -> array, in execution order, saved to and loaded from ``.h5``;
* ``patch=`` replaces a step's value (activation patching: zero one head,
  paste in the activation of another input), and the rest of the pass computes from it;
* ``MINIBERT_BREAK=<name>`` stops in ``pdb`` at that step (``up`` shows the forward pass);
* ``compare(ours, reference)`` lines two traces up by name and names the FIRST step whose
  values differ beyond the project's tolerance: where a bug begins.

``reference.py`` builds the same named trace from transformers' PyTorch ``BertModel``.

Names are the Hugging Face module names (``encoder.layer.0.attention.self.probs``), so a
value here and its twin in PyTorch are found by the same string. TransformerLens names
(``blocks.0.attn.hook_pattern``) are accepted as aliases wherever a name or pattern is.
"""

import fnmatch
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .errors import InputError, MinibertError

TRACE_FORMAT = "minibert-trace"
TRACE_FORMAT_VERSION = 1
BREAK_ENV = "MINIBERT_BREAK"  # e.g. MINIBERT_BREAK=encoder.layer.1.attention.self.probs

# The project's parity tolerance: max|ours - ref| <= TOLERANCE[dtype] * max(1, max|ref|).
TOLERANCE = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10}

# ---------------------------------------------------------------------------------------
# TransformerLens aliases
# ---------------------------------------------------------------------------------------

# TransformerLens hook name -> minibert (Hugging Face) name, and how the two values differ.
# Per-layer names are written for block {i}; "blocks.{i}." maps to "encoder.layer.{i}.".
TRANSFORMERLENS_ALIASES = {
    "hook_embed": ("embeddings.word_embeddings", "same value"),
    "hook_pos_embed": ("embeddings.position_embeddings", "same value, [1, T, H]"),
    "hook_token_type_embed": ("embeddings.token_type_embeddings", "same value"),
    "blocks.{i}.attn.hook_q": ("encoder.layer.{i}.attention.self.query", "TL splits heads [B, T, A, D]; here [B, T, H]"),
    "blocks.{i}.attn.hook_k": ("encoder.layer.{i}.attention.self.key", "TL [B, T, A, D]; here [B, T, H]"),
    "blocks.{i}.attn.hook_v": ("encoder.layer.{i}.attention.self.value", "TL [B, T, A, D]; here [B, T, H]"),
    "blocks.{i}.attn.hook_attn_scores": ("encoder.layer.{i}.attention.self.scores", "TL adds the mask first; here before the mask"),
    "blocks.{i}.attn.hook_pattern": ("encoder.layer.{i}.attention.self.probs", "same value"),
    "blocks.{i}.attn.hook_z": ("encoder.layer.{i}.attention.self.context", "TL [B, T, A, D]; here heads merged [B, T, H]"),
    "blocks.{i}.hook_attn_out": ("encoder.layer.{i}.attention.output.dense", "same value"),
    "blocks.{i}.hook_resid_mid": ("encoder.layer.{i}.attention.output.LayerNorm", "BERT is post-LN: TL's is the sum before LayerNorm, this is after"),
    "blocks.{i}.mlp.hook_pre": ("encoder.layer.{i}.intermediate.dense", "same value"),
    "blocks.{i}.mlp.hook_post": ("encoder.layer.{i}.intermediate.gelu", "same value"),
    "blocks.{i}.hook_mlp_out": ("encoder.layer.{i}.output.dense", "same value"),
    "blocks.{i}.hook_resid_post": ("encoder.layer.{i}.output.LayerNorm", "BERT is post-LN: this is TL's hook_normalized_resid_post"),
    "blocks.{i}.hook_normalized_resid_post": ("encoder.layer.{i}.output.LayerNorm", "same value"),
}

_BLOCK = re.compile(r"^blocks\.([^.]+)\.(.+)$")  # blocks.<i or glob>.<rest>


def resolve_name(name):
    """A TransformerLens name or pattern -> the minibert name or pattern; others unchanged.

    ``blocks.0.attn.hook_pattern`` -> ``encoder.layer.0.attention.self.probs``;
    the layer part may be a glob: ``blocks.*.attn.hook_pattern`` -> ``encoder.layer.*.attention.self.probs``.
    """
    if name in TRANSFORMERLENS_ALIASES:
        return TRANSFORMERLENS_ALIASES[name][0]
    m = _BLOCK.match(name)
    if m and f"blocks.{{i}}.{m.group(2)}" in TRANSFORMERLENS_ALIASES:
        return TRANSFORMERLENS_ALIASES[f"blocks.{{i}}.{m.group(2)}"][0].replace("{i}", m.group(1))
    return name


def matches(name, patterns):
    """Whether a step name matches any glob pattern (TransformerLens aliases allowed)."""
    return any(fnmatch.fnmatchcase(name, resolve_name(p)) for p in patterns)


# ---------------------------------------------------------------------------------------
# Trace: an ordered mapping name -> array, with the inputs and where it came from
# ---------------------------------------------------------------------------------------


class Trace(Mapping):
    """Every captured step of one forward pass: name -> array, in execution order.

    ``trace["encoder.layer.0.attention.self.probs"]`` is a NumPy array ([B, A, T, T]);
    iterating gives the names in the order the forward pass computed them.
    ``meta`` says what produced it: the inputs, dtype, backend, model file, source file.
    """

    def __init__(self, values=None, meta=None):
        self.values = dict(values or {})  # insertion order = execution order
        self.meta = dict(meta or {})
        self.output = None  # the BertOutput of the traced pass (set by capture; not saved)

    def __getitem__(self, name):
        resolved = resolve_name(name)
        if resolved not in self.values:
            close = [n for n in self.values if n.endswith(resolved.split(".")[-1])][:3]
            raise KeyError(f"{name!r} is not in this trace" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        return self.values[resolved]

    def __iter__(self):
        return iter(self.values)

    def __len__(self):
        return len(self.values)

    def __repr__(self):
        return f"<Trace of {len(self)} steps from {self.meta.get('producer', '?')}>"

    @property
    def shapes(self):
        """name -> shape tuple, in execution order."""
        return {name: tuple(v.shape) for name, v in self.values.items()}

    def summary(self, values=4):
        """A readable table: name, shape, mean, std, min, max and the first few values."""
        width = max([len(n) for n in self.values] + [4])
        lines = [f"{'name':<{width}}  {'shape':<18} {'mean':>10} {'std':>10} {'min':>10} {'max':>10}  first values"]
        for name, v in self.values.items():
            x = np.asarray(v, dtype=np.float64)
            first = " ".join(f"{e:.4g}" for e in x.ravel()[:values])
            lines.append(
                f"{name:<{width}}  {str(tuple(v.shape)):<18} {x.mean():>10.4g} {x.std():>10.4g} "
                f"{x.min():>10.4g} {x.max():>10.4g}  {first}"
            )
        return "\n".join(lines)

    # -- .h5 round trip ------------------------------------------------------------------
    #   /             attrs: format="minibert-trace", format_version, order (JSON list of names),
    #                        meta (JSON of the scalar/string metadata)
    #   /inputs/<n>   input_ids, attention_mask, token_type_ids
    #   /values/<n>   one dataset per step, <n> its name, stored in its own dtype

    def save(self, path):
        """Write the trace to an .h5 file; ``Trace.load`` gives back the same names, order, dtypes, meta."""
        import h5py

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        inputs = self.meta.get("inputs", {})
        meta = {k: v for k, v in self.meta.items() if k != "inputs"}
        with h5py.File(path, "w") as f:
            f.attrs["format"] = TRACE_FORMAT
            f.attrs["format_version"] = TRACE_FORMAT_VERSION
            f.attrs["order"] = json.dumps(list(self.values))
            f.attrs["meta"] = json.dumps(meta)
            g = f.create_group("inputs")
            for name, a in inputs.items():
                g.create_dataset(name, data=np.asarray(a))
            g = f.create_group("values")
            for name, v in self.values.items():
                g.create_dataset(name, data=np.asarray(v))
        return path

    @classmethod
    def load(cls, path):
        """Read a trace written by ``Trace.save``."""
        import h5py

        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: trace file not found", "write one with `minibert trace MODEL.h5 TEXT --out FILE.h5`")
        try:
            f = h5py.File(path, "r")
        except OSError as e:
            raise InputError(f"{path}: not a readable HDF5 file ({e})", "pass a file written by Trace.save") from None
        with f:
            if f.attrs.get("format") != TRACE_FORMAT:
                raise InputError(f"{path}: not a minibert trace (format {f.attrs.get('format')!r})", "pass a file written by Trace.save")
            if int(f.attrs["format_version"]) != TRACE_FORMAT_VERSION:
                raise InputError(f"{path}: trace format version {f.attrs['format_version']}, expected {TRACE_FORMAT_VERSION}", "re-record the trace")
            meta = json.loads(f.attrs["meta"])
            meta["inputs"] = {name: d[()] for name, d in f["inputs"].items()}
            values = {name: f["values"][name][()] for name in json.loads(f.attrs["order"])}
        return cls(values, meta)


# ---------------------------------------------------------------------------------------
# Capture: the tap that records, patches and breaks
# ---------------------------------------------------------------------------------------


class Recorder:
    """The tap used while tracing: patch the value if asked, record it, maybe stop in pdb.

    It records the value that flows on (the patched one, when a step is patched). Patch keys
    may be globs (``encoder.layer.*.attention.self.probs``); the first matching key applies.
    """

    def __init__(self, only=None, patch=None, break_at=None):
        self.only = None if only is None else [only] if isinstance(only, str) else list(only)
        self.patch = {resolve_name(name): fn for name, fn in (patch or {}).items()}
        self.break_at = break_at
        self.values = {}
        self.patched = set()  # names whose patch was applied

    def __call__(self, name, value):
        fn = next((fn for pattern, fn in self.patch.items() if fnmatch.fnmatchcase(name, pattern)), None)
        if fn is not None:
            new = np.asarray(fn(value))
            if new.shape != value.shape:
                raise InputError(
                    f"the patch for {name} returned shape {new.shape}, the step has shape {value.shape}",
                    "return an array of the same shape (e.g. modify a copy of the value)",
                )
            value = new.astype(value.dtype, copy=False)
            self.patched.add(name)
        if self.only is None or matches(name, self.only):
            self.values[name] = value
        if self.break_at is not None and matches(name, [self.break_at]):
            # Stopped at step `name`; `value` is its value. Type `up` to see the forward
            # pass (q, k, v, scores, ...), `c` to run on. See docs/debugging.md.
            breakpoint()
        return value


def capture(model, input_ids, attention_mask=None, token_type_ids=None, only=None, patch=None):
    """Run the forward pass and return a ``Trace`` of its steps (see ``BertModel.trace``)."""
    keys = list(patch or {}) + ([only] if isinstance(only, str) else list(only or []))
    names = [name for name, _ in hook_points(model.config)] if keys else []
    for key in keys:
        if not any(fnmatch.fnmatchcase(n, resolve_name(key)) for n in names):
            raise InputError(f"{key!r} names no step of the forward pass", "list the steps with minibert.trace.hook_points(model.config)")
    input_ids, attention_mask, token_type_ids = model.check_inputs(input_ids, attention_mask, token_type_ids)
    recorder = Recorder(only=only, patch=patch, break_at=os.environ.get(BREAK_ENV) or None)
    out = model(input_ids, attention_mask, token_type_ids, tap=recorder)
    meta = {
        "producer": "minibert",
        "backend": model.backend,
        "dtype": str(model.dtype),
        "model_file": str(getattr(model, "path", "")),
        "source_file": _source_file(model),
        "patched": sorted(recorder.patched),
        "inputs": {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids},
    }
    trace = Trace(recorder.values, meta)
    trace.output = out
    return trace


def _source_file(model):
    import inspect

    return os.path.abspath(inspect.getsourcefile(type(model)))


# ---------------------------------------------------------------------------------------
# Hook points, generated from the code
# ---------------------------------------------------------------------------------------

# Distinct small sizes, so that each number in a captured shape names one axis.
_SYMBOLIC_SIZES = {"B": 2, "T": 3, "A": 5, "D": 7, "I": 11}


def hook_points(config):
    """[(name, symbolic shape)] of every step the forward pass taps, in execution order.

    Runs the forward pass once on a tiny model with ``config``'s layer count and zero
    weights, with every axis a distinct size, and reads each shape back as letters:
    ``("encoder.layer.0.attention.self.probs", "[B, A, T, T]")``.
    """
    from .model import BertModel
    from .weights import encoder_shapes

    s = _SYMBOLIC_SIZES
    tiny = replace(
        config, hidden_size=s["A"] * s["D"], num_attention_heads=s["A"], intermediate_size=s["I"],
        vocab_size=13, max_position_embeddings=17, type_vocab_size=2, id2label={},
    )
    letters = {1: "1", s["B"]: "B", s["T"]: "T", s["A"]: "A", s["D"]: "D", s["A"] * s["D"]: "H", s["I"]: "I"}
    model = BertModel(tiny, {n: np.zeros(shape, np.float32) for n, shape in encoder_shapes(tiny).items()})
    seen = []
    model(np.zeros((s["B"], s["T"]), np.int64), tap=lambda name, value: seen.append((name, value.shape)) or value)
    return [(name, "[" + ", ".join(letters[n] for n in shape) + "]") for name, shape in seen]


def hook_table(config=None):
    """The markdown table of hook points for docs/debugging.md (layer 0 shown as {i})."""
    from .config import BertConfig

    config = config or BertConfig.preset("bert-tiny")
    rows, done = [], set()
    for name, shape in hook_points(config):
        generic = re.sub(r"^encoder\.layer\.\d+\.", "encoder.layer.{i}.", name)
        if generic not in done:
            done.add(generic)
            rows.append(f"| `{generic}` | `{shape}` | {_STEP_NOTES.get(generic, '')} |")
    return "\n".join(["| hook point | shape | value |", "|---|---|---|"] + rows)


_STEP_NOTES = {
    "embeddings.word_embeddings": "one row of the word table per token",
    "embeddings.token_type_embeddings": "segment A/B rows",
    "embeddings.position_embeddings": "rows 0..T-1, shared by the batch",
    "embeddings.sum": "word + token type + position (transformers' order)",
    "embeddings.LayerNorm": "the embeddings: input of layer 0",
    "encoder.layer.{i}.attention.self.query": "Q = x Wq^T + bq (heads not yet split)",
    "encoder.layer.{i}.attention.self.key": "K",
    "encoder.layer.{i}.attention.self.value": "V",
    "encoder.layer.{i}.attention.self.scores": "Q K^T / sqrt(D), before the padding mask",
    "encoder.layer.{i}.attention.self.probs": "softmax(scores + mask) over keys",
    "encoder.layer.{i}.attention.self.context": "probs @ V, heads merged",
    "encoder.layer.{i}.attention.output.dense": "output projection",
    "encoder.layer.{i}.attention.output.LayerNorm": "LayerNorm(dense + x): the attention block's output",
    "encoder.layer.{i}.intermediate.dense": "widen to I",
    "encoder.layer.{i}.intermediate.gelu": "exact (erf) GELU",
    "encoder.layer.{i}.output.dense": "back to H",
    "encoder.layer.{i}.output.LayerNorm": "LayerNorm(dense + attention output): the layer's output (hidden_states[i+1])",
    "pooler.dense": "dense on the [CLS] token",
    "pooler": "tanh: pooler_output",
}

DOC_BEGIN = "<!-- hook table: generated by `python -m minibert hooks --write-doc docs/debugging.md`; do not edit -->"
DOC_END = "<!-- end of hook table -->"
ALIAS_BEGIN = "<!-- alias table: generated by `python -m minibert hooks --write-doc docs/debugging.md`; do not edit -->"
ALIAS_END = "<!-- end of alias table -->"


def _replace_between(text, begin, end, body, path):
    if begin not in text or end not in text:
        raise MinibertError(f"{path}: the generated-table markers are missing", f"add the lines {begin} and {end}")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{body}\n{end}{tail}"


def write_hook_table(doc_path):
    """Rewrite the generated hook table and alias table of a markdown file (docs/debugging.md)."""
    path = Path(doc_path)
    text = path.read_text(encoding="utf-8")
    text = _replace_between(text, DOC_BEGIN, DOC_END, hook_table(), path)
    text = _replace_between(text, ALIAS_BEGIN, ALIAS_END, alias_table(), path)
    path.write_text(text, encoding="utf-8")
    return path


def alias_table():
    """The markdown table of TransformerLens aliases, for docs/debugging.md."""
    rows = [f"| `{tl}` | `{hf}` | {note} |" for tl, (hf, note) in TRANSFORMERLENS_ALIASES.items()]
    return "\n".join(["| TransformerLens | minibert | difference |", "|---|---|---|"] + rows)


# ---------------------------------------------------------------------------------------
# Compare two traces: which step diverges first?
# ---------------------------------------------------------------------------------------


@dataclass
class Row:
    """One hook point compared: our value against the reference's."""

    name: str
    shape: tuple
    max_abs_error: float  # max |ours - ref|
    max_rel_error: float  # max |ours - ref| / max |ref|  (relative to the tensor's scale)
    tolerance: float  # TOLERANCE[dtype] * max(1, max |ref|)
    status: str  # "ok", "FAIL", or "missing" (in one trace only) / "shape" (shapes differ)

    @property
    def passed(self):
        return self.status == "ok"


class Comparison:
    """Rows per hook point in execution order, a printable table, and the first failure."""

    def __init__(self, rows, dtype):
        self.rows = rows
        self.dtype = dtype

    @property
    def passed(self):
        return all(r.passed for r in self.rows)

    @property
    def failures(self):
        return [r for r in self.rows if not r.passed]

    @property
    def first_failure(self):
        """The first failing Row in execution order (None when all pass): where the bug begins."""
        return next((r for r in self.rows if not r.passed), None)

    def table(self):
        width = max([len(r.name) for r in self.rows] + [10])
        lines = [f"{'hook point':<{width}}  {'shape':<16} {'max abs err':>11} {'max rel err':>11} {'tolerance':>9}  status"]
        for r in self.rows:
            lines.append(
                f"{r.name:<{width}}  {str(r.shape):<16} {r.max_abs_error:>11.2e} {r.max_rel_error:>11.2e} "
                f"{r.tolerance:>9.1e}  {r.status}"
            )
        first = self.first_failure
        n_ok = sum(r.passed for r in self.rows)
        lines.append(f"{n_ok}/{len(self.rows)} hook points within tolerance ({self.dtype})")
        if first is not None:
            lines.append(f"first failing point: {first.name} (max abs err {first.max_abs_error:.2e} > {first.tolerance:.1e})")
        return "\n".join(lines)

    __str__ = table


def compare(ours, reference, dtype=None):
    """Compare two traces name by name (never by position), in ``ours``' execution order.

    Tolerance per hook point, as the project's parity tests: float32 1e-5 * max(1, max|ref|),
    float64 1e-10 * max(1, max|ref|). ``dtype`` defaults to the dtype of ``ours``' values.
    Steps present in only one trace are rows with status "missing".
    """
    if dtype is None:
        dtype = ours.meta.get("dtype") or next(iter(ours.values.values())).dtype
    dtype = np.dtype(dtype)
    if dtype not in TOLERANCE:
        raise InputError(f"no parity tolerance for dtype {dtype}", "compare float32 or float64 traces")
    rows = []
    names = list(ours) + [n for n in reference if n not in ours.values]
    for name in names:
        a, b = ours.values.get(name), reference.values.get(name)
        if a is None or b is None:
            shape = tuple((a if a is not None else b).shape)
            rows.append(Row(name, shape, float("inf"), float("inf"), float("nan"), "missing"))
            continue
        scale = float(np.abs(b.astype(np.float64)).max()) if b.size else 0.0
        tol = TOLERANCE[dtype] * max(1.0, scale)
        if a.shape != b.shape:
            rows.append(Row(name, tuple(a.shape), float("inf"), float("inf"), tol, "shape"))
            continue
        err = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if a.size else 0.0
        if np.isnan(err):
            err = float("inf")  # a NaN is never within tolerance
        rel = err / scale if scale > 0 else (0.0 if err == 0 else float("inf"))
        rows.append(Row(name, tuple(a.shape), err, rel, tol, "ok" if err <= tol else "FAIL"))
    return Comparison(rows, str(dtype))


# ---------------------------------------------------------------------------------------
# Look: attention heat maps
# ---------------------------------------------------------------------------------------

PLOT_DPI = 100
PANEL_INCHES = 3.0  # each head's panel is PANEL_INCHES x PANEL_INCHES


def plot_grid(num_heads):
    """(rows, cols) of the per-head panels: at most 4 panels per row."""
    cols = min(4, num_heads)
    return -(-num_heads // cols), cols


def plot_attention(trace, out_dir, tokens=None, batch_index=0):
    """Write one PNG per layer: every head's attention probabilities, tokens on the axes.

    Figure size is (cols * PANEL_INCHES) x (rows * PANEL_INCHES) inches at PLOT_DPI, with
    rows, cols = plot_grid(A). Returns the list of paths written.
    """
    try:
        import matplotlib
    except ImportError:
        raise MinibertError("plotting needs matplotlib", "pip install 'minibert[viz]' (or: pip install matplotlib)") from None
    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    layers = [n for n in trace if re.fullmatch(r"encoder\.layer\.\d+\.attention\.self\.probs", n)]
    if not layers:
        raise InputError("the trace holds no attention probabilities", "trace without only=, or include '*.attention.self.probs'")
    paths = []
    for name in layers:
        probs = trace[name][batch_index]  # [A, T, T]
        A, T, _ = probs.shape
        labels = list(tokens) if tokens is not None else [str(t) for t in range(T)]
        rows, cols = plot_grid(A)
        fig, axes = plt.subplots(rows, cols, figsize=(cols * PANEL_INCHES, rows * PANEL_INCHES), dpi=PLOT_DPI, squeeze=False)
        fontsize = max(3, min(8, 160 // T))
        for h, ax in enumerate(axes.flat):
            if h >= A:
                ax.axis("off")
                continue
            ax.imshow(probs[h], vmin=0.0, vmax=1.0, cmap="viridis")  # [T queries, T keys], dark 0 .. yellow 1
            ax.set_title(f"head {h}", fontsize=9)
            # Token labels on the outer panels only: the panels share their axes.
            last_in_column = h + cols >= A
            ax.set_xticks(range(T), labels if last_in_column else [], rotation=90, fontsize=fontsize)
            ax.set_yticks(range(T), labels if h % cols == 0 else [], fontsize=fontsize)
        layer = name.split(".")[2]
        fig.suptitle(f"layer {layer} attention probabilities (rows: queries, columns: keys; dark 0, yellow 1)", fontsize=10)
        fig.subplots_adjust(left=0.1, right=0.98, bottom=0.14, top=0.9, wspace=0.15, hspace=0.25)
        path = out_dir / f"attention-layer-{layer}.png"
        fig.savefig(path, dpi=PLOT_DPI)  # no bbox_inches="tight": the size stays as set
        plt.close(fig)
        paths.append(path)
    return paths
