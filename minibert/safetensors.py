"""A strict NumPy reader of ``.safetensors`` files (no torch, no trust in the header), and a writer.

The format (https://huggingface.co/docs/safetensors/index#format)::

    8 bytes      N, an unsigned little-endian 64-bit integer: the size of the header
    N bytes      a UTF-8 JSON object, starting with "{", possibly padded with spaces:
                 {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [BEGIN, END]}, ...,
                  "__metadata__": {"key": "value", ...}}   (optional, strings only)
    the rest     the byte buffer; BEGIN/END are relative to its start

Every number in the header is checked before a byte of tensor data is read: the header size
against the file, each tensor's keys, dtype and shape, its byte span against dtype x shape,
and the spans against each other (they must tile the buffer exactly: in order, without holes,
overlaps or trailing bytes). Names must be unique. Any failure is a ``ConversionError`` that
names the file and the tensor.
"""

import json
import struct
from pathlib import Path

import numpy as np

from .errors import ConversionError

# safetensors dtype -> NumPy dtype (little-endian). BF16 is widened to float32 on read.
DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "BF16": "<u2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U64": "<u8",
    "U32": "<u4",
    "U16": "<u2",
    "U8": "u1",
    "BOOL": "?",
}
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")
MAX_HEADER_SIZE = 100 * 1024 * 1024  # the reference implementation's limit
REDOWNLOAD = "download the checkpoint again (or re-save it with the safetensors library)"


def _bad(path, what, hint=REDOWNLOAD):
    return ConversionError(f"{path}: not a valid .safetensors file: {what}", hint)


def _unique_keys(pairs):
    """object_pairs_hook for json.loads: a name given twice is an error, not "last one wins"."""
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"the name {key!r} appears twice in the header")
        seen[key] = value
    return seen


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_header(path):
    """Parse and check the header of a .safetensors file: (entries, metadata, buffer start).

    ``entries``: name -> (dtype, shape, begin, end) in header order, every span checked.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise _bad(path, f"{size} bytes, too short for the 8-byte header size")
        n = int.from_bytes(prefix, "little")
        if n > MAX_HEADER_SIZE or 8 + n > size:
            raise _bad(
                path,
                f"the header size {n} is larger than the file ({size} bytes) allows"
                + (" or than the 100 MB limit" if n > MAX_HEADER_SIZE else ""),
            )
        raw = f.read(n)
    if not raw.startswith(b"{"):
        raise _bad(path, "the header does not start with '{'")
    try:
        header = json.loads(raw.decode("utf-8").rstrip(" "), object_pairs_hook=_unique_keys)
    except RecursionError:
        raise _bad(path, "the header JSON is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise _bad(path, f"the header is not valid UTF-8 JSON ({e})") from None
    if not isinstance(header, dict):
        raise _bad(path, f"the header is a JSON {type(header).__name__}, expected an object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _bad(path, "__metadata__ must be an object of strings")
    buffer_size = size - 8 - n
    entries = {}
    for name, info in header.items():
        where = f"tensor {name!r}"
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            keys = sorted(info) if isinstance(info, dict) else type(info).__name__
            raise _bad(path, f"{where} must have exactly the keys dtype, shape, data_offsets (found {keys})")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise _bad(path, f"{where} has unsupported dtype {dtype!r}", f"use one of {', '.join(DTYPES)}")
        if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
            raise _bad(path, f"{where} has shape {shape!r}, expected a list of non-negative integers")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)):
            raise _bad(path, f"{where} has data_offsets {offsets!r}, expected [BEGIN, END], two non-negative integers")
        begin, end = offsets
        if begin > end:
            raise _bad(path, f"{where} has data_offsets [{begin}, {end}]: BEGIN is after END")
        nbytes = int(np.prod(shape, dtype=object)) * np.dtype(DTYPES[dtype]).itemsize  # Python ints: no overflow
        if end - begin != nbytes:
            raise _bad(
                path, f"{where} spans {end - begin} bytes but dtype {dtype} and shape {tuple(shape)} need {nbytes}"
            )
        entries[name] = (dtype, tuple(shape), begin, end)
    position = 0  # the spans must tile the buffer exactly: in order, no hole, no overlap, nothing after
    for name, (_, _, begin, end) in sorted(entries.items(), key=lambda item: (item[1][2], item[1][3])):
        if begin != position:
            what = (
                "overlaps the tensor before it"
                if begin < position
                else f"leaves a hole of {begin - position} bytes before it"
            )
            raise _bad(path, f"tensor {name!r} at data_offsets [{begin}, {end}] {what}")
        position = end
    if position != buffer_size:
        what = (
            "runs past the end of the file (truncated download?)"
            if position > buffer_size
            else f"leaves {buffer_size - position} bytes after the last tensor"
        )
        raise _bad(path, f"the data section is {buffer_size} bytes but the tensors cover {position}: the file {what}")
    return entries, metadata, 8 + n


def read_safetensors(path):
    """Read a .safetensors file with NumPy: name -> array (bfloat16 widened to float32)."""
    path = Path(path)
    entries, _, start = read_header(path)
    tensors = {}
    with open(path, "rb") as f:
        for name, (dtype, shape, begin, end) in entries.items():
            f.seek(start + begin)
            raw = f.read(end - begin)
            if len(raw) != end - begin:  # the file shrank while we read it
                raise _bad(path, f"tensor {name!r} is cut short")
            array = np.frombuffer(raw, dtype=DTYPES[dtype])
            if dtype == "BF16":  # the top 16 bits of a float32
                array = (array.astype(np.uint32) << 16).view(np.float32)
            tensors[name] = array.astype(array.dtype.newbyteorder("="), copy=True).reshape(shape)
    return tensors


# ---------------------------------------------------------------------------------------
# Writing (minibert export): the same format, tensors in name order, tiling the buffer
# ---------------------------------------------------------------------------------------

WRITE_DTYPES = {np.dtype(np.float64): "F64", np.dtype(np.float32): "F32", np.dtype(np.float16): "F16",
                np.dtype(np.int64): "I64", np.dtype(np.int32): "I32"}


def write_safetensors(path, tensors, metadata=None):
    """Write name -> array as a .safetensors file (sorted by name, little-endian, C order), atomically."""
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        if array.dtype not in WRITE_DTYPES:
            raise ConversionError(f"tensor {name} has dtype {array.dtype}, which the writer does not write",
                                  "store float32 or float64 tensors")
        raw = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": WRITE_DTYPES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned, as the reference writer does
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for raw in blobs:
            f.write(raw)
    tmp.replace(path)
    return path
