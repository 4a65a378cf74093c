"""Issue 10: traces, the command line and messages (items 9-16, 18, 20 and the CLI parts of 11).

Each test names the item it covers. Most run the CLI in-process (``minibert.cli.main``); the
ones about tracebacks, pdb and Numba's cache run a real ``python -m minibert`` subprocess.
"""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

import minibert
from minibert import InputError, compare
from minibert.cli import main
from minibert.trace import Trace

from hardening_files import TINY, small_hf_dir, vocab_lines

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def small_h5(tmp_path_factory):
    """The tiny fixture model with a 1000-token vocabulary ("tok5 tok6 ..."), max 64 positions."""
    root = tmp_path_factory.mktemp("cli")
    return minibert.convert(small_hf_dir(root / "model"), root / "small.h5")


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def cli_error(capsys, *args):
    code, out, err = run(capsys, *args)
    assert code == 1, (out, err)
    assert err.startswith("error: ") and "\nfix: " in err and "Traceback" not in err, err
    return err


def subprocess_cli(*args, env=None, stdin=None):
    full_env = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "minibert", *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        input=stdin,
        timeout=300,
    )


LONG = " ".join(["tok7"] * 80)  # 82 tokens with [CLS] and [SEP], the model reads 64


# --- 9, 10, 11: trace files are untrusted input ------------------------------------------


@pytest.fixture
def trace_file(small_h5, tmp_path):
    t = minibert.load(small_h5).trace(np.array([[2, 10, 11, 3]]), only=["encoder.layer.0.*"])
    return t.save(tmp_path / "t.h5")


def test_item11_trace_round_trip_still_works(trace_file):
    t = Trace.load(trace_file)
    assert list(t)[0] == "encoder.layer.0.attention.self.query" and t.meta["only"] == ["encoder.layer.0.*"]


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda f: f.attrs.__delitem__("order"), "the trace attribute 'order' is missing"),
        (lambda f: f.attrs.__setitem__("meta", "{not json"), "the trace attribute 'meta' is missing or not a dict"),
        (lambda f: f.attrs.__setitem__("format_version", "x"), "trace format version 'x'"),
        (
            lambda f: f["inputs"].__delitem__("attention_mask"),
            "/inputs must hold input_ids, attention_mask, token_type_ids",
        ),
        (
            lambda f: (
                f["values"].__delitem__("encoder.layer.0.attention.self.key"),
                f["values"].create_dataset("encoder.layer.0.attention.self.key", data=np.array([b"ab"] * 3)),
            ),
            "has dtype |S2, expected floating point",
        ),
        (
            lambda f: (
                f["inputs"].__delitem__("input_ids"),
                f["inputs"].create_dataset("input_ids", data=np.zeros((1, 4))),
            ),
            "/inputs/input_ids has dtype float64, expected integers",
        ),
    ],
    ids=["missing-order", "bad-json", "format-version", "missing-input", "string-values", "float-ids"],
)
def test_item11_damaged_trace_files_are_clear_errors(trace_file, change, match):
    with h5py.File(trace_file, "a") as f:
        change(f)
    with pytest.raises(InputError, match=match):
        Trace.load(trace_file)


def test_item9_a_trace_declaring_a_huge_step_is_refused_before_reading(trace_file):
    with h5py.File(trace_file, "a") as f:
        del f["values"]["encoder.layer.0.attention.self.key"]
        f["values"].create_dataset("encoder.layer.0.attention.self.key", shape=(200_000, 100_000), dtype=np.float32)
    assert trace_file.stat().st_size < 1 << 20
    with pytest.raises(
        InputError, match=r"declares shape \(200000, 100000\) \(80,000,000,000 bytes\) but the file stores 0"
    ):
        Trace.load(trace_file)


def test_item10_trace_backed_by_an_outside_file_or_linked_elsewhere_is_refused(trace_file, tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n" * 4)
    name = "encoder.layer.0.attention.self.key"
    with h5py.File(trace_file, "a") as f:
        del f["values"][name]
        f["values"].create_dataset(name, shape=(32,), dtype=np.float32, external=[(str(secret), 0, 128)])
    with pytest.raises(InputError, match="keeps its bytes in external files"):
        Trace.load(trace_file)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as g:
        g["x"] = np.zeros(3, np.float32)
    with h5py.File(trace_file, "a") as f:
        del f["values"][name]
        f["values"][name] = h5py.ExternalLink(str(other), "x")
    with pytest.raises(InputError, match="is an external link to another file"):
        Trace.load(trace_file)


# --- 11: CLI paths checked before the model runs; parity without pooler; Numba cache; pdb


def test_item11_output_paths_are_checked_before_the_model_runs(small_h5, tmp_path, capsys, monkeypatch):
    import minibert.cli as cli

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the output path was checked")

    monkeypatch.setattr(cli, "load", no_model)
    assert "the directory" in cli_error(capsys, "encode", small_h5, "tok1", "--json", tmp_path / "missing" / "x.json")
    assert "is a directory" in cli_error(capsys, "encode", small_h5, "tok1", "--json", tmp_path)
    assert "is a directory" in cli_error(capsys, "trace", small_h5, "tok1", "--out", tmp_path)
    (tmp_path / "plot.png").write_text("x")
    assert "--plot takes a directory" in cli_error(capsys, "trace", small_h5, "tok1", "--plot", tmp_path / "plot.png")


def test_item11_hooks_write_doc_on_missing_or_non_utf8_file(tmp_path, capsys):
    assert "no such file" in cli_error(capsys, "hooks", "--write-doc", tmp_path / "none.md")
    (tmp_path / "latin1.md").write_bytes("caf\xe9".encode("latin-1"))
    assert "not UTF-8 text" in cli_error(capsys, "hooks", "--write-doc", tmp_path / "latin1.md")


def test_item11_parity_on_a_file_without_pooler(preset_model, capsys):
    _, _, h5 = preset_model("bert-tiny", "BertForMaskedLM")
    code, out, err = run(capsys, "parity", h5, "--ids", "101,2054,2003,102")
    assert code == 0, err
    assert "29/29 hook points within tolerance (float32)" in out and "pooler" not in out


def test_item11_a_damaged_numba_cache_names_the_directory(small_h5, tmp_path):
    cache = tmp_path / "numba-cache"
    env = {"NUMBA_CACHE_DIR": str(cache)}
    assert subprocess_cli("encode", small_h5, "tok1 tok2", env=env).returncode == 0
    damaged = [p for p in cache.rglob("*") if p.suffix in (".nbi", ".nbc")]
    assert damaged
    for p in damaged:
        p.write_bytes(p.read_bytes()[:10])
    r = subprocess_cli("encode", small_h5, "tok1 tok2", env=env)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "error: Numba's on-disk cache of minibert's kernels is damaged" in r.stderr
    assert f"fix: delete the cache files in {cache}" in r.stderr


def test_item11_quitting_pdb_at_a_break_is_quiet(small_h5):
    r = subprocess_cli(
        "trace",
        small_h5,
        "--ids",
        "2,10,3",
        "--backend",
        "numpy",
        env={"MINIBERT_BREAK": "encoder.layer.0.attention.self.probs"},
        stdin="q\n",
    )
    assert r.returncode == 1
    assert "BdbQuit" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert "stopped: quit from the debugger" in r.stderr


# --- 12, 13: messages that name the right thing ----------------------------------------


def test_item12_a_missing_or_directory_model_file_is_named_as_such(tmp_path, capsys):
    err = cli_error(capsys, "encode", tmp_path / "nope.h5", "hi")
    assert "nope.h5: file not found" in err and "vocabulary" not in err and "minibert convert" in err
    err = cli_error(capsys, "encode", tmp_path, "hi")
    assert "is a directory, not an HDF5 file" in err and "vocabulary" not in err


@pytest.mark.torch  # a .bin is read by torch.load
def test_item12_a_random_bytes_bin_is_not_a_valid_checkpoint(tmp_path, capsys):
    pytest.importorskip("torch")
    d = small_hf_dir(tmp_path / "m")
    (d / "model.safetensors").unlink()
    (d / "pytorch_model.bin").write_bytes(np.random.default_rng(0).bytes(5000))
    r = subprocess_cli("convert", d, tmp_path / "out.h5")
    assert r.returncode == 1
    assert "not a valid PyTorch checkpoint" in r.stderr and "run code" not in r.stderr
    assert "weights_only" not in r.stderr and "Warning" not in r.stderr and "\x1b[" not in r.stderr, r.stderr


def test_item12_a_uint64_id_is_reported_as_itself():
    model = minibert.load(TINY, backend="numpy")
    with pytest.raises(InputError, match=r"input_ids\[0, 1\] = 18446744073709551615 is too large"):
        model(np.array([[1, 2**64 - 1]], dtype=np.uint64))


def test_item13_fill_mask_on_an_encoder_only_file_says_how_to_get_a_head(small_h5, capsys):
    err = cli_error(capsys, "fill-mask", small_h5, "tok1 [MASK]")
    assert "holds no masked-lm head" in err
    assert "fix: the file has no masked-lm head: convert a BertForMaskedLM or BertForPreTraining checkpoint" in err


def test_item13_only_with_no_match_points_to_minibert_hooks_file(small_h5, capsys):
    err = cli_error(capsys, "trace", small_h5, "tok1", "--only", "encoder.layer.0.attention.self.prob")
    assert "names no step of the forward pass; closest: encoder.layer.0.attention.self.probs" in err
    assert f"fix: list the steps with `minibert hooks {small_h5}`" in err


# --- 14: one truncation rule --------------------------------------------------------------


@pytest.mark.parametrize("verb", ["encode", "trace", "similarity"])
def test_item14_text_longer_than_the_positions_is_refused_with_the_truncate_fix(small_h5, capsys, verb):
    args = [LONG, "tok1"] if verb == "similarity" else [LONG]
    err = cli_error(capsys, verb, small_h5, *args)
    assert "the text is 82 tokens long, the model reads at most 64 (max_position_embeddings)" in err
    assert "fix: pass --truncate to keep the first 64 tokens" in err


def test_item14_parity_and_heads_follow_the_rule(preset_model, capsys):
    """parity, fill-mask and classify on bert-tiny-shaped files (512 positions) with a real vocabulary."""
    _, hf_dir, _ = preset_model("bert-tiny", "BertForMaskedLM")
    _, cls_dir, _ = preset_model(
        "bert-tiny",
        "BertForSequenceClassification",
        num_labels=3,
        id2label={0: "entailment", 1: "neutral", 2: "contradiction"},
        label2id={"entailment": 0, "neutral": 1, "contradiction": 2},
    )
    vocab = vocab_lines(30522)
    files = {}
    for name, d in (("mlm", hf_dir), ("cls", cls_dir)):
        (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
        files[name] = minibert.convert(d, d / "with-vocab.h5")
        (d / "vocab.txt").unlink()
    capsys.readouterr()  # drop what building the checkpoints printed
    long = "tok9 " * 600
    for args in (
        ["parity", files["mlm"], long],
        ["fill-mask", files["mlm"], long + "[MASK]"],
        ["classify", files["cls"], long],
    ):
        assert "fix: pass --truncate to keep the first 512 tokens" in cli_error(capsys, *args)
    code, out, err = run(capsys, "fill-mask", files["mlm"], "[MASK] " + long, "--truncate")
    assert code == 0 and "[MASK] 1:" in out, err
    code, out, err = run(capsys, "classify", files["cls"], long, "--truncate")
    assert code == 0 and "entailment" in out, err


def test_item14_truncate_cuts_and_encode_says_how_many_tokens_were_dropped(small_h5, capsys):
    code, out, err = run(capsys, "encode", small_h5, LONG, "--truncate")
    assert code == 0
    assert "tokens (64):" in out and "truncated to 64 tokens: 18 tokens dropped" in err
    for verb, args in (("trace", [LONG]), ("similarity", [LONG, "tok1"])):
        code, out, err = run(capsys, verb, small_h5, *args, "--truncate")
        assert code == 0, err


def test_item14_the_rule_lives_in_one_helper(small_h5):
    from minibert.cli import encode_texts

    tok = minibert.Tokenizer.from_file(small_h5)
    batch, dropped = encode_texts(tok, [LONG, "tok1"], None, 64, truncate=True)
    assert batch["input_ids"].shape == (2, 64) and dropped == 18
    with pytest.raises(InputError, match="pass --truncate"):
        encode_texts(tok, [LONG], None, 64, truncate=False)


# --- 15, 16: MINIBERT_BREAK typos, partial traces -------------------------------------------


def test_item15_a_mistyped_break_warns_once_with_the_closest_names(small_h5, monkeypatch):
    monkeypatch.setenv("MINIBERT_BREAK", "encoder.layer.0.attention.self.prob")
    model = minibert.load(small_h5, backend="numpy")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.trace(np.array([[2, 10, 3]]))
        model.trace(np.array([[2, 10, 3]]))
    messages = [str(w.message) for w in caught if "MINIBERT_BREAK" in str(w.message)]
    assert len(messages) == 1, messages
    assert (
        "matches no step of the forward pass, so it never stops; closest: encoder.layer.0.attention.self.probs"
        in messages[0]
    )


def test_item16_compare_a_partial_trace_with_a_full_one(small_h5):
    model = minibert.load(small_h5, backend="numpy")
    ids = np.array([[2, 10, 11, 3]])
    partial, full = model.trace(ids, only=["encoder.layer.1.*"]), model.trace(ids)
    result = compare(partial, full)
    assert result.passed and len(result.rows) == 12 and result.rows[0].name == "encoder.layer.1.attention.self.query"
    assert len(result.left_out) == len(full) - 12
    assert f"not compared: {len(full) - 12} steps held by one trace only" in result.table()
    with pytest.raises(InputError, match="the two traces share no step"):
        compare(model.trace(ids, only=["pooler"]), model.trace(ids, only=["embeddings.*"]))


# --- 18, 20: hooks with a file; convert's summary ----------------------------------------


def test_item18_hooks_on_a_masked_lm_file_has_no_pooler_and_concrete_sizes(preset_model, capsys):
    _, _, h5 = preset_model("bert-tiny", "BertForMaskedLM")
    code, out, _ = run(capsys, "hooks", h5)
    assert code == 0 and "pooler" not in out
    assert "encoder.layer.0.attention.self.probs" in out and "[B, 2, T, T]" in out and "[B, T, 512]" in out
    code, out, _ = run(capsys, "hooks")  # no file: the preset's letters
    assert "[B, A, T, T]" in out and "pooler" in out


def test_item20_convert_prints_one_summary_line(tmp_path, capsys):
    d = small_hf_dir(tmp_path / "m")
    code, out, _ = run(capsys, "convert", d, tmp_path / "out.h5")
    assert code == 0 and len(out.strip().splitlines()) == 1
    assert "39 tensors (52,320 values, verified), L=2 H=32 A=2 I=64, vocabulary 1000 tokens, heads: none" in out
    code, out, _ = run(capsys, "convert", d, tmp_path / "out2.h5", "--verbose")
    assert code == 0 and "encoder.layer.1.output.dense.weight" in out and len(out.splitlines()) > 39
