"""Bad input gets a clear minibert error naming the problem and the fix, never a traceback."""

import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

import minibert
from minibert import ConversionError, InputError, WeightsError
from minibert.weights import tensor_sha256

from helpers import run_cli

FIXTURES = Path(__file__).parent / "fixtures"
TINY = FIXTURES / "tiny_model.h5"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def tiny_copy(tmp_path):
    p = tmp_path / "tiny.h5"
    shutil.copy(TINY, p)
    return p


@pytest.fixture(scope="module")
def model():
    return minibert.load(TINY)


# --- files -------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(WeightsError, match=r"missing\.h5: file not found") as e:
        minibert.load(tmp_path / "missing.h5")
    assert "minibert convert" in str(e.value)


def test_directory_instead_of_h5(tmp_path):
    with pytest.raises(WeightsError, match="is a directory"):
        minibert.load(tmp_path)


def test_directory_without_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConversionError, match="no model.safetensors or pytorch_model.bin"):
        minibert.convert(tmp_path, tmp_path / "out.h5")


def test_directory_without_config(preset_model, tmp_path):
    _, hf_dir, _ = preset_model("bert-tiny")
    shutil.copy(hf_dir / "model.safetensors", tmp_path)
    with pytest.raises(ConversionError, match="no config.json") as e:
        minibert.convert(tmp_path, tmp_path / "out.h5")
    assert "--config" in str(e.value)


def test_hdf5_file_that_is_not_ours(tmp_path):
    p = tmp_path / "other.h5"
    with h5py.File(p, "w") as f:
        f["data"] = np.zeros(3)
    with pytest.raises(WeightsError, match="not a minibert weights file"):
        minibert.load(p)


def test_other_format_version(tiny_copy):
    with h5py.File(tiny_copy, "a") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(WeightsError, match="format version 99, this minibert reads version 2"):
        minibert.load(tiny_copy)


def test_not_hdf5_at_all(tmp_path):
    p = tmp_path / "model.h5"
    p.write_bytes(b"this is not HDF5")
    with pytest.raises(WeightsError, match="not a readable HDF5 file"):
        minibert.load(p)


def test_truncated_file(tiny_copy):
    data = tiny_copy.read_bytes()
    tiny_copy.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated|corrupted|not a readable"):
        minibert.load(tiny_copy)


def test_corrupted_tensor_bytes_fail_the_checksum(tiny_copy):
    name = "encoder.layer.1.intermediate.dense.weight"
    with h5py.File(tiny_copy, "r") as f:
        offset = f["weights"][name].id.get_offset()
    with open(tiny_copy, "r+b") as fh:  # flip bytes inside the tensor's data, as a bad disk would
        fh.seek(offset + 40)
        fh.write(b"\x12\x34\x56\x78")
    with pytest.raises(WeightsError, match=f"tensor {name} fails its SHA-256 check"):
        minibert.load(tiny_copy)
    assert minibert.load(tiny_copy, verify=False).config.hidden_size == 32  # verify=False skips the check


def test_missing_tensor(tiny_copy):
    with h5py.File(tiny_copy, "a") as f:
        del f["weights/encoder.layer.1.output.dense.bias"]
    with pytest.raises(WeightsError, match="tensor encoder.layer.1.output.dense.bias is missing"):
        minibert.load(tiny_copy)


def test_wrong_shape_names_tensor_expected_and_found(tiny_copy):
    name = "encoder.layer.1.output.dense.weight"
    bad = np.zeros((32, 48), np.float32)
    with h5py.File(tiny_copy, "a") as f:
        del f["weights/" + name]
        d = f.create_dataset("weights/" + name, data=bad)
        d.attrs["sha256"] = tensor_sha256(bad)
    with pytest.raises(WeightsError) as e:
        minibert.load(tiny_copy)
    msg = str(e.value)
    assert f"tensor {name} has shape (32, 48), expected (32, 64)" in msg
    assert "intermediate_size=64" in msg and "minibert convert" in msg


def test_config_shape_mismatch_at_conversion(preset_model, tmp_path):
    import json

    _, hf_dir, _ = preset_model("bert-tiny")
    d = tmp_path / "m"
    shutil.copytree(hf_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["intermediate_size"] = 256
    (d / "config.json").write_text(json.dumps(cfg))
    expected = r"intermediate.dense.weight has shape \(512, 128\), expected \(256, 128\)"
    with pytest.raises(ConversionError, match=expected):
        minibert.convert(d, tmp_path / "out.h5")


# --- unsafe pickles ----------------------------------------------------------------------


class RunsCode:
    """A pickle payload that would create a file when unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_bin_whose_pickle_would_run_code_is_refused(preset_model, tmp_path):
    import torch

    _, hf_dir, _ = preset_model("bert-tiny")
    marker = tmp_path / "pwned"
    d = tmp_path / "evil"
    d.mkdir()
    shutil.copy(hf_dir / "config.json", d)
    torch.save(
        {"embeddings.word_embeddings.weight": torch.zeros(2), "payload": RunsCode(str(marker))}, d / "pytorch_model.bin"
    )
    with pytest.raises(ConversionError, match="refused to load") as e:
        minibert.convert(d, tmp_path / "out.h5")
    assert "trust" in str(e.value)
    assert not marker.exists(), "the pickled code ran"
    assert not (tmp_path / "out.h5").exists()
    # Sanity: the payload really does run code under an unrestricted unpickler.
    with open(d / "pytorch_model.bin", "rb") as fh:
        assert fh.read(2) == b"PK"  # torch.save writes a zip; the pickle is inside
    pickle.loads(pickle.dumps(RunsCode(str(marker))))
    assert marker.exists()


# --- model inputs ------------------------------------------------------------------------


def test_token_id_out_of_range(model):
    with pytest.raises(InputError, match=r"input_ids\[0, 2\] = 1000 is outside the vocabulary \[0, 1000\)"):
        model([[101, 5, 1000]])


def test_negative_token_id(model):
    with pytest.raises(InputError, match=r"input_ids\[1, 0\] = -1 is outside the vocabulary"):
        model([[1, 2], [-1, 3]])


def test_sequence_longer_than_max_positions(model):
    with pytest.raises(InputError, match="sequence length 65 exceeds max_position_embeddings=64") as e:
        model(np.ones((1, 65), np.int64))
    assert "truncate" in str(e.value)


def test_mask_shape_mismatch(model):
    with pytest.raises(InputError, match=r"attention_mask has shape \(1, 3\) but input_ids has shape \(1, 4\)"):
        model([[1, 2, 3, 4]], attention_mask=[[1, 1, 1]])


def test_token_type_out_of_range(model):
    with pytest.raises(InputError, match=r"token_type_ids\[0, 1\] = 2 is outside \[0, 2\)"):
        model([[1, 2]], token_type_ids=[[0, 2]])


def test_float_ids_are_refused(model):
    with pytest.raises(InputError, match="input_ids has dtype float64, expected integers"):
        model(np.array([[1.5, 2.0]]))


def test_mask_with_other_values(model):
    with pytest.raises(InputError, match="attention_mask must hold only 0"):
        model([[1, 2]], attention_mask=[[1, 2]])


def test_ragged_ids(model):
    with pytest.raises(InputError, match="not a rectangular array"):
        model([[1, 2, 3], [1]])


def test_wrong_dtype_name():
    with pytest.raises(InputError, match="dtype 'float16' is not supported"):
        minibert.load(TINY, dtype="float16")


def test_unknown_backend():
    with pytest.raises(InputError, match="backend 'cuda' is not available"):
        minibert.load(TINY, backend="cuda")


# --- the command line prints errors without a traceback ----------------------------------


@pytest.mark.parametrize(
    "args,expected",
    [
        (["inspect", "nope.h5"], "error: nope.h5: file not found"),
        (["convert", "/no/such/dir", "out.h5"], "error: /no/such/dir: no such file or directory"),
    ],
)
def test_cli_errors_are_one_line_and_exit_nonzero(args, expected):
    r = run_cli(*args)
    assert r.returncode == 1
    assert r.stderr.startswith(expected)
    assert "fix: " in r.stderr
    assert "Traceback" not in r.stderr
