"""Step through the forward pass: capture every named step, change one, compare two runs.

The forward pass in ``model.py`` passes every step's value through ``tap(name, value)``. This
module supplies the taps:

* ``capture(model, ...)`` (or ``model.trace(...)``) records the steps into a ``Trace``: an
  ordered mapping name -> array, in execution order, saved to and loaded from ``.h5``;
* ``patch=`` replaces a step's value (activation patching: zero one head,
  paste in the activation of another input), and the rest of the pass computes from it;
* ``MINIBERT_BREAK=<name>`` stops in ``pdb`` at that step (``up`` shows the forward pass).

``compare.py`` lines two traces up by name and names the first step that differs;
``plot.py`` draws a trace's attention maps; ``reference.py`` builds the same named trace from
transformers' PyTorch ``BertModel``.

Names are the Hugging Face module names (``encoder.layer.0.attention.self.probs``), so a
value here and its twin in PyTorch are found by the same string. TransformerLens names
(``blocks.0.attn.hook_pattern``) are accepted as aliases wherever a name or pattern is, for
the steps whose value TransformerLens' ``HookedEncoder`` also has (``TRANSFORMERLENS_ALIASES``
says per alias what differs).
"""

import difflib
import fnmatch
import inspect
import json
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from . import hdf5
from .errors import InputError, MinibertError
from .inputs import check_inputs

__all__ = ["BREAK_ENV", "TRANSFORMERLENS_ALIASES", "Recorder", "Trace", "capture", "matches", "resolve_name"]

TRACE_FORMAT = "minibert-trace"
TRACE_FORMAT_VERSION = 1
BREAK_ENV = "MINIBERT_BREAK"  # e.g. MINIBERT_BREAK=encoder.layer.1.attention.self.probs

# ---------------------------------------------------------------------------------------
# TransformerLens aliases
# ---------------------------------------------------------------------------------------

# TransformerLens ``HookedEncoder`` hook name -> minibert (Hugging Face) name, and how the two
# values differ. Per-layer names are written for block {i}; "blocks.{i}." maps to
# "encoder.layer.{i}.". Only hooks with a minibert twin are listed: TransformerLens'
# blocks.{i}.hook_resid_mid and hook_resid_post are the residual sums BEFORE LayerNorm (BERT is
# post-LN), which minibert does not tap; hook_resid_pre is the previous layer's output.
TRANSFORMERLENS_ALIASES = {
    "embed.hook_embed": ("embeddings.word_embeddings", "same value"),
    "embed.hook_pos_embed": (
        "embeddings.position_embeddings",
        "same values; TL repeats them [B, T, H], here [1, T, H]",
    ),
    "embed.hook_token_type_embed": ("embeddings.token_type_embeddings", "same value"),
    "hook_full_embed": ("embeddings.LayerNorm", "same value"),
    "blocks.{i}.attn.hook_q": (
        "encoder.layer.{i}.attention.self.query",
        "same values; TL [B, T, A, D], here [B, T, H]",
    ),
    "blocks.{i}.attn.hook_k": ("encoder.layer.{i}.attention.self.key", "same values; TL [B, T, A, D], here [B, T, H]"),
    "blocks.{i}.attn.hook_v": (
        "encoder.layer.{i}.attention.self.value",
        "same values; TL [B, T, A, D], here [B, T, H]",
    ),
    "blocks.{i}.attn.hook_attn_scores": (
        "encoder.layer.{i}.attention.self.scores",
        "TL adds the mask (-1e5 on padding) first, here before the mask: equal where no key is padding",
    ),
    "blocks.{i}.attn.hook_pattern": (
        "encoder.layer.{i}.attention.self.probs",
        "same value, except a fully masked row (uniform here and in transformers, not in TL)",
    ),
    "blocks.{i}.attn.hook_z": (
        "encoder.layer.{i}.attention.self.context",
        "same values; TL [B, T, A, D], here [B, T, H]",
    ),
    "blocks.{i}.hook_attn_out": ("encoder.layer.{i}.attention.output.dense", "same value"),
    "blocks.{i}.ln1.hook_normalized": ("encoder.layer.{i}.attention.output.LayerNorm", "same value"),
    "blocks.{i}.mlp.hook_pre": ("encoder.layer.{i}.intermediate.dense", "same value"),
    "blocks.{i}.mlp.hook_post": ("encoder.layer.{i}.intermediate.gelu", "same value"),
    "blocks.{i}.hook_mlp_out": ("encoder.layer.{i}.output.dense", "same value"),
    "blocks.{i}.hook_normalized_resid_post": ("encoder.layer.{i}.output.LayerNorm", "same value"),
    "blocks.{i}.ln2.hook_normalized": ("encoder.layer.{i}.output.LayerNorm", "same value"),
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


def matches_any(names, pattern):
    """Whether a glob pattern (TransformerLens aliases allowed) matches any of the step names."""
    resolved = resolve_name(pattern)
    return any(fnmatch.fnmatchcase(name, resolved) for name in names)


# ---------------------------------------------------------------------------------------
# Trace: an ordered mapping name -> array, with the inputs and where it came from
# ---------------------------------------------------------------------------------------


class Trace(Mapping):
    """Every captured step of one forward pass: name -> array, in execution order.

    ``trace["encoder.layer.0.attention.self.probs"]`` is a NumPy array ([B, A, T, T]);
    iterating gives the names in the order the forward pass computed them.
    ``meta`` says what produced it: the inputs, dtype, backend, model file, source file.
    """

    def __init__(self, values: "dict[str, np.ndarray] | None" = None, meta: "dict | None" = None, output=None):
        self.values = dict(values or {})  # insertion order = execution order
        self.meta = dict(meta or {})
        self.output = output  # the BertOutput of the traced pass (from capture; not saved)

    def __getitem__(self, name: str) -> np.ndarray:
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
    def shapes(self) -> "dict[str, tuple]":
        """name -> shape tuple, in execution order."""
        return {name: tuple(v.shape) for name, v in self.values.items()}

    def summary(self, values: int = 4) -> str:
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

    def save(self, path: "str | Path") -> Path:
        """Write the trace to an .h5 file; ``Trace.load`` gives back the same names, order, dtypes, meta."""
        import h5py

        path = Path(path)
        if path.is_dir():
            raise InputError(f"{path}: is a directory", f"give a file name, e.g. {path / 'trace.h5'}")
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
    def load(cls, path: "str | Path") -> "Trace":
        """Read a trace written by ``Trace.save``, checking it as untrusted input.

        Hard links only; plain datasets stored inside the file (no external links or storage,
        no virtual datasets), their declared sizes checked against the file's size before
        reading; the attributes' types; real-valued steps and integer inputs. The structure is
        read first in a child process bounded in time and memory (``hdf5.bounded``).
        """
        path = Path(path)
        hint = "pass a file written by Trace.save (`minibert trace MODEL.h5 TEXT --out FILE.h5`)"
        if not path.exists():
            raise InputError(
                f"{path}: trace file not found", "write one with `minibert trace MODEL.h5 TEXT --out FILE.h5`"
            )
        hdf5.bounded(lambda: _read_trace(path, hint, data=False), path, InputError, hint)
        return cls(*_read_trace(path, hint, data=True))


def _read_trace(path, hint, data):
    """(values, meta) of a trace file, or only its checks when ``data`` is False."""
    with hdf5.open_file(path, InputError, hint) as f:
        try:
            return _read_trace_file(f, path, hint, data)
        except MinibertError:
            raise
        except hdf5.H5_ERRORS as e:
            raise InputError(f"{path}: the trace file is damaged ({type(e).__name__}: {e})", hint) from None


def _trace_attr(f, key, kind, path, hint):
    value = f.attrs.get(key)
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if isinstance(value, np.generic):
        value = value.item()
    if kind is not str:  # a JSON text of that kind
        try:
            value = json.loads(value) if isinstance(value, str) else None
        except (ValueError, RecursionError):
            value = None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InputError(
            f"{path}: the trace attribute {key!r} is missing or not a {kind.__name__} ({str(value)[:60]!r})", hint
        )
    return value


def _read_trace_file(f, path, hint, data):
    import h5py

    if f.attrs.get("format") != TRACE_FORMAT:
        raise InputError(f"{path}: not a minibert trace (format {f.attrs.get('format')!r})", hint)
    version = f.attrs.get("format_version")
    if not isinstance(version, (int, np.integer)) or int(version) != TRACE_FORMAT_VERSION:
        raise InputError(
            f"{path}: trace format version {version!r}, expected {TRACE_FORMAT_VERSION}", "re-record the trace"
        )
    order = _trace_attr(f, "order", list, path, hint)
    meta = _trace_attr(f, "meta", dict, path, hint)
    if not all(isinstance(n, str) for n in order) or len(set(order)) != len(order):
        raise InputError(f"{path}: the trace attribute 'order' must list distinct step names", hint)
    groups = hdf5.members(f, path, InputError, hint)
    if set(groups) != {"inputs", "values"} or not all(isinstance(g, h5py.Group) for g in groups.values()):
        raise InputError(f"{path}: a trace holds the groups /inputs and /values, found {sorted(groups)}", hint)
    inputs = hdf5.members(groups["inputs"], path, InputError, hint)
    values = hdf5.members(groups["values"], path, InputError, hint)
    if sorted(values) != sorted(order):
        raise InputError(f"{path}: /values holds {len(values)} steps but 'order' lists {len(order)}", hint)
    if set(inputs) != {"input_ids", "attention_mask", "token_type_ids"}:
        raise InputError(
            f"{path}: /inputs must hold input_ids, attention_mask, token_type_ids (found {sorted(inputs)})", hint
        )
    total = 0
    for where, group, kinds in (("/inputs", inputs, "iu"), ("/values", values, "f")):
        for name, d in group.items():
            if not isinstance(d, h5py.Dataset):
                raise InputError(f"{path}: {where}/{name} is a group, expected a dataset", hint)
            if d.dtype.kind not in kinds:
                expected = "integers" if kinds == "iu" else "floating point"
                raise InputError(f"{path}: {where}/{name} has dtype {d.dtype}, expected {expected}", hint)
            total += hdf5.check_dataset(d, path, InputError, hint)
    if total > os.path.getsize(path):
        raise InputError(
            f"{path}: the datasets declare {total:,} bytes but the file has {os.path.getsize(path):,}", hint
        )
    if not data:
        return None
    meta["inputs"] = {name: d[()] for name, d in inputs.items()}
    return {name: values[name][()] for name in order}, meta


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
        self.seen = []  # every step name that went through, recorded or not
        self.patched = set()  # names whose patch was applied

    def __call__(self, name, value):
        self.seen.append(name)
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


def closest_steps(name, seen):
    """'; closest: a, b' naming the step names most like a mistyped one ('' when none is close)."""
    close = difflib.get_close_matches(name, list(dict.fromkeys(seen)), n=3, cutoff=0.6)
    return f"; closest: {', '.join(close)}" if close else ""


_WARNED_BREAKS = set()  # MINIBERT_BREAK values already warned about: warn once per process


def warn_unmatched_break(pattern, seen):
    """A MINIBERT_BREAK that matches no step never stops: say so once, with the closest names."""
    if pattern in _WARNED_BREAKS:
        return
    _WARNED_BREAKS.add(pattern)
    warnings.warn(
        f"{BREAK_ENV}={pattern!r} matches no step of the forward pass, so it never stops"
        f"{closest_steps(pattern, seen)} (list them with `minibert hooks`)",
        UserWarning,
        stacklevel=3,
    )


def capture(model, input_ids, attention_mask=None, token_type_ids=None, only=None, patch=None) -> Trace:
    """Run the forward pass and return a ``Trace`` of its steps (see ``BertModel.trace``).

    ``model``: a ``BertModel`` or a head model (anything with ``config`` and ``forward``).
    The inputs are checked once, here, and the checked arrays go into the trace's meta.
    """
    input_ids, attention_mask, token_type_ids = check_inputs(model.config, input_ids, attention_mask, token_type_ids)
    recorder = Recorder(only=only, patch=patch, break_at=os.environ.get(BREAK_ENV) or None)
    out = model.forward(input_ids, attention_mask, token_type_ids, tap=recorder)
    for key in list(patch or {}) + (recorder.only or []):
        if not matches_any(recorder.seen, key):
            raise InputError(
                f"{key!r} names no step of the forward pass{closest_steps(key, recorder.seen)}",
                f"list the steps with `minibert hooks {getattr(model, 'path', None) or 'FILE.h5'}`",
            )
    if recorder.break_at is not None and not matches_any(recorder.seen, recorder.break_at):
        warn_unmatched_break(recorder.break_at, recorder.seen)
    meta = {
        "producer": "minibert",
        "backend": model.backend,
        "dtype": str(model.dtype),
        "model_file": str(model.path or ""),
        "source_file": os.path.abspath(inspect.getsourcefile(type(model))),
        "patched": sorted(recorder.patched),
        "only": recorder.only or [],  # a partial trace: compare() leaves out the steps it did not keep
        "inputs": {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids},
    }
    return Trace(recorder.values, meta, output=out)
