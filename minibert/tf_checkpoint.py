"""Read TensorFlow checkpoints (Google's original BERT releases) without TensorFlow.

A TensorFlow checkpoint ``PREFIX`` (e.g. ``bert_model.ckpt``) is a *tensor bundle*:

    PREFIX.index                   an SSTable (LevelDB's table format): sorted key -> value
                                   records; key "" holds a BundleHeaderProto (number of data
                                   shards, endianness), every other key is a variable name whose
                                   value is a BundleEntryProto: dtype, shape, shard id, offset
                                   and size of its bytes, and their masked CRC32C
    PREFIX.data-00000-of-0000N     the tensors' raw bytes, little-endian, C order, one file per shard

This module reads both with the standard library, NumPy and one Numba loop (CRC32C), checks
every block's and every tensor's checksum, and maps Google's variable names
(``bert/encoder/layer_0/attention/self/query/kernel``) to the Hugging Face names minibert uses
(``encoder.layer.0.attention.self.query.weight``, the kernel transposed from [in, out] to
[out, in]). It is the only module that knows the bundle format.

Why not the PyPI package ``tensorflow-checkpoint-reader`` (0.2.2, MIT, last release Feb 2023):
its README says it is in development and "might not do anything at all"; it vendors ~25,000
lines (155 ``.proto`` files) and pins ``protobuf<3.19``; its "crc32c" is ``zlib.crc32``, a
different polynomial (CRC-32, not CRC-32C), and its reader verifies no checksum; it reads
every tensor of the bundle into memory when opened (three times the model for a checkpoint
with Adam slots). The format needs ~200 lines, written here against TensorFlow's own
``tensor_bundle.cc``/``table.cc`` and tested against ``tf.train.load_checkpoint``.
"""

import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ConversionError

# ---------------------------------------------------------------------------------------
# CRC32C (Castagnoli), as TensorFlow stores it: "masked" so a CRC of data holding CRCs is safe
# ---------------------------------------------------------------------------------------

CRC32C_POLY = 0x82F63B78  # reversed Castagnoli polynomial
CRC_MASK_DELTA = 0xA282EAD8  # TensorFlow's (and LevelDB's) crc32c::Mask constant


def _crc32c_tables():  # -> [8, 256] int64: slicing-by-8 lookup tables
    t = np.zeros((8, 256), np.int64)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ (CRC32C_POLY if c & 1 else 0)
        t[0, i] = c
    for k in range(1, 8):
        t[k] = (t[k - 1] >> 8) ^ t[0][t[k - 1] & 0xFF]
    return t


_CRC32C_TABLES = _crc32c_tables()


def _crc32c_update(crc, data, t):  # int, uint8 [N], [8, 256] -> int: CRC32C of (previous data + data)
    crc = ~crc & 0xFFFFFFFF
    n, i = data.shape[0], 0
    while i + 8 <= n:  # eight bytes per step: one lookup per byte, in eight tables
        lo = crc ^ (
            np.int64(data[i]) | np.int64(data[i + 1]) << 8 | np.int64(data[i + 2]) << 16 | np.int64(data[i + 3]) << 24
        )
        crc = (
            t[7, lo & 0xFF]
            ^ t[6, (lo >> 8) & 0xFF]
            ^ t[5, (lo >> 16) & 0xFF]
            ^ t[4, lo >> 24]
            ^ t[3, data[i + 4]]
            ^ t[2, data[i + 5]]
            ^ t[1, data[i + 6]]
            ^ t[0, data[i + 7]]
        )
        i += 8
    while i < n:
        crc = t[0, (crc ^ data[i]) & 0xFF] ^ (crc >> 8)
        i += 1
    return ~crc & 0xFFFFFFFF


_CRC32C_JIT = []  # the compiled _crc32c_update, once a checksum is needed


def crc32c(data, crc=0):
    """CRC-32C of ``data`` (bytes-like), continuing from ``crc``. crc32c(b"123456789") == 0xE3069283.

    The loop is compiled by Numba on first use (~400 MB/s; pure Python would take minutes for
    BERT-base), so ``import minibert`` does not import numba.
    """
    if not _CRC32C_JIT:
        from numba import njit

        _CRC32C_JIT.append(njit(cache=True, nogil=True)(_crc32c_update))
    return int(_CRC32C_JIT[0](crc, np.frombuffer(data, np.uint8), _CRC32C_TABLES))


def unmask_crc(masked):
    """TensorFlow stores ``rotate_right(crc, 15) + 0xa282ead8``; undo it."""
    rot = (masked - CRC_MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


# ---------------------------------------------------------------------------------------
# Protocol buffers: just the wire format the two messages need
# ---------------------------------------------------------------------------------------


def _varint(buf, pos):  # -> (value, next position)
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _fields(buf):  # yields (field number, value): ints for varint/fixed, bytes for length-delimited
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = int.from_bytes(buf[pos : pos + 8], "little"), pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = bytes(buf[pos : pos + n]), pos + n
        elif wire == 5:
            value, pos = int.from_bytes(buf[pos : pos + 4], "little"), pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, value


# tensorflow/core/framework/types.proto: DataType -> NumPy dtype (little-endian)
TF_DTYPES = {
    1: np.float32,
    2: np.float64,
    3: np.int32,
    4: np.uint8,
    5: np.int16,
    6: np.int8,
    7: "string",
    8: np.complex64,
    9: np.int64,
    10: np.bool_,
    14: "bfloat16",
    17: np.uint16,
    18: np.complex128,
    19: np.float16,
    22: np.uint32,
    23: np.uint64,
}


@dataclass
class BundleEntry:
    """One variable of a checkpoint (tensor_bundle.proto's BundleEntryProto)."""

    name: str
    dtype: object  # a NumPy dtype, "bfloat16" or "string"
    shape: tuple
    shard_id: int
    offset: int
    size: int
    crc32c: int  # masked, as stored
    sliced: bool  # a partitioned variable: its bytes are in other entries (not supported)


def _parse_entry(name, buf, source):
    fields = {"dtype": 0, "shard_id": 0, "offset": 0, "size": 0, "crc32c": 0}
    shape, sliced = [], False
    for number, value in _fields(buf):
        if number == 1:
            fields["dtype"] = value
        elif number == 2:  # TensorShapeProto: repeated Dim dim = 2 { int64 size = 1; }
            for n, dim in _fields(value):
                if n == 2:
                    size = dict(_fields(dim)).get(1, 0)
                    shape.append(size - (1 << 64) if size >= 1 << 63 else size)
        elif number in (3, 4, 5):
            fields[{3: "shard_id", 4: "offset", 5: "size"}[number]] = value
        elif number == 6:
            fields["crc32c"] = value
        elif number == 7:
            sliced = True
    if fields["dtype"] not in TF_DTYPES:
        raise ConversionError(
            f"{source}: variable {name} has TensorFlow dtype number {fields['dtype']}, which minibert cannot read",
            "convert a checkpoint of float32 variables",
        )
    return BundleEntry(
        name,
        TF_DTYPES[fields["dtype"]],
        tuple(shape),
        fields["shard_id"],
        fields["offset"],
        fields["size"],
        fields["crc32c"],
        sliced,
    )


# ---------------------------------------------------------------------------------------
# The SSTable (.index file)
# ---------------------------------------------------------------------------------------

TABLE_MAGIC = 0xDB4775248B80FB57  # LevelDB's kTableMagicNumber, the last 8 bytes of the file
FOOTER_SIZE = 48  # two block handles (varints), zero padding to 40 bytes, the magic


def _block(data, offset, size, source):  # -> the block's bytes, its checksum verified
    if offset + size + 5 > len(data):
        raise ConversionError(
            f"{source}: a block runs past the end of the file (truncated?)", "copy the checkpoint again"
        )
    contents = data[offset : offset + size]
    kind, masked = data[offset + size], int.from_bytes(data[offset + size + 1 : offset + size + 5], "little")
    if crc32c(data[offset : offset + size + 1]) != unmask_crc(masked):  # the CRC covers contents + type byte
        raise ConversionError(
            f"{source}: block at byte {offset} fails its CRC32C check (corrupted file)", "copy the checkpoint again"
        )
    if kind != 0:
        raise ConversionError(
            f"{source}: block at byte {offset} is compressed (type {kind}); TensorFlow writes bundles uncompressed",
            "re-save the checkpoint with TensorFlow",
        )
    return contents


def _block_entries(block):  # yields (key, value) of one block, keys prefix-compressed
    (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 - 4 * num_restarts  # the entries stop where the restart array begins
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        non_shared, pos = _varint(block, pos)
        value_length, pos = _varint(block, pos)
        key = key[:shared] + bytes(block[pos : pos + non_shared])
        pos += non_shared
        yield key, block[pos : pos + value_length]
        pos += value_length


def read_index(path):
    """Every (key, value) record of an SSTable file, in key order."""
    path = Path(path)
    data = memoryview(path.read_bytes())
    if len(data) < FOOTER_SIZE or int.from_bytes(data[-8:], "little") != TABLE_MAGIC:
        raise ConversionError(
            f"{path}: not a TensorFlow checkpoint index (no SSTable footer)",
            "give the .index file of a TensorFlow checkpoint",
        )
    footer = data[-FOOTER_SIZE:]
    _, pos = _varint(footer, 0)  # the metaindex block handle: empty in tensor bundles
    _, pos = _varint(footer, pos)
    index_offset, pos = _varint(footer, pos)
    index_size, pos = _varint(footer, pos)
    records = []
    for _, handle in _block_entries(_block(data, index_offset, index_size, path)):
        offset, p = _varint(handle, 0)
        size, _ = _varint(handle, p)
        records.extend(_block_entries(_block(data, offset, size, path)))
    return records


# ---------------------------------------------------------------------------------------
# The checkpoint
# ---------------------------------------------------------------------------------------


def checkpoint_prefix(path):
    """The prefix of the checkpoint at ``path`` (a prefix, its .index file or a directory), or None."""
    path = Path(path)
    if path.name.endswith(".index") and path.is_file():
        return path.with_name(path.name[: -len(".index")])
    if path.with_name(path.name + ".index").is_file():
        return path
    if path.is_dir():
        indexes = sorted(path.glob("*.index"))
        if len(indexes) == 1:
            return indexes[0].with_name(indexes[0].name[: -len(".index")])
        state = path / "checkpoint"  # written by tf.train.Saver/CheckpointManager: names the latest
        if len(indexes) > 1 and state.is_file():
            m = re.search(
                r'^model_checkpoint_path:\s*"([^"]+)"', state.read_text(encoding="utf-8", errors="replace"), re.M
            )
            if m and (path / (Path(m.group(1)).name + ".index")).is_file():
                return path / Path(m.group(1)).name
        if len(indexes) > 1:
            names = ", ".join(p.name for p in indexes)
            raise ConversionError(
                f"{path}: several TensorFlow checkpoints in one directory ({names})",
                "give the prefix of one of them, e.g. DIR/bert_model.ckpt",
            )
    return None


class TFCheckpoint:
    """A TensorFlow checkpoint opened for reading: ``entries`` from the index, tensors on demand.

    ``ckpt = TFCheckpoint("bert_model.ckpt")``; ``ckpt.entries`` maps each variable name to its
    ``BundleEntry``; ``ckpt.read(name)`` returns the array, its CRC32C checked.
    """

    def __init__(self, prefix):
        self.prefix = Path(prefix)
        index = self.prefix.with_name(self.prefix.name + ".index")
        if not index.is_file():
            raise ConversionError(
                f"{index}: no such file",
                "give the checkpoint prefix (PATH/bert_model.ckpt), its .index file, or its directory",
            )
        self.num_shards, self.entries = 1, {}
        for key, value in read_index(index):
            if key == b"":  # BundleHeaderProto: num_shards = 1, endianness = 2 (0 little, 1 big)
                header = dict(_fields(value))
                self.num_shards = header.get(1, 1)
                if header.get(2, 0) != 0:
                    raise ConversionError(
                        f"{index}: a big-endian checkpoint", "re-save it with TensorFlow on a little-endian machine"
                    )
                continue
            name = key.decode("utf-8")
            self.entries[name] = _parse_entry(name, value, index)

    def data_file(self, shard_id):
        return self.prefix.with_name(f"{self.prefix.name}.data-{shard_id:05d}-of-{self.num_shards:05d}")

    def read(self, name):
        """The value of variable ``name`` as a NumPy array (bfloat16 widened to float32;
        a string variable as an object array of bytes)."""
        e = self.entries[name]
        if e.sliced:
            raise ConversionError(
                f"{self.prefix}: variable {name} is partitioned into slices, which minibert does not read",
                "re-save the checkpoint with unpartitioned variables",
            )
        path = self.data_file(e.shard_id)
        if not path.is_file():
            raise ConversionError(
                f"{path}: data file missing (variable {name} is in shard {e.shard_id} of {self.num_shards})",
                "copy every .data-*-of-* file of the checkpoint",
            )
        with open(path, "rb") as f:
            f.seek(e.offset)
            raw = f.read(e.size)
        if len(raw) != e.size:
            raise ConversionError(
                f"{path}: variable {name} runs past the end of the file (truncated?)", "copy the checkpoint again"
            )
        if e.dtype == "string":
            return self._strings(name, e, raw)
        if crc32c(raw) != unmask_crc(e.crc32c):
            raise ConversionError(
                f"{path}: variable {name} fails its CRC32C check (corrupted data file)", "copy the checkpoint again"
            )
        if e.dtype == "bfloat16":  # the top 16 bits of a float32
            return (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32).reshape(e.shape)
        dtype = np.dtype(e.dtype).newbyteorder("<")
        if np.prod(e.shape, dtype=np.int64) * dtype.itemsize != e.size:
            raise ConversionError(
                f"{path}: variable {name} has {e.size} bytes, expected {e.shape} x {dtype.itemsize}",
                "copy the checkpoint again",
            )
        return np.frombuffer(raw, dtype).reshape(e.shape).astype(dtype.newbyteorder("="))

    def _strings(self, name, e, raw):
        """A string tensor: varint64 lengths, a masked CRC32C of the lengths, then the bytes.

        The stored CRC covers each length as a little-endian uint32 (uint64 if it does not fit),
        that 4-byte length checksum, then the strings' bytes (tensor_bundle.cc, WriteStringTensor).
        """
        n = int(np.prod(e.shape, dtype=np.int64))
        lengths, pos = [], 0
        for _ in range(n):
            length, pos = _varint(raw, pos)
            lengths.append(length)
        crc = crc32c(b"".join(struct.pack("<I" if length < 1 << 32 else "<Q", length) for length in lengths))
        crc = crc32c(raw[pos : pos + 4], crc)
        pos += 4
        values = []
        for length in lengths:
            values.append(bytes(raw[pos : pos + length]))
            pos += length
        crc = crc32c(b"".join(values), crc)
        if crc != unmask_crc(e.crc32c):
            raise ConversionError(
                f"{self.prefix}: string variable {name} fails its CRC32C check (corrupted data file)",
                "copy the checkpoint again",
            )
        return np.array(values, dtype=object).reshape(e.shape)


# ---------------------------------------------------------------------------------------
# Google's BERT variable names -> the Hugging Face names of the .h5 file
# ---------------------------------------------------------------------------------------

# Optimizer and bookkeeping variables in Google's pre-training checkpoints, skipped as
# transformers' load_tf_weights_in_bert skips them: Adam's two moment estimates per variable,
# the step counter, and the object graph TF 2 adds to every checkpoint.
SKIPPED_SUFFIXES = ("/adam_m", "/adam_v")
SKIPPED_NAMES = (
    "global_step",
    "AdamWeightDecayOptimizer",
    "AdamWeightDecayOptimizer_1",
    "_CHECKPOINTABLE_OBJECT_GRAPH",
)


def is_skipped(name):
    return name.endswith(SKIPPED_SUFFIXES) or name in SKIPPED_NAMES


def google_names(num_hidden_layers):
    """TF variable name -> (Hugging Face name, transpose?) for Google's BERT code.

    ``modeling.py`` names the encoder (``bert/...``); dense layers hold ``kernel`` [in, out],
    transposed here to PyTorch's [out, in]; LayerNorm holds ``gamma``/``beta``.
    ``run_pretraining.py`` adds the pre-training heads (``cls/...``), whose ``output_weights``
    are already [out, in]; ``run_classifier.py`` adds a classifier (``output_weights``/``output_bias``).
    """
    names = {
        "bert/embeddings/word_embeddings": ("embeddings.word_embeddings.weight", False),
        "bert/embeddings/position_embeddings": ("embeddings.position_embeddings.weight", False),
        "bert/embeddings/token_type_embeddings": ("embeddings.token_type_embeddings.weight", False),
    }

    def dense(tf, hf):
        names[tf + "/kernel"] = (hf + ".weight", True)  # [in, out] -> [out, in]
        names[tf + "/bias"] = (hf + ".bias", False)

    def layer_norm(tf, hf):
        names[tf + "/gamma"] = (hf + ".weight", False)
        names[tf + "/beta"] = (hf + ".bias", False)

    layer_norm("bert/embeddings/LayerNorm", "embeddings.LayerNorm")
    for i in range(num_hidden_layers):
        tf, hf = f"bert/encoder/layer_{i}/", f"encoder.layer.{i}."
        for part in (
            "attention/self/query",
            "attention/self/key",
            "attention/self/value",
            "attention/output/dense",
            "intermediate/dense",
            "output/dense",
        ):
            dense(tf + part, hf + part.replace("/", "."))
        layer_norm(tf + "attention/output/LayerNorm", hf + "attention.output.LayerNorm")
        layer_norm(tf + "output/LayerNorm", hf + "output.LayerNorm")
    dense("bert/pooler/dense", "pooler.dense")
    dense("cls/predictions/transform/dense", "cls.predictions.transform.dense")
    layer_norm("cls/predictions/transform/LayerNorm", "cls.predictions.transform.LayerNorm")
    names["cls/predictions/output_bias"] = ("cls.predictions.bias", False)  # the decoder is the word embeddings
    names["cls/seq_relationship/output_weights"] = ("cls.seq_relationship.weight", False)  # [2, H]
    names["cls/seq_relationship/output_bias"] = ("cls.seq_relationship.bias", False)
    names["output_weights"] = ("classifier.weight", False)  # run_classifier.py: [num_labels, H]
    names["output_bias"] = ("classifier.bias", False)
    return names


def read_google_bert(prefix, num_hidden_layers):
    """The tensors of a Google BERT checkpoint under Hugging Face names (kernels transposed).

    Returns (tensors, skipped TF names). Optimizer slots and ``global_step`` are skipped
    without being read; any other variable that is not Google's BERT is an error naming it.
    """
    ckpt = TFCheckpoint(prefix)
    table = google_names(num_hidden_layers)
    skipped = sorted(n for n in ckpt.entries if is_skipped(n))
    unknown = sorted(n for n in ckpt.entries if n not in table and not is_skipped(n))
    if unknown:
        more = f" and {len(unknown) - 8} more" if len(unknown) > 8 else ""
        hint = "these are not variables of Google's BERT (modeling.py, run_pretraining.py, run_classifier.py)"
        if any(re.match(r"bert/encoder/layer_(\d+)/", n) for n in unknown):
            hint = (
                f"the config says num_hidden_layers={num_hidden_layers}: give the bert_config.json of this checkpoint"
            )
        raise ConversionError(
            f"{ckpt.prefix}: {len(unknown)} variable(s) minibert does not know: {', '.join(unknown[:8])}{more}", hint
        )
    tensors = {}
    for tf_name in sorted(ckpt.entries):
        if is_skipped(tf_name):
            continue
        hf_name, transpose = table[tf_name]
        value = ckpt.read(tf_name)
        tensors[hf_name] = np.ascontiguousarray(value.T) if transpose else value
    return tensors, skipped
