"""Convert a Hugging Face BERT checkpoint into a minibert .h5 file.

Sources, in the order they are tried:
  * a local model directory: ``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``
    (optional ``vocab.txt`` and ``tokenizer_config.json``);
  * a single checkpoint file (``.safetensors`` or ``.bin``) plus ``config=`` (or a
    ``config.json`` beside it);
  * a hub id such as ``prajjwal1/bert-tiny``, fetched with ``huggingface_hub`` when it is
    installed (from its local cache when offline).

Also: a sharded checkpoint (``model.safetensors.index.json`` or ``pytorch_model.bin.index.json``
beside its shards), and Google's TensorFlow checkpoints (a released ``.zip``, its unzipped
folder, or a ``*.ckpt`` prefix with ``config=bert_config.json``), read without TensorFlow by
``tf_checkpoint``.

``.safetensors`` is read by a strict NumPy reader (``minibert/safetensors.py``): no torch needed. ``.bin`` is a
pickle and needs torch; it is loaded with ``weights_only=True``, which refuses any pickle
that would run code.

Tensors that are not BERT's (e.g. the extra heads of a model built on ``BertModel``) are
listed and skipped, or refused with ``strict=True``.
"""

import json
import os
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from . import tf_checkpoint
from .config import SUPPORTED_ACTIVATIONS, BertConfig
from .errors import ConfigError, ConversionError, InputError, WeightsError
from .safetensors import read_safetensors
from .tokenizer import SPECIAL_TOKENS, read_vocab_txt
from .weights import (
    WeightsFile,
    check_encoder_tensors,
    check_head_tensors,
    encoder_shapes,
    file_sha256,
    head_shapes,
    save,
)

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
SHARD_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")  # {"weight_map": {name: shard}}
TF_CONFIG_FILES = ("bert_config.json", "config.json")  # Google's name first
HUB_FILES = ["config.json", "vocab.txt", "tokenizer_config.json", "model.safetensors", "pytorch_model.bin",
             "model.safetensors.index.json", "model-*-of-*.safetensors", "pytorch_model.bin.index.json", "pytorch_model-*-of-*.bin"]

# Buffers that some checkpoints carry but that are not parameters: the fixed 0..P-1 position ids
# and the all-zeros token type ids. minibert computes both.
DROPPED_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")

# Prefixes of the task heads that transformers' BertFor* models add on top of the encoder.
HEAD_PREFIXES = {
    "masked-lm": "cls.predictions.",
    "next-sentence": "cls.seq_relationship.",
    "classification": "classifier.",
}


# ---------------------------------------------------------------------------------------
# Reading checkpoint files
# ---------------------------------------------------------------------------------------

def read_pytorch_bin(path):
    """Read a PyTorch .bin checkpoint safely: ``torch.load(weights_only=True)`` never runs pickled code."""
    try:
        import torch
    except ImportError:
        raise ConversionError(
            f"{path}: reading a .bin checkpoint needs PyTorch",
            "pip install torch==2.13.0 (or convert a model.safetensors, which needs no torch)",
        ) from None
    import pickle
    import warnings

    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols; the error below says what matters
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message advises weights_only=False: never repeat that. Keep only its diagnosis.
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        detail = next((line for line in lines if "global" in line.lower()), None)
        if detail is not None:
            raise ConversionError(
                f"{path}: refused to load: the pickle asks to run code or build objects that are not tensors ({detail})",
                "only convert checkpoints from a source you trust; ask for a model.safetensors version",
            ) from None
        detail = next((line for line in lines if line.startswith(("Unsupported", "Unpickling", "invalid"))), "not a pickle")
        raise ConversionError(f"{path}: not a valid PyTorch checkpoint ({detail})", "download the checkpoint again") from None
    except Exception as e:  # a truncated or non-pickle file
        raise ConversionError(f"{path}: not a valid PyTorch checkpoint ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})",
                              "download the checkpoint again") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConversionError(f"{path}: holds a {type(state).__name__}, expected a state dict of tensors", "save the model with model.state_dict()")
    tensors = {}
    for name, t in state.items():
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().cpu()
        if t.dtype == torch.bfloat16:
            t = t.float()
        tensors[name] = t.numpy().copy()
    return tensors


def read_sharded(index_path):
    """A sharded checkpoint: the index's ``weight_map`` names the shard file of every tensor.

    Every shard is read (.safetensors or .bin) and the tensors merged; a tensor the index
    lists but its shard lacks, or a missing shard, is an error naming it.
    """
    index_path = Path(index_path)
    try:
        weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise ConversionError(f"{index_path}: not a checkpoint index (a JSON object with a weight_map) ({e})", "download the checkpoint again") from None
    tensors = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = index_path.parent / shard
        if not shard_path.is_file():
            raise ConversionError(f"{index_path}: shard {shard} is missing", f"download every shard the index lists into {index_path.parent}")
        tensors.update(read_checkpoint(shard_path))
    missing = sorted(name for name in weight_map if name not in tensors)
    if missing:
        raise ConversionError(f"{index_path}: tensor {missing[0]} is listed in the index but not in its shard {weight_map[missing[0]]}",
                              "download the checkpoint again")
    return tensors


def checkpoint_files(path):
    """The files a checkpoint is read from: itself, or an index and its shards."""
    path = Path(path)
    if path.name.endswith(".index.json"):
        shards = set(json.loads(path.read_text(encoding="utf-8"))["weight_map"].values())
        return [path] + [path.parent / s for s in sorted(shards)]
    return [path]


def read_checkpoint(path):
    path = Path(path)
    if path.name.endswith(".index.json"):
        return read_sharded(path)
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    if path.suffix in (".bin", ".pt", ".pth"):
        return read_pytorch_bin(path)
    raise ConversionError(f"{path}: unknown checkpoint type {path.suffix!r}", "give a .safetensors or a PyTorch .bin file")


# ---------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------


def normalize_names(tensors):
    """Map checkpoint names to minibert's: transformers' BertModel names, heads kept.

    * ``bert.embeddings...`` (BertFor* checkpoints) -> ``embeddings...``;
    * old TensorFlow-era names ``LayerNorm.gamma/beta`` -> ``LayerNorm.weight/bias``;
    * the ``embeddings.position_ids`` / ``token_type_ids`` buffers are dropped.
    """
    out = {}
    for name, array in tensors.items():
        if name.startswith("bert."):
            name = name[len("bert."):]
        if name.endswith("LayerNorm.gamma"):
            name = name[: -len("gamma")] + "weight"
        elif name.endswith("LayerNorm.beta"):
            name = name[: -len("beta")] + "bias"
        if name in DROPPED_BUFFERS:
            continue
        out[name] = array
    return out


def detect_heads(tensors):
    return [head for head, prefix in HEAD_PREFIXES.items() if any(n.startswith(prefix) for n in tensors)]


def untie_or_drop_decoder(tensors, tie_word_embeddings=True):
    """Keep the masked-LM decoder tensors only when they are not copies of their tie source.

    transformers ties ``cls.predictions.decoder.weight`` to ``embeddings.word_embeddings.weight``
    and ``cls.predictions.decoder.bias`` to ``cls.predictions.bias``, and leaves the tied copies
    out when saving. Older checkpoints store them anyway; some store only ``decoder.bias``.
    As transformers 5 does when loading: a copy equal to its source is dropped (the head reads
    the source); a copy that differs is kept and used (transformers then leaves them untied,
    whatever ``tie_word_embeddings`` says). A checkpoint with ``tie_word_embeddings=false``
    must store its decoder weight. Returns the tensors, changed in place.
    """
    if "cls.predictions.transform.dense.weight" in tensors and not tie_word_embeddings \
            and "cls.predictions.decoder.weight" not in tensors:
        raise ConversionError(
            "the config says tie_word_embeddings=false but the checkpoint has no cls.predictions.decoder.weight",
            "convert a checkpoint that stores its masked-LM decoder, or set tie_word_embeddings=true in config.json",
        )
    pairs = (
        ("cls.predictions.decoder.weight", "embeddings.word_embeddings.weight"),
        ("cls.predictions.decoder.bias", "cls.predictions.bias"),
    )
    for copy, source in pairs:
        if copy not in tensors:
            continue
        if source not in tensors:
            if copy.endswith("bias"):  # only decoder.bias stored: it is the output bias
                tensors[source] = tensors.pop(copy)
            continue
        if np.array_equal(tensors[copy], tensors[source]):  # a tied copy: the head reads the source
            del tensors[copy]
    return tensors


# ---------------------------------------------------------------------------------------
# Finding the files
# ---------------------------------------------------------------------------------------


def resolve_source(src, config=None):
    """Return (weights file, config.json path, directory for vocab/tokenizer files)."""
    path = Path(src)
    if path.is_dir():
        for name in WEIGHT_FILES + SHARD_INDEX_FILES:
            if (path / name).is_file():
                weights = path / name
                break
        else:
            shards = sorted(path.glob("*.safetensors")) + sorted(path.glob("pytorch_model*.bin"))
            hint = f"shards without their index: add the {' or '.join(SHARD_INDEX_FILES)} that came with them" if shards else \
                "the directory needs config.json and model.safetensors or pytorch_model.bin (or a sharded checkpoint's index)"
            raise ConversionError(f"{path}: no model.safetensors or pytorch_model.bin (nor a sharded checkpoint index) in the directory", hint)
        cfg = Path(config) if config else path / "config.json"
        if not cfg.is_file():
            raise ConversionError(f"{path}: no config.json in the directory", "pass --config PATH/TO/config.json")
        return weights, cfg, path
    if path.is_file():
        cfg = Path(config) if config else path.parent / "config.json"
        if not cfg.is_file():
            raise ConversionError(f"{path}: a single checkpoint file needs its config.json", "pass --config PATH/TO/config.json")
        return path, cfg, path.parent
    if _looks_like_hub_id(str(src)):
        return resolve_source(download_from_hub(str(src)), config)
    raise ConversionError(f"{src}: no such file or directory", "give a model directory, a checkpoint file, or a hub id like prajjwal1/bert-tiny")


def _looks_like_hub_id(s):
    parts = s.split("/")
    return len(parts) == 2 and all(parts) and not s.startswith((".", "/", "~")) and not s.endswith((".bin", ".safetensors", ".h5"))


def download_from_hub(repo_id):
    """Fetch a model's files with huggingface_hub (online) or from its local cache (offline)."""
    how = (f"download the files of {repo_id} (config.json, vocab.txt, model.safetensors or pytorch_model.bin) "
           "on a machine with internet access into a directory and run `minibert convert DIR OUT.h5`")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ConversionError(f"{repo_id}: not a local path, and huggingface_hub is not installed to fetch it from the hub",
                              "pip install huggingface_hub, or " + how) from None
    errors = []
    for local_only in (False, True):
        try:
            return snapshot_download(repo_id, allow_patterns=HUB_FILES, local_files_only=local_only)
        except Exception as e:  # offline, unknown repo, or not in the cache
            errors.append(f"{'cache' if local_only else 'hub'}: {type(e).__name__}")
    raise ConversionError(f"{repo_id}: cannot fetch from the hub nor find it in the local cache ({'; '.join(errors)})", how)


def read_do_lower_case(directory, name):
    """Whether the tokenizer lower-cases: tokenizer_config.json if present, else the model name.

    config.json does not say it. A name containing "cased" but not "uncased" is cased;
    everything else is uncased (all the compact BERTs and MiniLM are).
    """
    tc = Path(directory) / "tokenizer_config.json"
    if tc.is_file():
        try:
            value = json.loads(tc.read_text(encoding="utf-8")).get("do_lower_case")
            if isinstance(value, bool):
                return value
        except (json.JSONDecodeError, UnicodeDecodeError):
            pass
    lowered = name.lower()
    return not ("cased" in lowered and "uncased" not in lowered)


def read_config_json(config_path):
    """The parsed config.json (or bert_config.json): a JSON object, or a clear error."""
    try:
        cfg_dict = json.loads(Path(config_path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ConversionError(f"{config_path}: not valid JSON ({e})", "give the config.json of the checkpoint") from None
    if not isinstance(cfg_dict, dict):
        raise ConversionError(f"{config_path}: holds a JSON {type(cfg_dict).__name__}, expected an object", "give the config.json of the checkpoint")
    return cfg_dict


def _print_notice(message):
    print(f"note: {message}", file=sys.stderr)


# ---------------------------------------------------------------------------------------
# Google's TensorFlow checkpoints
# ---------------------------------------------------------------------------------------


def unpack_tf_zip(zip_path, into):
    """Extract a released checkpoint zip (files at its top or in one folder); returns the folder
    holding the ``.index`` file. Only plain file names are written (no paths from the archive)."""
    zip_path, into = Path(zip_path), Path(into)
    try:
        archive = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as e:
        raise ConversionError(f"{zip_path}: not a readable zip file ({e})", "download the checkpoint again") from None
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        indexes = [m for m in members if m.filename.endswith(".index")]
        if len(indexes) != 1:
            found = ", ".join(m.filename for m in indexes) or "none"
            raise ConversionError(f"{zip_path}: expected one TensorFlow checkpoint (.index file) in the zip, found {found}",
                                  "unzip it and give the checkpoint prefix, e.g. DIR/bert_model.ckpt")
        folder = indexes[0].filename.rpartition("/")[0]
        for m in members:
            directory, _, name = m.filename.rpartition("/")
            if directory == folder and not name.startswith("."):
                with archive.open(m) as f_in, open(into / name, "wb") as f_out:
                    while block := f_in.read(1 << 20):
                        f_out.write(block)
    return into


def read_tf_source(prefix, config, hidden_act, log):
    """Tensors (Hugging Face names), config dict, and the files read, of a Google checkpoint."""
    directory = prefix.parent
    config_path = Path(config) if config else next((directory / n for n in TF_CONFIG_FILES if (directory / n).is_file()), None)
    if config_path is None or not config_path.is_file():
        raise ConversionError(f"{prefix}: no bert_config.json beside the TensorFlow checkpoint", "pass --config PATH/TO/bert_config.json")
    cfg_dict = read_config_json(config_path)
    n_layers = cfg_dict.get("num_hidden_layers")
    if not isinstance(n_layers, int):
        raise ConversionError(f"{config_path}: num_hidden_layers is missing or not an integer", "give the bert_config.json of this checkpoint")
    written_act = cfg_dict.get("hidden_act", "gelu")
    if hidden_act is not None:
        cfg_dict["hidden_act"] = hidden_act
    elif written_act == "gelu":
        cfg_dict["hidden_act"] = "gelu_new"
        log(f"{config_path.name} says hidden_act=\"gelu\", which Google's TensorFlow BERT computes as the tanh "
            f"approximation: stored as hidden_act=\"gelu_new\" ({SUPPORTED_ACTIVATIONS['gelu_new']}). "
            "Pass --hidden-act gelu for the exact erf GELU that transformers' copies of these models use.")
    tensors, skipped = tf_checkpoint.read_google_bert(prefix, n_layers)
    if skipped:
        slots = sum(n.endswith(tf_checkpoint.SKIPPED_SUFFIXES) for n in skipped)
        log(f"{prefix.name}: skipped {len(skipped)} training variables ({slots} Adam slots; {', '.join(n for n in skipped if '/' not in n) or 'no others'})")
    ckpt = tf_checkpoint.TFCheckpoint(prefix)
    files = [prefix.with_name(prefix.name + ".index")] + [ckpt.data_file(i) for i in range(ckpt.num_shards)] + [config_path]
    return tensors, cfg_dict, config_path, directory, files


# ---------------------------------------------------------------------------------------
# Tensors that are not BERT's
# ---------------------------------------------------------------------------------------


def bert_tensor_names(config):
    """Every name a BERT encoder and its transformers heads can have, for this config's shapes."""
    names = set(encoder_shapes(config)) | {"classifier.weight", "classifier.bias"}
    for head in ("masked-lm", "next-sentence"):
        required, optional = head_shapes(config, head)
        names |= set(required) | set(optional)
    return names


def drop_non_bert(tensors, config, cfg_dict, src, strict, log):
    """Keep BERT's tensors; list the others (e.g. AntiBERTy's extra heads) and skip them, or refuse.

    A config whose ``architectures`` is not a transformers ``BertFor*``/``BertModel`` class is
    said in the notice: its BERT tensors are converted, the rest is not minibert's to run.
    """
    known = bert_tensor_names(config)
    extra = {name: tuple(a.shape) for name, a in tensors.items() if name not in known}
    architectures = [a for a in (cfg_dict.get("architectures") or []) if not str(a).startswith("Bert")]
    if not extra:
        return tensors
    listing = ", ".join(f"{n} {list(shape)}" for n, shape in sorted(extra.items()))
    what = f"the config names the architecture {', '.join(architectures)}, not a transformers Bert* class; " if architectures else ""
    if strict:
        raise ConversionError(f"{src}: {what}{len(extra)} tensor(s) are not part of BERT: {listing}",
                              "convert without --strict to skip them (minibert runs BERT's encoder and its masked-LM, "
                              "next-sentence and classification heads only)")
    log(f"{src}: {what}skipped {len(extra)} tensor(s) that are not part of BERT: {listing}")
    return {name: a for name, a in tensors.items() if name not in extra}


# ---------------------------------------------------------------------------------------
# The converter
# ---------------------------------------------------------------------------------------


def check_output(dst, inputs):
    """Refuse an output path that is a directory or that is (or resolves to) a file the conversion reads."""
    dst = Path(dst)
    if dst.is_dir():
        raise ConversionError(f"{dst}: the output is a directory", f"give the output file's name, e.g. {dst / 'model.h5'}")
    for p in map(Path, inputs):
        if not p.exists():
            continue
        same = os.path.realpath(p) == os.path.realpath(dst) or (dst.exists() and os.path.samefile(p, dst))
        if same:
            raise ConversionError(f"{dst}: the output is the input file {p}; converting would overwrite it",
                                  f"write the .h5 elsewhere, e.g. {dst.with_name(dst.stem + '.h5') if dst.suffix != '.h5' else dst.with_name(dst.stem + '-minibert.h5')}")


def read_vocab_file(vocab_file):
    """The tokens of a directory's vocab.txt; [] when there is none. Refuses a vocabulary BERT cannot use."""
    if not vocab_file.exists():
        return []
    if not vocab_file.is_file():
        raise ConversionError(f"{vocab_file}: is not a file", "put the model's vocab.txt there, or remove what has its name")
    try:
        vocab = read_vocab_txt(vocab_file)
    except InputError as e:
        raise ConversionError(e.message, e.hint) from None
    if not vocab:
        raise ConversionError(f"{vocab_file}: the vocabulary is empty", "give the vocab.txt that belongs to this checkpoint")
    for i, token in enumerate(vocab):
        if "\0" in token:
            raise ConversionError(f"{vocab_file}: line {i + 1} holds a NUL byte", "give the vocab.txt that belongs to this checkpoint (a text file, one token per line)")
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise ConversionError(f"{vocab_file}: the vocabulary lacks the special token(s) {', '.join(missing)}",
                              "give a BERT vocab.txt: it must hold [PAD], [UNK], [CLS], [SEP] and [MASK]")
    return vocab


def check_tensor_values(tensors, config, heads, source):
    """Every tensor the model computes with must be floating point and finite."""
    needed = set(encoder_shapes(config))
    for head in heads:
        required, optional = head_shapes(config, head)
        needed |= set(required) | set(optional)
    for name in sorted(needed & set(tensors)):
        array = tensors[name]
        if not np.issubdtype(array.dtype, np.floating):
            raise ConversionError(f"{source}: tensor {name} has dtype {array.dtype}, expected a float dtype (F32, F16, BF16 or F64)",
                                  "the checkpoint is damaged or not a BERT model's weights; download it again")
        if not np.isfinite(array).all():
            bad = int(np.size(array) - np.isfinite(array).sum())
            raise ConversionError(f"{source}: tensor {name} holds {bad} NaN or infinite value(s)",
                                  "the checkpoint is damaged (or was saved from a diverged training run); use a good checkpoint")


def convert(src: "str | Path", dst: "str | Path", config: "str | Path | None" = None,
            do_lower_case: "bool | None" = None, hidden_act: "str | None" = None, strict: bool = False,
            log=None, source: "str | None" = None, vocab: "str | Path | None" = None) -> Path:
    """Convert a BERT checkpoint to a minibert .h5 file; returns its path.

    ``src``: model directory, checkpoint file (with ``config``), hub id, or a Google TensorFlow
    checkpoint (released ``.zip``, its folder, or a ``*.ckpt`` prefix with ``config``).
    ``do_lower_case``: override what is read from tokenizer_config.json / the model name.
    ``hidden_act``: override the config's activation (one of ``config.SUPPORTED_ACTIVATIONS``);
    for a TensorFlow checkpoint whose config says "gelu", the default is "gelu_new", the tanh
    GELU Google's code computes under that name.
    ``strict``: refuse a checkpoint holding tensors that are not BERT's, instead of skipping them.
    ``log``: called with each notice (default: print to stderr).
    ``source``: what the file records as its source (default: ``src``).
    ``vocab``: the vocab.txt to store, when it is not beside the checkpoint (AntiBERTy keeps it one folder up).
    """
    log = log or _print_notice
    if Path(src).suffix == ".zip" and Path(src).is_file():  # Google's release: a zip of the checkpoint folder
        with tempfile.TemporaryDirectory(prefix="minibert-unzip-") as unpacked:
            folder = unpack_tf_zip(src, unpacked)
            if do_lower_case is None:
                do_lower_case = read_do_lower_case(folder, Path(src).stem)  # uncased_L-2_H-128_A-2 -> True
            return convert(folder, dst, config, do_lower_case, hidden_act, strict, log, source=source or str(src), vocab=vocab)
    prefix = None  # a TensorFlow checkpoint: a folder without Hugging Face weights, a *.ckpt prefix, an .index file
    if not any((Path(src) / name).is_file() for name in WEIGHT_FILES + SHARD_INDEX_FILES):
        if Path(src).exists() or Path(str(src) + ".index").exists():
            prefix = tf_checkpoint.checkpoint_prefix(src)
    if prefix is not None:
        tensors, cfg_dict, config_path, directory, files = read_tf_source(prefix, config, hidden_act, log)
    else:
        weights_path, config_path, directory = resolve_source(src, config)
        files = checkpoint_files(weights_path) + [config_path]
    vocab_file = Path(vocab) if vocab else Path(directory) / "vocab.txt"
    if vocab and not vocab_file.is_file():
        raise ConversionError(f"{vocab_file}: no such vocabulary file", "give the vocab.txt of this checkpoint (one token per line)")
    check_output(dst, files + [vocab_file, Path(directory) / "tokenizer_config.json"])
    if prefix is None:
        cfg_dict = read_config_json(config_path)
        if hidden_act is not None:
            cfg_dict["hidden_act"] = hidden_act
    tie = cfg_dict.get("tie_word_embeddings", True)
    if not isinstance(tie, bool):
        raise ConversionError(f"{config_path}: tie_word_embeddings={tie!r} must be true or false (a JSON boolean, not a string)",
                              "fix the value in config.json")
    try:
        bert_config = BertConfig.from_dict(cfg_dict, source=str(config_path))
    except ConfigError as e:
        raise ConversionError(e.message, e.hint) from None

    if prefix is None:
        tensors = normalize_names(read_checkpoint(weights_path))
    tensors = drop_non_bert(tensors, bert_config, cfg_dict, str(src), strict, log)
    untie_or_drop_decoder(tensors, tie_word_embeddings=tie)
    heads = detect_heads(tensors)
    if "classification" in heads and np.ndim(tensors.get("classifier.weight")) == 2:
        num_labels = tensors["classifier.weight"].shape[0]
        id2label = bert_config.id2label or {}
        if len(id2label) != num_labels:
            id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
        bert_config.id2label = id2label
    else:
        bert_config.id2label = {}
    check_tensor_values(tensors, bert_config, heads, files[0])
    for name, array in tensors.items():  # store floats as float32 (float64 kept as is)
        if np.issubdtype(array.dtype, np.floating) and array.dtype != np.float64:
            tensors[name] = array.astype(np.float32)
    try:
        check_encoder_tensors(tensors, bert_config, files[0])
        check_head_tensors(tensors, bert_config, heads, files[0])
    except WeightsError as e:
        raise ConversionError(e.message, "check that config.json belongs to this checkpoint") from None

    vocab = read_vocab_file(vocab_file)
    if vocab and len(vocab) != bert_config.vocab_size:
        raise ConversionError(
            f"{vocab_file}: {len(vocab)} tokens but config.json says vocab_size={bert_config.vocab_size}",
            "give the vocab.txt that belongs to this checkpoint",
        )
    if do_lower_case is None:
        do_lower_case = read_do_lower_case(directory, cfg_dict.get("_name_or_path", "") or str(src))

    sources = files + ([vocab_file] if vocab else [])
    weights = WeightsFile(
        config=bert_config,
        tensors=tensors,
        vocab=vocab,
        do_lower_case=do_lower_case,
        heads=heads,
        source=source or str(src),
        source_sha256={p.name: file_sha256(p) for p in map(Path, sources)},
    )
    return save(dst, weights)
