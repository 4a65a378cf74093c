"""The minibert weights format: one HDF5 file holds everything needed to run a model offline.

This is the only module that knows HDF5 paths. The format is specified in
``weights/README.md``; in short::

    /                       attrs: format="minibert-bert", format_version=2, minibert_version,
                                   source (str), source_sha256 (JSON {file name: hex digest}),
                                   heads (JSON list of the task heads the file holds),
                                   metadata_sha256 (hex digest of config + vocab + heads + tensor list)
    /config                 attrs: one per BertConfig field (id2label as a JSON string)
    /vocab                  [vocab_size] UTF-8 strings, index = token id; attr do_lower_case
    /weights/<name>         one dataset per tensor, <name> the Hugging Face parameter name,
                            e.g. /weights/encoder.layer.0.attention.self.query.weight;
                            Linear weights stored [out, in] exactly as in PyTorch;
                            attr sha256 = hex digest of the tensor's little-endian C-order bytes

Every read checks the layout (hard links only, plain datasets inside the file, declared shapes
against the config and the file size) before reading data, and the metadata digest; every
tensor's SHA-256 is checked when the file is loaded (``verify=True``, the default). A
truncated, corrupted or edited file is an error, never a silently wrong answer.
"""

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import hdf5
from .config import BertConfig
from .errors import ConfigError, MinibertError, WeightsError
from .version import __version__

FORMAT_NAME = "minibert-bert"
FORMAT_VERSION = 2  # 2: /metadata_sha256 covers config, vocabulary, heads and the tensor list

RECONVERT = "re-run `minibert convert` on the original checkpoint"


def encoder_shapes(config):
    """Name -> shape of every tensor a BertModel encoder needs (the names of transformers)."""
    H, I = config.hidden_size, config.intermediate_size
    shapes = {
        "embeddings.word_embeddings.weight": (config.vocab_size, H),
        "embeddings.position_embeddings.weight": (config.max_position_embeddings, H),
        "embeddings.token_type_embeddings.weight": (config.type_vocab_size, H),
        "embeddings.LayerNorm.weight": (H,),
        "embeddings.LayerNorm.bias": (H,),
    }
    for i in range(config.num_hidden_layers):
        p = f"encoder.layer.{i}."
        for proj in ("query", "key", "value"):
            shapes[p + f"attention.self.{proj}.weight"] = (H, H)  # [out, in]
            shapes[p + f"attention.self.{proj}.bias"] = (H,)
        shapes[p + "attention.output.dense.weight"] = (H, H)
        shapes[p + "attention.output.dense.bias"] = (H,)
        shapes[p + "attention.output.LayerNorm.weight"] = (H,)
        shapes[p + "attention.output.LayerNorm.bias"] = (H,)
        shapes[p + "intermediate.dense.weight"] = (I, H)
        shapes[p + "intermediate.dense.bias"] = (I,)
        shapes[p + "output.dense.weight"] = (H, I)
        shapes[p + "output.dense.bias"] = (H,)
        shapes[p + "output.LayerNorm.weight"] = (H,)
        shapes[p + "output.LayerNorm.bias"] = (H,)
    shapes["pooler.dense.weight"] = (H, H)
    shapes["pooler.dense.bias"] = (H,)
    return shapes


def shape_reason(name, config):
    """A short phrase saying which config values a tensor's expected shape comes from."""
    if "word_embeddings" in name:
        return f"vocab_size={config.vocab_size}, hidden_size={config.hidden_size}"
    if "position_embeddings" in name:
        return f"max_position_embeddings={config.max_position_embeddings}, hidden_size={config.hidden_size}"
    if "token_type_embeddings" in name:
        return f"type_vocab_size={config.type_vocab_size}, hidden_size={config.hidden_size}"
    if "intermediate" in name or ".output.dense.weight" in name and "attention" not in name:
        return f"hidden_size={config.hidden_size}, intermediate_size={config.intermediate_size}"
    return f"hidden_size={config.hidden_size}"


# BertForMaskedLM is built without the pooling layer, so its checkpoints have no pooler.
POOLER_TENSORS = ("pooler.dense.weight", "pooler.dense.bias")


def has_pooler(tensors):
    return all(name in tensors for name in POOLER_TENSORS)


def check_encoder_tensors(tensors, config, source):
    """Raise WeightsError naming the first encoder tensor that is missing or mis-shaped.

    The pooler is optional as a pair (a BertForMaskedLM checkpoint has none), not alone.
    """
    pooler_absent = not any(name in tensors for name in POOLER_TENSORS)
    for name, shape in encoder_shapes(config).items():
        if name in POOLER_TENSORS and pooler_absent:
            continue
        if name not in tensors:
            raise WeightsError(f"{source}: tensor {name} is missing", RECONVERT)
        found = tuple(tensors[name].shape)
        if found != shape:
            raise WeightsError(
                f"{source}: tensor {name} has shape {found}, expected {shape} for "
                f"{shape_reason(name, config)} in the config",
                RECONVERT,
            )


def head_shapes(config, head):
    """Name -> shape of the tensors a task head needs, and of the optional ones it may have.

    Returns (required, optional). The masked-LM decoder is tied to the word embeddings:
    ``cls.predictions.decoder.weight`` / ``.bias`` are stored only when a checkpoint's values
    differ from ``embeddings.word_embeddings.weight`` / ``cls.predictions.bias`` (untied).
    """
    H, V = config.hidden_size, config.vocab_size
    if head == "masked-lm":
        required = {
            "cls.predictions.transform.dense.weight": (H, H),
            "cls.predictions.transform.dense.bias": (H,),
            "cls.predictions.transform.LayerNorm.weight": (H,),
            "cls.predictions.transform.LayerNorm.bias": (H,),
            "cls.predictions.bias": (V,),
        }
        optional = {"cls.predictions.decoder.weight": (V, H), "cls.predictions.decoder.bias": (V,)}
        return required, optional
    if head == "next-sentence":
        return {"cls.seq_relationship.weight": (2, H), "cls.seq_relationship.bias": (2,)}, {}
    if head == "classification":
        N = config.num_labels
        return {"classifier.weight": (N, H), "classifier.bias": (N,)}, {}
    raise ValueError(f"unknown head {head!r}")


HEAD_REASONS = {
    "masked-lm": "hidden_size={H}, vocab_size={V}",
    "next-sentence": "hidden_size={H} and 2 classes (is next / is random)",
    "classification": "hidden_size={H} and num_labels={N} (the length of id2label)",
}


def check_head_tensors(tensors, config, heads, source):
    """Raise WeightsError naming the first head tensor that is missing or mis-shaped."""
    for head in heads:
        if head not in HEAD_REASONS:
            raise WeightsError(f"{source}: unknown head {head!r} in the file's heads attribute", RECONVERT)
        required, optional = head_shapes(config, head)
        reason = HEAD_REASONS[head].format(H=config.hidden_size, V=config.vocab_size, N=config.num_labels)
        if head in ("next-sentence", "classification") and not has_pooler(tensors):
            raise WeightsError(
                f"{source}: the {head} head reads the pooler output, but the file has no pooler.dense tensors",
                RECONVERT,
            )
        for name in required:
            if name not in tensors:
                raise WeightsError(f"{source}: tensor {name} of the {head} head is missing", RECONVERT)
        for name, shape in {**required, **optional}.items():
            if name in tensors and tuple(tensors[name].shape) != shape:
                raise WeightsError(
                    f"{source}: tensor {name} of the {head} head has shape {tuple(tensors[name].shape)}, "
                    f"expected {shape} for {reason} in the config",
                    RECONVERT,
                )


def tensor_sha256(array):
    """SHA-256 of an array's little-endian, C-order bytes (the checksum stored per tensor)."""
    a = np.ascontiguousarray(array)
    a = a.astype(a.dtype.newbyteorder("<"), copy=False)
    return hashlib.sha256(a).hexdigest()  # reads the array's own buffer: no copy of its bytes


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class WeightsFile:
    """Everything a minibert .h5 file holds, in memory."""

    config: BertConfig
    tensors: dict  # Hugging Face name -> np.ndarray
    vocab: list = field(default_factory=list)  # token strings, index = id ([] if the file has none)
    do_lower_case: bool = True
    heads: list = field(default_factory=list)  # e.g. ["masked-lm", "next-sentence"]
    source: str = ""
    source_sha256: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION


def _h5py():
    import h5py

    return h5py


# The attributes that change what a file computes or how it tokenizes, in one canonical JSON
# text whose SHA-256 the file stores as /metadata_sha256 (format version 2). The tensor
# manifest (name, dtype, shape, SHA-256 of each tensor) is part of it, so a tensor removed,
# added or renamed is caught as surely as an edited config value or vocabulary entry.
def metadata_record(config, vocab, do_lower_case, heads, manifest):
    """The canonical serialisation behind /metadata_sha256 (a JSON text, keys sorted)."""
    cfg = config.to_dict()
    cfg["id2label"] = {str(k): v for k, v in sorted(cfg["id2label"].items())}
    record = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": cfg,
        "vocab": list(vocab),
        "do_lower_case": bool(do_lower_case),
        "heads": list(heads),
        "tensors": {name: list(entry) for name, entry in sorted(manifest.items())},
    }
    return json.dumps(record, sort_keys=True, ensure_ascii=True, separators=(",", ":"))


def metadata_sha256(config, vocab, do_lower_case, heads, manifest):
    return hashlib.sha256(metadata_record(config, vocab, do_lower_case, heads, manifest).encode("ascii")).hexdigest()


def manifest_entry(array_or_dataset, sha256):
    """(dtype, shape, sha256) of one tensor, as the metadata digest records it."""
    return (np.dtype(array_or_dataset.dtype).newbyteorder("<").str, list(map(int, array_or_dataset.shape)), str(sha256))


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save(path, weights):
    """Write a WeightsFile to ``path`` (.h5), safely; returns the path.

    The file is written under a fresh unique name in the same directory (``tempfile.mkstemp``:
    created exclusively, never through a symlink), read back and verified (every checksum),
    and only then renamed to ``path``. On any failure or Ctrl-C the temporary file is removed.
    """
    h5py = _h5py()
    path = Path(path)
    if path.is_dir():
        raise WeightsError(f"{path}: is a directory", f"give the output file's name, e.g. {path / 'model.h5'}")
    check_encoder_tensors(weights.tensors, weights.config, path)  # never write a file load() would refuse
    check_head_tensors(weights.tensors, weights.config, weights.heads, path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    except OSError as e:
        raise WeightsError(
            f"{path}: cannot write there ({e.strerror})", "choose a writable directory for the output"
        ) from None
    os.close(fd)
    try:
        manifest = {}
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT_NAME
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["minibert_version"] = __version__
            f.attrs["source"] = weights.source
            f.attrs["source_sha256"] = json.dumps(weights.source_sha256, sort_keys=True)
            f.attrs["heads"] = json.dumps(list(weights.heads))
            g = f.create_group("config")
            for key, value in weights.config.to_dict().items():
                if value is None:  # an optional setting left unset (classifier_dropout): absent from the file
                    continue
                g.attrs[key] = json.dumps({str(k): v for k, v in value.items()}) if isinstance(value, dict) else value
            if weights.vocab:
                v = f.create_dataset(
                    "vocab", data=np.array(weights.vocab, dtype=object), dtype=h5py.string_dtype("utf-8")
                )
                v.attrs["do_lower_case"] = bool(weights.do_lower_case)
            w = f.create_group("weights")
            for name in sorted(weights.tensors):
                array = np.ascontiguousarray(weights.tensors[name])
                d = w.create_dataset(name, data=array)
                d.attrs["sha256"] = digest = tensor_sha256(array)
                manifest[name] = manifest_entry(array, digest)
            f.attrs["metadata_sha256"] = metadata_sha256(
                weights.config, weights.vocab, weights.do_lower_case, weights.heads, manifest
            )
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; give it a normal file's mode
        try:
            load(tmp, verify=True)  # read back: never report success for a file we did not verify
        except WeightsError as e:
            raise WeightsError(
                f"{path}: the written file fails verification: {e.message.replace(tmp, str(path))}",
                "check the disk (space, errors) and convert again",
            ) from None
        os.replace(tmp, path)  # atomic: the real name only ever holds a complete, verified file
    except BaseException:  # an error, Ctrl-C: leave nothing behind
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _check_format(f, path):
    """The format name and version of an open file; anything else is a WeightsError."""
    fmt = f.attrs.get("format")
    if fmt != FORMAT_NAME:
        raise WeightsError(
            f"{path}: HDF5 file is not a minibert weights file (format attribute {fmt!r}, expected {FORMAT_NAME!r})",
            RECONVERT,
        )
    version = _attr(f, "/", "format_version", int, path)
    if version != FORMAT_VERSION:
        why = " (version 1 files carry no checksum of their config and vocabulary)" if version == 1 else ""
        raise WeightsError(
            f"{path}: format version {version}, this minibert reads version {FORMAT_VERSION}{why}",
            f"{RECONVERT} with this version of minibert",
        )


def _attr(obj, where, key, kind, path):
    """An attribute of the expected Python type (str, int, float, bool), or a WeightsError."""
    if key not in obj.attrs:
        raise WeightsError(f"{path}: attribute {key!r} of {where} is missing", RECONVERT)
    value = obj.attrs[key]
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if isinstance(value, np.generic):
        value = value.item()
    ok = {
        str: isinstance(value, str),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        bool: isinstance(value, bool),
    }[kind]
    if not ok:
        raise WeightsError(f"{path}: attribute {key!r} of {where} is {value!r}, expected a {kind.__name__}", RECONVERT)
    return value


def _json_attr(obj, where, key, kind, path):
    text = _attr(obj, where, key, str, path)
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise WeightsError(
            f"{path}: attribute {key!r} of {where} is not valid JSON: {text[:80]!r}", RECONVERT
        ) from None
    if not isinstance(value, kind):
        raise WeightsError(
            f"{path}: attribute {key!r} of {where} is a JSON {type(value).__name__}, expected a {kind.__name__}",
            RECONVERT,
        )
    return value


def _config_kinds():
    """Field -> the Python type /config stores it as, read off BertConfig's defaults (a dict as JSON text)."""
    return {name: type(value) for name, value in BertConfig().to_dict().items()}


def _read_config(f, path):
    members = hdf5.members(f, path, WeightsError, RECONVERT)
    if "config" not in members or not isinstance(members["config"], _h5py().Group):
        raise WeightsError(f"{path}: the /config group is missing", RECONVERT)
    g = members["config"]
    d = {}
    for name, kind in _config_kinds().items():
        if kind is dict:
            d[name] = _json_attr(g, "/config", name, dict, path)
        elif kind in (str, int, float, bool):
            d[name] = _attr(g, "/config", name, kind, path)
        else:  # a field without a typed default (None): BertConfig checks it
            d[name] = g.attrs.get(name)
    try:
        return BertConfig.from_dict(d, source=f"{path}:/config")
    except ConfigError as e:
        raise WeightsError(e.message, RECONVERT) from None


def _read_heads(f, path):
    heads = _json_attr(f, "/", "heads", list, path)
    for head in heads:
        if head not in HEAD_REASONS:
            raise WeightsError(f"{path}: unknown head {head!r} in the file's heads attribute", RECONVERT)
    return heads


def _check_layout(f, path, config, heads):
    """Check everything a reader relies on BEFORE reading any tensor or string.

    Only hard links; /weights holds datasets only, each a plain float32/float64 dataset of the
    shape the config and heads expect (unknown extra names: any float shape), stored inside
    the file; /vocab, when present, vlen UTF-8 strings, one per id. Returns the /weights
    datasets and the /vocab dataset (or None).
    """
    h5py = _h5py()
    members = hdf5.members(f, path, WeightsError, RECONVERT)
    unknown = sorted(set(members) - {"config", "vocab", "weights"})
    if unknown:
        raise WeightsError(
            f"{path}: unexpected object(s) {', '.join('/' + n for n in unknown)} at the top level", RECONVERT
        )
    if "weights" not in members or not isinstance(members["weights"], h5py.Group):
        raise WeightsError(f"{path}: the /weights group is missing", RECONVERT)
    datasets = hdf5.members(members["weights"], path, WeightsError, RECONVERT)
    for name, d in datasets.items():
        if not isinstance(d, h5py.Dataset):
            raise WeightsError(f"{path}: /weights/{name} is a group; /weights holds one dataset per tensor", RECONVERT)
    check_encoder_tensors(datasets, config, path)  # names and declared shapes, before reading
    check_head_tensors(datasets, config, heads, path)
    total = 0
    for name, d in datasets.items():
        if d.dtype.kind != "f" or d.dtype.itemsize not in (4, 8):
            raise WeightsError(f"{path}: tensor {name} has dtype {d.dtype}, expected float32 or float64", RECONVERT)
        total += hdf5.check_dataset(d, path, WeightsError, RECONVERT)
    size = os.path.getsize(path)
    if total > size:
        raise WeightsError(f"{path}: the tensors declare {total:,} bytes but the file has {size:,}", RECONVERT)
    vocab = members.get("vocab")
    if vocab is not None:
        if (
            not isinstance(vocab, h5py.Dataset)
            or h5py.check_string_dtype(vocab.dtype) is None
            or vocab.dtype.kind != "O"
        ):
            raise WeightsError(f"{path}: /vocab is not a dataset of variable-length strings", RECONVERT)
        if vocab.shape != (config.vocab_size,):
            raise WeightsError(
                f"{path}: /vocab has shape {vocab.shape}, expected ({config.vocab_size},) "
                f"for vocab_size={config.vocab_size}",
                RECONVERT,
            )
        hdf5.check_dataset(vocab, path, WeightsError, RECONVERT)
        _attr(vocab, "/vocab", "do_lower_case", bool, path)
    return datasets, vocab


def _read_vocab(vocab, path):
    """(tokens, do_lower_case) of a checked /vocab dataset; ([], True) when the file has none."""
    if vocab is None:
        return [], True
    tokens = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in vocab[()]]
    return tokens, _attr(vocab, "/vocab", "do_lower_case", bool, path)


def _check_metadata(f, path, config, tokens, do_lower_case, heads, datasets):
    """Compare /metadata_sha256 with the digest of what was read (config, vocabulary, heads, manifest)."""
    manifest = {
        name: manifest_entry(d, _attr(d, f"/weights/{name}", "sha256", str, path)) for name, d in datasets.items()
    }
    stored = _attr(f, "/", "metadata_sha256", str, path)
    if metadata_sha256(config, tokens, do_lower_case, heads, manifest) != stored:
        raise WeightsError(
            f"{path}: the config, vocabulary, heads or tensor list fail their SHA-256 check "
            "(the file is corrupted or was edited)",
            RECONVERT,
        )


def _read_checked(f, path):
    """Config, heads, datasets, vocabulary of an open file: layout checked, metadata verified."""
    config = _read_config(f, path)
    heads = _read_heads(f, path)
    datasets, vocab = _check_layout(f, path, config, heads)
    tokens, do_lower_case = _read_vocab(vocab, path)
    _check_metadata(f, path, config, tokens, do_lower_case, heads, datasets)
    return config, heads, datasets, tokens, do_lower_case


def _read_metadata(f, path):
    """Everything but the tensor bytes: what the bounded first pass reads."""
    config, heads, datasets, tokens, do_lower_case = _read_checked(f, path)
    for key in ("source", "minibert_version"):
        _attr(f, "/", key, str, path)
    _json_attr(f, "/", "source_sha256", dict, path)
    return config


def _run(path, read):
    """Open the file, check its format, run ``read(f)``; damaged HDF5 structures become a WeightsError."""
    path = Path(path)
    hint = (
        f"convert a checkpoint first: `minibert convert SRC {path}`"
        if not path.exists()
        else "to convert a Hugging Face directory run `minibert convert DIR OUT.h5`"
        if path.is_dir()
        else f"the file is truncated or of another kind; {RECONVERT}"
    )
    with hdf5.open_file(path, WeightsError, hint) as f:
        try:
            _check_format(f, path)
            return read(f)
        except MinibertError:
            raise
        except hdf5.H5_ERRORS as e:
            raise WeightsError(f"{path}: the file is damaged ({type(e).__name__}: {e})", RECONVERT) from None


def _guarded(path, read, meanwhile=None):
    """``_run(path, read)`` after a metadata pass bounded in time and memory (``hdf5.bounded``).

    ``meanwhile``: run in this process while that pass runs in its child (``hdf5.bounded``).
    """
    path = Path(path)

    def check():  # in the child: everything but the tensor bytes
        _run(path, lambda f: _read_metadata(f, path))

    hdf5.bounded(check, path, WeightsError, RECONVERT, meanwhile=meanwhile)
    return _run(path, read)


def read_config(path):
    """The BertConfig stored in a minibert .h5 file (metadata checksum verified)."""
    return _guarded(path, lambda f: _read_checked(f, path)[0])


def read_vocab(path):
    """(tokens, do_lower_case) stored in a minibert .h5 file (metadata checksum verified)."""

    def read(f):
        tokens, do_lower_case = _read_checked(f, path)[3:]
        if not tokens:
            raise WeightsError(f"{path}: the file holds no vocabulary", "convert from a directory that has vocab.txt")
        return tokens, do_lower_case

    return _guarded(path, read)


def read_tensor_names(path):
    """The names of the tensors a minibert .h5 file holds (metadata checksum verified, no data read)."""
    return _guarded(path, lambda f: sorted(_read_checked(f, path)[2]))


def _read_tensors(datasets, path, verify):
    """Name -> array of every checked /weights dataset; with ``verify``, each one's SHA-256 checked.

    The digests are computed by worker threads while this thread reads the next tensors
    (h5py's read and hashlib both release the GIL), so verifying adds little to the read time.
    """
    from concurrent.futures import ThreadPoolExecutor

    tensors, digests = {}, {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        for name, d in datasets.items():
            tensors[name] = d[()]
            if verify:
                digests[name] = pool.submit(tensor_sha256, tensors[name])
    for name, digest in digests.items():  # in file order: the first bad tensor is the one named
        if digest.result() != _attr(datasets[name], f"/weights/{name}", "sha256", str, path):
            raise WeightsError(
                f"{path}: tensor {name} fails its SHA-256 check (the file is corrupted or was edited)",
                RECONVERT,
            )
    return tensors


def load(path, verify=True, meanwhile=None):
    """Read a minibert .h5 file into a WeightsFile, checking format, layout, shapes and checksums.

    Always: the layout and declared sizes (before reading), and the metadata checksum.
    ``verify=True`` (the default) also checks every tensor's SHA-256. ``meanwhile``: a function
    run while the metadata is checked in a child process (``minibert.load`` imports the Numba
    kernels there: the two overlap).
    """
    path = Path(path)

    def read(f):
        config, heads, datasets, tokens, do_lower_case = _read_checked(f, path)
        tensors = _read_tensors(datasets, path, verify)
        return WeightsFile(
            config=config,
            tensors=tensors,
            vocab=tokens,
            do_lower_case=do_lower_case,
            heads=heads,
            source=_attr(f, "/", "source", str, path),
            source_sha256=_json_attr(f, "/", "source_sha256", dict, path),
            format_version=FORMAT_VERSION,
        )

    weights = _guarded(path, read, meanwhile)
    check_encoder_tensors(weights.tensors, weights.config, path)
    check_head_tensors(weights.tensors, weights.config, weights.heads, path)
    return weights
