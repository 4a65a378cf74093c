"""Small hand-built files for the hardening and fuzz tests (no torch needed).

``small_hf_dir`` writes a Hugging Face-style directory (config.json, vocab.txt,
model.safetensors) holding the tensors of tests/fixtures/tiny_model.h5 (vocab 1000, H=32,
L=2): it converts in a fraction of a second. ``safetensors_bytes`` builds a .safetensors file
from a header we control, so a test can make it lie.
"""

import json
import struct
from pathlib import Path

import numpy as np

from minibert import weights

FIXTURES = Path(__file__).parent / "fixtures"
TINY = FIXTURES / "tiny_model.h5"
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tiny_tensors():
    return weights.load(TINY).tensors


def tiny_config_dict():
    c = weights.read_config(TINY).to_dict()
    c.pop("id2label")
    return {"architectures": ["BertModel"], "model_type": "bert", **c}


def vocab_lines(n=1000):
    return SPECIALS + [f"tok{i}" for i in range(n - len(SPECIALS))]


def safetensors_bytes(tensors, edit=None, dtype_names=None):
    """The bytes of a .safetensors file of ``tensors``; ``edit(header)`` may change the header first."""
    names = {np.dtype("float32"): "F32", np.dtype("float64"): "F64", np.dtype("int32"): "I32", np.dtype("int64"): "I64"}
    header, chunks, offset = {}, [], 0
    for name, array in tensors.items():
        raw = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
        header[name] = {
            "dtype": (dtype_names or {}).get(name, names[array.dtype]),
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        chunks.append(raw)
        offset += len(raw)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header) if edit is None else edit(header)
    if not isinstance(text, (str, bytes)):
        text = json.dumps(text)
    head = text.encode("utf-8") if isinstance(text, str) else text
    return struct.pack("<Q", len(head)) + head + b"".join(chunks)


def small_hf_dir(directory, config=None, vocab=None, tensors=None):
    """Write config.json, vocab.txt, model.safetensors of the tiny fixture model into ``directory``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(tiny_config_dict() if config is None else config))
    (d / "vocab.txt").write_text("\n".join(vocab_lines() if vocab is None else vocab) + "\n", encoding="utf-8")
    (d / "model.safetensors").write_bytes(safetensors_bytes(tiny_tensors() if tensors is None else tensors))
    return d
