"""Property tests (issue 10, "Fuzzing"): mutated real files give a correct model or a MinibertError.

Hypothesis mutates a converted model .h5 (the tiny fixture model with a 1000-token vocabulary,
converted by our converter: attributes, dataset shapes and dtypes, raw bytes, truncation) and a
small .safetensors file (header fields, offsets, lengths, dtypes, the header size). Each
mutated file goes to tests/fuzz_worker.py, a process under a hard address-space limit
(RLIMIT_AS: what it uses after imports + 1 GiB), which answers whether the file gave the
original's exact outputs, a MinibertError, or anything else. Anything else, a wrong answer, a
crash, a hang or running out of memory fails the test.

CI runs FUZZ_EXAMPLES examples per property (default 60); a larger run:

    MINIBERT_FUZZ_EXAMPLES=2000 python -m pytest tests/test_fuzz.py -q -s

The number of cases run and their outcomes are printed (with -s) and recorded in COUNTS.
"""

import collections
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import minibert

from hardening_files import safetensors_bytes, small_hf_dir

HERE = Path(__file__).resolve().parent
EXAMPLES = int(os.environ.get("MINIBERT_FUZZ_EXAMPLES", "60"))
pytest.importorskip("safetensors")  # the worker compares with the official reader (the dev extra)
pytestmark = pytest.mark.torch

COUNTS = collections.Counter()
SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
)


class Worker:
    def __init__(self, h5, safetensors):
        env = dict(os.environ, PYTHONPATH=f"{HERE.parent}{os.pathsep}{HERE}")
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "fuzz_worker.py"), str(h5), str(safetensors)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.ready = json.loads(self.process.stdout.readline())

    def ask(self, kind, path):
        self.process.stdin.write(json.dumps({"kind": kind, "path": str(path)}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line, f"the worker died (crash or memory limit) on {path}, exit status {self.process.poll()}"
        return json.loads(line)

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=60)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    source = small_hf_dir(root / "model")
    h5 = minibert.convert(source, root / "model.h5")
    small = {
        "a": np.arange(6, dtype=np.float32).reshape(2, 3),
        "b": np.ones(4, np.float32),
        "c": np.arange(3, dtype=np.int64),
    }
    st_path = root / "small.safetensors"
    st_path.write_bytes(safetensors_bytes(small))
    return root, Path(h5), st_path, small


@pytest.fixture(scope="module")
def worker(files):
    _, h5, st_path, _ = files
    w = Worker(h5, st_path)
    yield w
    w.close()
    print(f"\nfuzz cases run: {dict(COUNTS)}")


def record(kind, answer):
    COUNTS[(kind, answer["outcome"])] += 1
    assert answer["outcome"] in ("same", "minibert-error"), answer


# --- the .h5 file ----------------------------------------------------------------------

ATTRIBUTES = [
    ("/", "format"),
    ("/", "format_version"),
    ("/", "heads"),
    ("/", "metadata_sha256"),
    ("/", "source"),
    ("/", "source_sha256"),
    ("/vocab", "do_lower_case"),
    ("/weights/pooler.dense.bias", "sha256"),
    ("/weights/embeddings.word_embeddings.weight", "sha256"),
] + [("/config", k) for k in minibert.BertConfig.__dataclass_fields__]

values = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([0, 1, 2, 31, 32, 33, 10**7, -1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=40),
    st.sampled_from(
        ["[]", "{}", '["masked-lm"]', '{"0": "a"}', "[1, 2]", "null", "gelu", "relu", "minibert-bert", "[" * 50]
    ),
    st.binary(max_size=20).map(np.void),
    st.lists(st.integers(-5, 5), min_size=1, max_size=4).map(np.array),
)


def set_attribute(path, where, key, value):
    """False when HDF5 cannot store the value at all (an empty opaque type): not a file anyone can make."""
    with h5py.File(path, "a") as f:
        try:
            f[where].attrs[key] = value
        except (ValueError, TypeError):
            return False
    return True


TENSORS = [
    "embeddings.word_embeddings.weight",
    "embeddings.LayerNorm.bias",
    "encoder.layer.1.output.dense.weight",
    "pooler.dense.weight",
    "encoder.layer.0.extra",
]
dims = st.one_of(st.integers(0, 70), st.sampled_from([1000, 2**20, 2**31]))


def replace_dataset(path, name, shape, dtype, allocate, keep_digest):
    with h5py.File(path, "a") as f:
        old = f["weights"].get(name)
        digest = old.attrs["sha256"] if old is not None else None
        if old is not None:
            del f["weights"][name]
        size = int(np.prod(shape, dtype=object))
        try:
            if allocate and size * np.dtype(dtype).itemsize <= 1 << 20:
                d = f["weights"].create_dataset(name, data=np.ones(shape, dtype=dtype))
            else:
                d = f["weights"].create_dataset(name, shape=shape, dtype=dtype)
        except ValueError:  # NumPy or HDF5 cannot even describe it (its size overflows): not a file anyone can make
            return False
        d.attrs["sha256"] = digest if keep_digest and digest is not None else "0" * 64
    return True


@SETTINGS
@given(where_key=st.sampled_from(ATTRIBUTES), value=values, delete=st.booleans())
def test_fuzz_h5_attributes(files, worker, tmp_path_factory, where_key, value, delete):
    root, h5, _, _ = files
    path = root / "case.h5"
    shutil.copy(h5, path)
    where, key = where_key
    if delete:
        with h5py.File(path, "a") as f:
            if key in f[where].attrs:
                del f[where].attrs[key]
    else:
        assume(set_attribute(path, where, key, value))
    record("h5 attribute", worker.ask("h5", path))


@SETTINGS
@given(
    name=st.sampled_from(TENSORS),
    shape=st.lists(dims, max_size=3).map(tuple),
    dtype=st.sampled_from(["<f4", "<f8", ">f4", "<i4", "<f2", "<c8", "u1"]),
    allocate=st.booleans(),
    keep_digest=st.booleans(),
)
def test_fuzz_h5_shapes_and_dtypes(files, worker, name, shape, dtype, allocate, keep_digest):
    root, h5, _, _ = files
    path = root / "case.h5"
    shutil.copy(h5, path)
    assume(replace_dataset(path, name, shape, dtype, allocate, keep_digest))
    record("h5 dataset", worker.ask("h5", path))


@SETTINGS
@given(data=st.data(), mode=st.sampled_from(["overwrite", "zero", "truncate"]), metadata_region=st.booleans())
def test_fuzz_h5_bytes(files, worker, data, mode, metadata_region):
    root, h5, _, _ = files
    raw = bytearray(h5.read_bytes())
    limit = min(len(raw), 8192) if metadata_region else len(raw)  # the headers HDF5 parses sit near the start
    offset = data.draw(st.integers(0, limit - 1))
    if mode == "truncate":
        raw = raw[:offset]
    else:
        n = data.draw(st.integers(1, 32))
        patch = bytes(n) if mode == "zero" else data.draw(st.binary(min_size=n, max_size=n))
        raw[offset : offset + n] = patch
        raw = raw[: len(h5.read_bytes())]
    path = root / "case.h5"
    path.write_bytes(bytes(raw))
    record("h5 bytes", worker.ask("h5", path))


# --- the .safetensors file --------------------------------------------------------------

offsets = st.one_of(st.integers(-10, 80), st.sampled_from([2**31, 2**63, 2**64 + 1]))
st_values = st.one_of(
    offsets,
    st.lists(offsets, max_size=3),
    st.lists(st.one_of(st.integers(-2, 70), st.sampled_from([2**40])), max_size=3),
    st.sampled_from(["F32", "F64", "F16", "I64", "I32", "U8", "BOOL", "C64", "", None]),
    st.text(max_size=5),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@SETTINGS
@given(data=st.data())
def test_fuzz_safetensors_header(files, worker, data):
    root, _, _, small = files
    name = data.draw(st.sampled_from(["a", "b", "c", "__metadata__", "new"]))
    field = data.draw(st.sampled_from(["dtype", "shape", "data_offsets", "extra", None]))
    value = data.draw(st_values)

    def change(header):
        if field is None:  # replace or remove the whole entry
            header[name] = value
            if value is None:
                header.pop(name)
        else:
            entry = header.setdefault(name, {})
            if isinstance(entry, dict):
                entry[field] = value
        return header

    path = root / "case.safetensors"
    path.write_bytes(safetensors_bytes(small, edit=change))
    record("safetensors header", worker.ask("safetensors", path))


@SETTINGS
@given(data=st.data(), mode=st.sampled_from(["header-size", "truncate", "append", "overwrite-header"]))
def test_fuzz_safetensors_lengths(files, worker, data, mode):
    root, _, st_path, _ = files
    raw = bytearray(st_path.read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    if mode == "header-size":
        raw[:8] = struct.pack("<Q", data.draw(st.one_of(st.integers(0, 2 * n), st.integers(0, 2**64 - 1))))
    elif mode == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif mode == "append":
        raw += data.draw(st.binary(min_size=1, max_size=16))
    else:
        offset = data.draw(st.integers(8, 8 + n - 1))
        raw[offset] = data.draw(st.integers(0, 255))
    path = root / "case.safetensors"
    path.write_bytes(bytes(raw))
    record("safetensors bytes", worker.ask("safetensors", path))
