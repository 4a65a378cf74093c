"""Issue 10: never a lost file, never a silently wrong answer, from hostile or damaged files.

Items 1-10 and the file parts of item 11: the converter's output, the safetensors reader, the
converter's side files, the .h5 format's metadata checksum, declared sizes and HDF5 links.
Each test names the item it covers. Files are built by hand (tests/hardening_files.py), so
the module needs no torch and runs in a few seconds.
"""

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

import minibert
from minibert import ConversionError, WeightsError, hdf5, weights
from minibert.cli import main
from minibert.safetensors import read_safetensors

from hardening_files import TINY, safetensors_bytes, small_hf_dir, tiny_config_dict, tiny_tensors, vocab_lines

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def src(tmp_path):
    return small_hf_dir(tmp_path / "model")


@pytest.fixture
def h5(tmp_path):
    p = tmp_path / "tiny.h5"
    shutil.copy(TINY, p)
    return p


def listing(directory):
    return sorted(p.name for p in Path(directory).iterdir())


def cli_error(capsys, *args):
    """Run the CLI in-process; return its stderr, asserting exit 1 and an error/fix pair."""
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.startswith("error: ") and "\nfix: " in err and "Traceback" not in err, err
    return err


# --- 1. the output must not be an input ------------------------------------------------


@pytest.mark.parametrize("case", ["file-onto-itself", "dir-onto-weights", "dir-onto-config", "symlink-to-vocab"])
def test_item1_convert_refuses_to_overwrite_its_input(src, tmp_path, case):
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    if case == "file-onto-itself":
        args = (src / "model.safetensors", src / "model.safetensors")
    elif case == "dir-onto-weights":
        args = (src, src / "model.safetensors")
    elif case == "dir-onto-config":
        args = (src, src / "config.json")
    else:
        (tmp_path / "link.h5").symlink_to(src / "vocab.txt")
        args = (src, tmp_path / "link.h5")
    with pytest.raises(ConversionError, match="the output is the input file"):
        minibert.convert(*args)
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before  # nothing replaced, nothing left over


# --- 2, 3. a unique temporary file, never through a symlink, verified before success ----


def test_item2_temporary_name_is_unique_and_a_stale_partial_is_untouched(src, tmp_path):
    out = tmp_path / "out.h5"
    stale = tmp_path / "out.h5.partial"
    stale.write_bytes(b"another run's half-written file")
    minibert.convert(src, out)
    assert stale.read_bytes() == b"another run's half-written file"
    assert listing(tmp_path) == ["model", "out.h5", "out.h5.partial"]
    assert weights.load(out).config.hidden_size == 32


def test_item2_two_concurrent_converts_both_succeed_with_a_verified_file(src, tmp_path):
    out = tmp_path / "out.h5"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "minibert", "convert", str(src), str(out)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [r.communicate(timeout=120) + (r.returncode,) for r in runs]
    assert [code for _, _, code in results] == [0, 0], results
    assert weights.load(out, verify=True).config.num_hidden_layers == 2
    assert listing(tmp_path) == ["model", "out.h5"]


def test_item2_a_file_that_fails_verification_is_never_reported_as_written(src, tmp_path, monkeypatch):
    real = weights.tensor_sha256
    calls = []

    def corrupting(array):  # the digest written differs from what is read back, as a bad disk would make it
        calls.append(1)
        return real(array) if len(calls) > 1 else "0" * 64

    monkeypatch.setattr(weights, "tensor_sha256", corrupting)
    with pytest.raises(WeightsError, match="the written file fails verification"):
        minibert.convert(src, tmp_path / "out.h5")
    assert listing(tmp_path) == ["model"]


def test_item3_a_symlink_planted_at_the_old_partial_name_is_not_followed(src, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "out.h5.partial").symlink_to(victim)
    minibert.convert(src, tmp_path / "out.h5")
    assert victim.read_text() == "precious"
    assert (tmp_path / "out.h5.partial").is_symlink()


# --- 4, 5. clean up on failure and Ctrl-C; a directory as output -----------------------


@pytest.mark.parametrize("exception", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_item4_a_failure_inside_save_leaves_no_partial_file(src, tmp_path, monkeypatch, exception):
    def failing(array):
        raise exception

    monkeypatch.setattr(weights, "tensor_sha256", failing)
    with pytest.raises(type(exception)):
        minibert.convert(src, tmp_path / "out.h5")
    assert listing(tmp_path) == ["model"]


def test_item5_output_onto_an_existing_directory_is_refused_before_work(src, tmp_path, capsys):
    (tmp_path / "outdir").mkdir()
    err = cli_error(capsys, "convert", src, tmp_path / "outdir")
    assert "the output is a directory" in err and "model.h5" in err
    assert listing(tmp_path / "outdir") == []


# --- 6. the metadata checksum: config, vocabulary, heads, tensor list ------------------


def edit(path, change):
    with h5py.File(path, "a") as f:
        change(f)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda f: f["config"].attrs.__setitem__("num_hidden_layers", 1), id="num_hidden_layers-2-to-1"),
        pytest.param(lambda f: f["config"].attrs.__setitem__("layer_norm_eps", 1e-5), id="layer_norm_eps"),
        pytest.param(lambda f: f["config"].attrs.__setitem__("pad_token_id", 3), id="pad_token_id"),
        pytest.param(lambda f: f["config"].attrs.__setitem__("id2label", '{"0": "x"}'), id="id2label"),
        pytest.param(
            lambda f: f["weights"]["pooler.dense.weight"].attrs.__setitem__("sha256", "0" * 64), id="tensor-digest"
        ),
    ],
)
def test_item6_edited_config_values_fail_the_metadata_checksum(h5, change):
    edit(h5, change)
    with pytest.raises(WeightsError, match="the config, vocabulary, heads or tensor list fail their SHA-256 check"):
        minibert.load(h5)


def test_item6_a_tensor_digest_is_of_its_little_endian_c_order_bytes_whatever_the_layout():
    """tensor_sha256 hashes the array's buffer in place: a transposed view, a big-endian copy
    and float32 [[0, 2, 4], [1, 3, 5]] written out byte by byte all give the stored digest."""
    x = np.arange(6, dtype=np.float32).reshape(2, 3).T  # [[0, 3], [1, 4], [2, 5]], a strided view
    digest = "0c9d0bb54e4f5a0121543129f106617549c7ff2b34c6842c5a2e19186c5a7914"
    as_bytes = bytes.fromhex("00000000000040400000803f00008040000000400000a040")  # 0, 3, 1, 4, 2, 5 as <f4
    assert np.array_equal(np.frombuffer(as_bytes, "<f4"), [0, 3, 1, 4, 2, 5])
    for same in (x, np.ascontiguousarray(x), x.astype(">f4"), np.frombuffer(as_bytes, "<f4").reshape(3, 2)):
        assert weights.tensor_sha256(same) == digest


def test_item6_deleting_the_pooler_pair_fails_the_metadata_checksum(h5):
    edit(h5, lambda f: (f["weights"].__delitem__("pooler.dense.weight"), f["weights"].__delitem__("pooler.dense.bias")))
    with pytest.raises(WeightsError, match="the config, vocabulary, heads or tensor list fail their SHA-256 check"):
        minibert.load(h5)


@pytest.fixture
def with_vocab(src, tmp_path):
    return minibert.convert(src, tmp_path / "v.h5")


def test_item6_swapped_vocabulary_entries_and_do_lower_case_fail_everywhere(with_vocab, capsys):
    path = Path(with_vocab)
    good = path.read_bytes()
    with h5py.File(path, "a") as f:
        v = f["vocab"][()]
        v[10], v[11] = v[11], v[10]
        f["vocab"][...] = v
    for read in (minibert.load, weights.read_vocab, weights.read_config, minibert.Tokenizer.from_file):
        with pytest.raises(WeightsError, match="fail their SHA-256 check"):
            read(path)
    assert "fail their SHA-256 check" in cli_error(capsys, "inspect", path, "--verify")
    path.write_bytes(good)
    edit(path, lambda f: f["vocab"].attrs.__setitem__("do_lower_case", False))
    assert "fail their SHA-256 check" in cli_error(capsys, "encode", path, "tok1 tok2")


def test_item6_nan_eps_in_the_file_is_refused_on_load(h5):
    edit(h5, lambda f: f["config"].attrs.__setitem__("layer_norm_eps", float("nan")))
    with pytest.raises(WeightsError, match="layer_norm_eps=nan must be a finite number"):
        minibert.load(h5)


def test_item6_format_version_1_is_refused_with_the_fix(h5):
    edit(h5, lambda f: f.attrs.__setitem__("format_version", 1))
    with pytest.raises(
        WeightsError, match=r"format version 1, this minibert reads version 2 \(version 1 files carry no checksum"
    ) as e:
        minibert.load(h5)
    assert "minibert convert" in e.value.hint


# --- 7. the safetensors reader validates as the format specifies -----------------------


def small_tensors():
    return {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(4, np.float32)}


def entry_edit(name, **fields):
    def change(header):
        header[name].update(fields)
        return header

    return change


@pytest.mark.parametrize(
    "change,match",
    [
        (entry_edit("a", data_offsets=[-8, 16]), "expected \\[BEGIN, END\\], two non-negative integers"),
        (entry_edit("b", data_offsets=[16, 32]), "overlaps the tensor before it"),
        (entry_edit("b", data_offsets=[32, 48]), "leaves a hole of 8 bytes"),
        (
            lambda h: json.dumps(h)[:-1] + ', "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}}',
            "appears twice in the header",
        ),
    ],
    ids=["negative-offset", "overlap", "hole", "duplicate-key"],
)
def test_item7_lying_safetensors_headers_are_refused(tmp_path, change, match):
    assert_refused(tmp_path, safetensors_bytes(small_tensors(), edit=change), match)


def assert_refused(tmp_path, data, match):
    """A .safetensors file of these bytes is a ConversionError matching ``match``."""
    p = tmp_path / "m.safetensors"
    p.write_bytes(data)
    with pytest.raises(ConversionError, match=match):
        read_safetensors(p)


def test_item7_trailing_garbage_is_refused(tmp_path):
    assert_refused(tmp_path, safetensors_bytes(small_tensors()) + b"junk", "leaves 4 bytes after the last tensor")


@pytest.mark.torch  # the safetensors package comes with the reference stack (the dev extra)
def test_item7_a_valid_file_reads_as_the_safetensors_package_reads_it(tmp_path):
    load_file = pytest.importorskip("safetensors.numpy").load_file

    p = tmp_path / "m.safetensors"
    p.write_bytes(safetensors_bytes(small_tensors()))
    ours, theirs = read_safetensors(p), load_file(p)
    assert ours.keys() == theirs.keys()
    for k in ours:
        np.testing.assert_array_equal(ours[k], theirs[k])
        assert ours[k].dtype == theirs[k].dtype


def test_item7_an_integer_dtype_for_a_float_weight_is_refused(tmp_path):
    tensors = tiny_tensors()
    name = "encoder.layer.0.attention.self.query.weight"
    tensors[name] = tensors[name].view(np.int32)  # same bytes, declared I32
    d = small_hf_dir(tmp_path / "m", tensors=tensors)
    with pytest.raises(ConversionError, match=f"tensor {name} has dtype int32, expected a float dtype"):
        minibert.convert(d, tmp_path / "out.h5")
    assert listing(tmp_path) == ["m"]


# --- 8. side files --------------------------------------------------------------------


@pytest.mark.parametrize(
    "case,match",
    [
        ("empty-vocab", "the vocabulary is empty"),
        ("vocab-is-a-directory", "vocab.txt: is not a file"),
        ("vocab-without-mask", r"lacks the special token\(s\) \[MASK\]"),
        ("vocab-with-nul", "line 7 holds a NUL byte"),
        ("pad-token-id-string", "pad_token_id='x' must be a token id"),
        ("tie-word-embeddings-string", "tie_word_embeddings='false' must be true or false"),
        ("nan-weight", "tensor encoder.layer.1.output.dense.weight holds 1 NaN or infinite value"),
        ("inf-weight", "tensor embeddings.LayerNorm.bias holds 1 NaN or infinite value"),
    ],
)
def test_item8_bad_side_files_are_refused(tmp_path, case, match):
    d = small_hf_dir(tmp_path / "m")
    if case == "empty-vocab":
        (d / "vocab.txt").write_text("")
    elif case == "vocab-is-a-directory":
        (d / "vocab.txt").unlink()
        (d / "vocab.txt").mkdir()
    elif case == "vocab-without-mask":
        (d / "vocab.txt").write_text("\n".join(t for t in vocab_lines() if t != "[MASK]") + "\nextra\n")
    elif case == "vocab-with-nul":
        lines = vocab_lines()
        lines[6] = "to\0k"
        (d / "vocab.txt").write_text("\n".join(lines) + "\n")
    elif case in ("pad-token-id-string", "tie-word-embeddings-string"):
        cfg = tiny_config_dict()
        cfg.update({"pad_token_id": "x"} if case == "pad-token-id-string" else {"tie_word_embeddings": "false"})
        (d / "config.json").write_text(json.dumps(cfg))
    else:
        tensors = tiny_tensors()
        name = "encoder.layer.1.output.dense.weight" if case == "nan-weight" else "embeddings.LayerNorm.bias"
        tensors[name].reshape(-1)[3] = math.nan if case == "nan-weight" else math.inf
        small_hf_dir(d, tensors=tensors)
    with pytest.raises(ConversionError, match=match):
        minibert.convert(d, tmp_path / "out.h5")
    assert not (tmp_path / "out.h5").exists()


# --- 9. declared sizes: bounded before anything is read or allocated -------------------


def test_item9_huge_num_hidden_layers_in_config_json_is_refused_at_once(tmp_path):
    cfg = tiny_config_dict()
    cfg["num_hidden_layers"] = 10**7
    d = small_hf_dir(tmp_path / "m", config=cfg)
    start = time.perf_counter()
    with pytest.raises(ConversionError, match="num_hidden_layers=10000000 must be an integer from 1 to 256"):
        minibert.convert(d, tmp_path / "out.h5")
    assert time.perf_counter() - start < 30  # not the 30-45 s to a MemoryError of before (a loose bound)


def test_item9_huge_num_hidden_layers_in_the_h5_config_is_refused(h5):
    edit(h5, lambda f: f["config"].attrs.__setitem__("num_hidden_layers", 10**7))
    with pytest.raises(WeightsError, match="num_hidden_layers=10000000 must be an integer from 1 to 256"):
        weights.load(h5)


def test_item9_a_small_file_declaring_a_12_gib_tensor_is_refused_before_reading(h5):
    def add_huge(f):  # declared, never written: HDF5 allocates contiguous storage late, so the file stays small
        f["weights"].create_dataset("encoder.layer.0.extra.weight", shape=(50_000, 65_536), dtype=np.float32)

    edit(h5, add_huge)
    assert h5.stat().st_size < 1 << 20
    code = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))\n"
        "from minibert import weights, WeightsError\n"
        "try:\n    weights.load(sys.argv[1])\nexcept WeightsError as e:\n    print(e.message)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(h5)],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert (
        "encoder.layer.0.extra.weight declares shape (50000, 65536) (13,107,200,000 bytes) but the file stores 0 bytes"
        in r.stdout
    )


# --- 10. no external links, external storage or virtual datasets ------------------------


def test_item10_an_external_link_is_refused(h5, tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["t"] = np.zeros((32,), np.float32)
    edit(
        h5,
        lambda f: (
            f["weights"].__delitem__("pooler.dense.bias"),
            f["weights"].__setitem__("pooler.dense.bias", h5py.ExternalLink(str(other), "t")),
        ),
    )
    with pytest.raises(WeightsError, match="/weights/pooler.dense.bias is an external link to another file"):
        weights.load(h5)


def test_item10_external_storage_is_refused(h5, tmp_path):
    outside = tmp_path / "outside.bin"
    outside.write_bytes(np.zeros(32, np.float32).tobytes())

    def swap(f):
        del f["weights"]["pooler.dense.bias"]
        f["weights"].create_dataset(
            "pooler.dense.bias", shape=(32,), dtype=np.float32, external=[(str(outside), 0, 128)]
        )

    edit(h5, swap)
    with pytest.raises(WeightsError, match="dataset /weights/pooler.dense.bias keeps its bytes in external files"):
        weights.load(h5)


def test_item10_a_virtual_dataset_is_refused(h5, tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["t"] = np.zeros((32,), np.float32)

    def swap(f):
        layout = h5py.VirtualLayout(shape=(32,), dtype=np.float32)
        layout[:] = h5py.VirtualSource(str(other), "t", shape=(32,))
        del f["weights"]["pooler.dense.bias"]
        f["weights"].create_virtual_dataset("pooler.dense.bias", layout)

    edit(h5, swap)
    with pytest.raises(WeightsError, match="dataset /weights/pooler.dense.bias is a virtual dataset"):
        weights.load(h5)


# --- 11. tracebacks become MinibertErrors: safetensors, config, .h5 --------------------


@pytest.mark.parametrize(
    "change,match",
    [
        (entry_edit("a", shape=[4, 4]), "spans 24 bytes but dtype F32 and shape \\(4, 4\\) need 64"),
        (entry_edit("a", data_offsets=[24, 0]), "BEGIN is after END"),
        (entry_edit("a", shape=[2**40, 2**40]), "need 4835703278458516698824704"),
        (entry_edit("a", shape=[5], data_offsets=[0, 24], dtype="F32"), "need 20"),
        (lambda h: (h["a"].pop("data_offsets"), h)[1], "must have exactly the keys dtype, shape, data_offsets"),
        (lambda h: [1, 2, 3], "does not start with"),
        (
            lambda h: "{" + '"a":' * 0 + '"x": ' + "[" * 100_000 + "]" * 100_000 + "}",
            "nested too deeply|must have exactly",
        ),
        (entry_edit("a", dtype="C64"), "unsupported dtype 'C64'"),
    ],
    ids=[
        "size-shape-mismatch",
        "start-after-end",
        "huge-shape",
        "not-a-multiple",
        "missing-offsets",
        "header-list",
        "deep-nesting",
        "unknown-dtype",
    ],
)
def test_item11_safetensors_errors_are_minibert_errors(tmp_path, change, match):
    assert_refused(tmp_path, safetensors_bytes(small_tensors(), edit=change), match)


def test_item11_safetensors_header_size_2_to_63(tmp_path):
    p = tmp_path / "m.safetensors"
    data = safetensors_bytes(small_tensors())
    p.write_bytes((2**63).to_bytes(8, "little") + data[8:])
    with pytest.raises(ConversionError, match="the header size 9223372036854775808 is larger than the file"):
        read_safetensors(p)


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("layer_norm_eps", "abc", "layer_norm_eps='abc' must be a finite number"),
        ("id2label", ["a", "b"], r"id2label=\['a', 'b'\] must be an object"),
        ("pad_token_id", 10**30, "pad_token_id=1000000000000000000000000000000 must be a token id"),
    ],
)
def test_item11_bad_config_values_are_conversion_errors(tmp_path, capsys, key, value, match):
    cfg = tiny_config_dict()
    cfg[key] = value
    d = small_hf_dir(tmp_path / "m", config=cfg)
    with pytest.raises(ConversionError, match=match):
        minibert.convert(d, tmp_path / "out.h5")
    assert "must be" in cli_error(capsys, "convert", d, tmp_path / "out.h5")


@pytest.mark.parametrize(
    "change,match",
    [
        (
            lambda f: f.attrs.__setitem__("format_version", "one"),
            "attribute 'format_version' of / is 'one', expected a int",
        ),
        (lambda f: f.attrs.__setitem__("heads", "[not json"), "attribute 'heads' of / is not valid JSON"),
        (
            lambda f: f["config"].attrs.__setitem__("id2label", "{bad"),
            "attribute 'id2label' of /config is not valid JSON",
        ),
        (lambda f: f["vocab"].attrs.__delitem__("do_lower_case"), "attribute 'do_lower_case' of /vocab is missing"),
        (lambda f: f["weights"].create_group("sub"), "/weights/sub is a group"),
        (
            lambda f: (
                f["weights"].__delitem__("pooler.dense.bias"),
                f["weights"].create_dataset("pooler.dense.bias", data=np.array(["x"] * 32, dtype="S4")),
            ),
            "tensor pooler.dense.bias has dtype |S4, expected float32 or float64",
        ),
        (
            lambda f: (
                f["weights"].__delitem__("pooler.dense.bias"),
                f["weights"].create_dataset("pooler.dense.bias", data=np.zeros(32, np.complex64)),
            ),
            "tensor pooler.dense.bias has dtype complex64, expected float32 or float64",
        ),
    ],
    ids=[
        "format-version-one",
        "heads-bad-json",
        "id2label-bad-json",
        "missing-do-lower-case",
        "subgroup",
        "string-dtype",
        "complex-dtype",
    ],
)
def test_item11_h5_errors_are_weights_errors(with_vocab, capsys, change, match):
    edit(with_vocab, change)
    with pytest.raises(WeightsError, match=match):
        weights.load(with_vocab)
    assert "error: " in cli_error(capsys, "inspect", with_vocab, "--verify")


def test_item11_corrupted_metadata_that_makes_hdf5_loop_is_bounded(tiny, tmp_path, monkeypatch):
    """16 zero bytes at offset 2089 of a bert-tiny-shaped file made HDF5 loop for minutes."""
    path = tmp_path / "damaged.h5"
    shutil.copy(tiny, path)
    with open(path, "r+b") as f:
        f.seek(2089)
        f.write(bytes(16))
    monkeypatch.setattr(hdf5, "METADATA_TIMEOUT", 3.0)
    start = time.perf_counter()
    with pytest.raises(WeightsError, match="the file is damaged"):
        weights.load(path)
    assert time.perf_counter() - start < 60


def test_item11_meanwhile_runs_in_this_process_while_the_child_checks(tmp_path):
    """hdf5.bounded overlaps the two (minibert.load imports Numba meanwhile): this check passes
    only if ``meanwhile`` runs, in the parent, while the child is still checking."""
    ran = tmp_path / "meanwhile-ran"

    def check():  # in the child
        deadline = time.monotonic() + 30
        while not ran.exists():
            if time.monotonic() > deadline:
                raise WeightsError("meanwhile did not run while the child checked", "")
            time.sleep(0.01)

    hdf5.bounded(check, tmp_path / "x.h5", WeightsError, "", meanwhile=lambda: ran.write_text(str(os.getpid())))
    assert ran.read_text() == str(os.getpid())


def test_item11_the_child_verdict_still_counts_when_meanwhile_runs(tmp_path):
    def check():
        raise WeightsError(f"{tmp_path / 'x.h5'}: refused by the check", "convert again")

    with pytest.raises(WeightsError, match="refused by the check"):
        hdf5.bounded(check, tmp_path / "x.h5", WeightsError, "", meanwhile=lambda: None)


def test_item11_a_failing_meanwhile_kills_the_child(tmp_path):
    """An error (or Ctrl-C) in ``meanwhile`` propagates at once; the checking child is killed and reaped."""
    child_pid = tmp_path / "child-pid"

    def check():  # a check that would run for a minute
        child_pid.write_text(str(os.getpid()))
        time.sleep(60)

    def meanwhile():
        while not child_pid.exists():
            time.sleep(0.01)
        raise RuntimeError("the import failed")

    start = time.monotonic()
    with pytest.raises(RuntimeError, match="the import failed"):
        hdf5.bounded(check, tmp_path / "x.h5", WeightsError, "", meanwhile=meanwhile)
    assert time.monotonic() - start < 30  # not the child's minute
    with pytest.raises(ProcessLookupError):  # killed and reaped: no such process any more
        os.kill(int(child_pid.read_text()), 0)


@pytest.mark.parametrize("offset", [1100, 2089])
def test_item11_flipped_metadata_bytes_of_minilm_are_a_weights_error(minilm_h5, tmp_path, capsys, offset):
    """16 bytes flipped at offset ~1100 or ~2089 of the MiniLM .h5 gave OSError from h5py (or ran for 25 s)."""
    path = tmp_path / "damaged.h5"
    shutil.copy(minilm_h5, path)
    with open(path, "r+b") as f:
        f.seek(offset)
        flipped = bytes(b ^ 0xFF for b in f.read(16))
        f.seek(offset)
        f.write(flipped)
    with pytest.raises(WeightsError, match="the file is damaged"):
        weights.load(path)
    for args in (("encode", path, "hello"), ("inspect", path, "--verify")):
        assert "the file is damaged" in cli_error(capsys, *args)
