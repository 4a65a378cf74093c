"""The minibert weights format: one HDF5 file holds everything needed to run a model offline.

This is the only module that knows HDF5 paths. The format is specified in
``weights/README.md``; in short::

    /                       attrs: format="minibert-bert", format_version=1, minibert_version,
                                   source (str), source_sha256 (JSON {file name: hex digest}),
                                   heads (JSON list of the task heads the file holds)
    /config                 attrs: one per BertConfig field (id2label as a JSON string)
    /vocab                  [vocab_size] UTF-8 strings, index = token id; attr do_lower_case
    /weights/<name>         one dataset per tensor, <name> the Hugging Face parameter name,
                            e.g. /weights/encoder.layer.0.attention.self.query.weight;
                            Linear weights stored [out, in] exactly as in PyTorch;
                            attr sha256 = hex digest of the tensor's little-endian C-order bytes

Every tensor's SHA-256 is checked when the file is loaded (``verify=True``, the default), so a
truncated or corrupted file is an error, never a silently wrong answer.
"""

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import BertConfig
from .errors import ConfigError, WeightsError
from .version import __version__

FORMAT_NAME = "minibert-bert"
FORMAT_VERSION = 1

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
            raise WeightsError(f"{source}: the {head} head reads the pooler output, but the file has no pooler.dense tensors", RECONVERT)
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
    return hashlib.sha256(a.tobytes()).hexdigest()


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


def save(path, weights):
    """Write a WeightsFile to ``path`` (.h5). Tensors are stored in their own dtype."""
    h5py = _h5py()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
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
            g.attrs[key] = json.dumps({str(k): v for k, v in value.items()}) if key == "id2label" else value
        if weights.vocab:
            v = f.create_dataset("vocab", data=np.array(weights.vocab, dtype=object), dtype=h5py.string_dtype("utf-8"))
            v.attrs["do_lower_case"] = bool(weights.do_lower_case)
        w = f.create_group("weights")
        for name in sorted(weights.tensors):
            array = np.ascontiguousarray(weights.tensors[name])
            d = w.create_dataset(name, data=array)
            d.attrs["sha256"] = tensor_sha256(array)
    tmp.replace(path)  # a crash mid-write never leaves a half-written file under the real name
    return path


def _open(path):
    """Open an .h5 file for reading, turning every failure into a WeightsError."""
    h5py = _h5py()
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"{path}: file not found", "convert a checkpoint first: `minibert convert SRC " + str(path) + "`")
    if path.is_dir():
        raise WeightsError(f"{path}: is a directory, expected a minibert .h5 file", "to convert a Hugging Face directory run `minibert convert DIR OUT.h5`")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise WeightsError(f"{path}: not a readable HDF5 file ({e})", f"the file is truncated or of another kind; {RECONVERT}") from None
    fmt = f.attrs.get("format")
    if fmt != FORMAT_NAME:
        f.close()
        raise WeightsError(f"{path}: HDF5 file is not a minibert weights file (format attribute {fmt!r}, expected {FORMAT_NAME!r})", RECONVERT)
    version = int(f.attrs.get("format_version", -1))
    if version != FORMAT_VERSION:
        f.close()
        raise WeightsError(
            f"{path}: format version {version}, this minibert reads version {FORMAT_VERSION}",
            f"{RECONVERT} with this version of minibert",
        )
    return f


def _read_config(f, path):
    if "config" not in f:
        raise WeightsError(f"{path}: the /config group is missing", RECONVERT)
    d = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f["config"].attrs.items()}
    if "id2label" in d:
        d["id2label"] = json.loads(d["id2label"])
    try:
        return BertConfig.from_dict(d, source=f"{path}:/config")
    except ConfigError as e:
        raise WeightsError(e.message, RECONVERT) from None


def read_config(path):
    """The BertConfig stored in a minibert .h5 file."""
    with _open(path) as f:
        return _read_config(f, path)


def read_vocab(path):
    """(tokens, do_lower_case) stored in a minibert .h5 file."""
    with _open(path) as f:
        if "vocab" not in f:
            raise WeightsError(f"{path}: the file holds no vocabulary", "convert from a directory that has vocab.txt")
        v = f["vocab"]
        return [t.decode("utf-8") if isinstance(t, bytes) else t for t in v[()]], bool(v.attrs["do_lower_case"])


def load(path, verify=True):
    """Read a minibert .h5 file into a WeightsFile, checking format, shapes and checksums."""
    path = Path(path)
    with _open(path) as f:
        config = _read_config(f, path)
        if "weights" not in f:
            raise WeightsError(f"{path}: the /weights group is missing", RECONVERT)
        tensors = {}
        for name, d in f["weights"].items():
            try:
                array = d[()]
            except OSError as e:
                raise WeightsError(f"{path}: tensor {name} cannot be read ({e})", f"the file is corrupted; {RECONVERT}") from None
            if verify:
                expected = d.attrs.get("sha256")
                if expected is None or tensor_sha256(array) != expected:
                    raise WeightsError(
                        f"{path}: tensor {name} fails its SHA-256 check (the file is corrupted or was edited)",
                        RECONVERT,
                    )
            tensors[name] = array
        vocab, do_lower_case = [], True
        if "vocab" in f:
            vocab = [t.decode("utf-8") if isinstance(t, bytes) else t for t in f["vocab"][()]]
            do_lower_case = bool(f["vocab"].attrs["do_lower_case"])
        weights = WeightsFile(
            config=config,
            tensors=tensors,
            vocab=vocab,
            do_lower_case=do_lower_case,
            heads=json.loads(f.attrs.get("heads", "[]")),
            source=str(f.attrs.get("source", "")),
            source_sha256=json.loads(f.attrs.get("source_sha256", "{}")),
            format_version=int(f.attrs["format_version"]),
        )
    check_encoder_tensors(tensors, config, path)
    check_head_tensors(tensors, config, weights.heads, path)
    return weights
