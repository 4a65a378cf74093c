"""`minibert encode --input` and `minibert search`: a 100k-line corpus, resume after a kill,
bad input, vectors equal to sentence-transformers' and to `minibert similarity`'s."""

import importlib.util
import json
import os
import pty
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

import minibert
from minibert.cli import main
from minibert.corpus import encode_corpus, scan_input
from minibert.errors import InputError
from minibert.heads import l2_normalize, sentence_embeddings
from minibert.search import search, top_k_scores

from corpus_helpers import (
    assert_same_file,
    contents,
    corpus_lines,
    seeded_model,
    write_corpus,
)
from helpers import REPO, run_cli

ENV = dict(os.environ, PYTHONPATH=str(REPO))


@pytest.fixture
def run(capsys):
    """Run the CLI in this process (fast, for the many short calls): (status, stdout, stderr)."""

    def call(*args):
        status = main(list(map(str, args)))
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(args, status, captured.out, captured.err)

    return call


@pytest.fixture(scope="module")
def tiny_vocab_model(tmp_path_factory):
    """A seeded random encoder (H=32, L=2, 128 positions) with the real 30522-token vocabulary."""
    return seeded_model(tmp_path_factory.mktemp("tiny") / "tiny.h5")


@pytest.fixture(scope="module")
def corpus_100k(tmp_path_factory, tiny_vocab_model):
    """100,000 lines of the standard library's files, and their uninterrupted encoding."""
    root = tmp_path_factory.mktemp("corpus")
    corpus = write_corpus(root / "corpus.txt", 100_000)
    report = encode_corpus(tiny_vocab_model, corpus, root / "reference.h5", progress=False)
    return corpus, root / "reference.h5", report


def default_ctrl_c():  # preexec_fn of the CLI run the test interrupts with SIGINT
    """Give the child the default SIGINT disposition, as a terminal gives a command.

    A shell without job control starts background commands with SIGINT ignored, and children
    inherit that: run under ``bash .ci/run &`` the CLI would never see the test's Ctrl-C (Python
    installs its KeyboardInterrupt handler only where SIGINT is not ignored) and would finish
    with exit 0."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_with_terminal(*args):
    """Start the CLI with stderr on a pseudo-terminal (so it draws its progress bar); collect it."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "minibert", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=slave,
        env=ENV,
        cwd=REPO,
        text=True,
        preexec_fn=default_ctrl_c,
    )
    os.close(slave)
    chunks = []

    def drain():
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    proc.terminal_output = lambda: (reader.join(10), b"".join(chunks).decode("utf-8", "replace"))[1]
    return proc


def wait_for_parts(parts, at_least, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(list(Path(parts).glob("window-*.h5"))) >= at_least:
            return
        assert proc.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.05)
    raise AssertionError(f"no {at_least} parts in {parts} after {timeout} s")


@pytest.mark.slow
def test_100k_lines_encode_with_progress_survive_ctrl_c_and_kill_and_resume_bit_for_bit(
    corpus_100k, tiny_vocab_model, tmp_path, run
):
    corpus, reference, report = corpus_100k
    assert report.rows == report.line_count == 100_000 and report.tokens > 100_000
    out, parts = tmp_path / "e.h5", tmp_path / "e.h5.parts"

    # Ctrl-C (SIGINT) after two windows: exit 130, the finished windows kept, the fix printed.
    proc = start_with_terminal("encode", tiny_vocab_model, "--input", corpus, "--out", out)
    wait_for_parts(parts, 2, proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 130
    shown = proc.terminal_output()
    if importlib.util.find_spec("tqdm") is not None:  # the corpus extra (CI installs it)
        assert "lines/s" in shown and "tokens/s" in shown and "<" in shown  # tqdm: rate, tokens/s, ETA
    else:  # a core-only install: no bar, and a line that says how to get one
        assert "no progress bar: pip install tqdm" in shown
    assert "--resume" in shown and not out.exists()
    kept = len(list(parts.glob("window-*.h5")))
    assert kept >= 2

    # Resume, then SIGKILL mid-run: nothing can be cleaned up, the parts survive.
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "minibert",
            "encode",
            str(tiny_vocab_model),
            "--input",
            str(corpus),
            "--out",
            str(out),
            "--resume",
        ],
        env=ENV,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    wait_for_parts(parts, kept + 2, proc)
    proc.kill()
    proc.wait(60)
    assert not out.exists() and len(list(parts.glob("window-*.h5"))) >= kept + 2

    r = run_cli("encode", tiny_vocab_model, "--input", corpus, "--out", out, "--resume")
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout and "100000 rows" in r.stdout and r.stderr == ""  # no terminal: no bar
    assert not parts.exists()
    assert_same_file(out, reference)

    r = run("encode", tiny_vocab_model, "--input", corpus, "--out", out, "--resume")
    assert r.returncode == 0 and "already complete" in r.stdout


def test_output_records_input_model_settings_and_byte_offsets(corpus_100k, tiny_vocab_model):
    corpus, reference, _ = corpus_100k
    data, attrs = contents(reference)
    raw = Path(corpus).read_bytes()
    import hashlib

    assert attrs["format"] == "minibert-embeddings" and attrs["rows"] == 100_000 and attrs["line_count"] == 100_000
    assert attrs["input_sha256"] == hashlib.sha256(raw).hexdigest() and attrs["input_size"] == len(raw)
    assert attrs["model_sha256"] == hashlib.sha256(Path(tiny_vocab_model).read_bytes()).hexdigest()
    assert json.loads(attrs["model_config"])["hidden_size"] == 32
    assert attrs["pooling"] == "mean" and attrs["max_length"] == 128 and bool(attrs["normalized"])
    with h5py.File(reference) as f:
        assert f["embeddings"].dtype == np.float32 and f["embeddings"].chunks is not None
    lines = raw.decode("utf-8").split("\n")[:-1]
    starts = np.cumsum([0] + [len(line.encode("utf-8")) + 1 for line in lines[:-1]])
    assert np.array_equal(data["line_numbers"], np.arange(1, 100_001))
    assert np.array_equal(data["byte_offsets"], starts)
    norms = np.linalg.norm(data["embeddings"].astype(np.float64), axis=1)
    assert np.abs(norms - 1).max() < 1e-5


def test_search_equals_brute_force_and_prints_the_lines(corpus_100k, tiny_vocab_model, run):
    corpus, reference, _ = corpus_100k
    lines = Path(corpus).read_text(encoding="utf-8").split("\n")
    query = "open the file and read every line"
    hits = search(reference, query, top_k=7, block_rows=9_999)  # blocks that do not divide N
    model, tok = minibert.load(tiny_vocab_model), minibert.Tokenizer.from_file(tiny_vocab_model)
    q = sentence_embeddings(model, tok.encode_batch([query]))[0].astype(np.float64)  # [H]
    with h5py.File(reference) as f:
        scores = f["embeddings"][()].astype(np.float64) @ q  # [N], brute force
    order = np.lexsort((np.arange(len(scores)), -scores))[:7]
    assert [h.row for h in hits] == order.tolist()
    assert np.allclose([h.score for h in hits], scores[order], rtol=0, atol=1e-6)
    assert [h.text for h in hits] == [lines[h.line_number - 1] for h in hits]

    r = run("search", reference, query, "--top-k", "3")
    assert r.returncode == 0, r.stderr
    printed = r.stdout.strip().splitlines()
    assert len(printed) == 3
    for hit, line in zip(hits, printed):
        assert line.startswith(f"{hit.score:.4f}  line {hit.line_number}: {hit.text[:40]}")


def test_blocked_top_k_equals_brute_force_on_random_vectors_with_ties():
    rng = np.random.default_rng(1)
    E = l2_normalize(rng.standard_normal((5003, 24))).astype(np.float32)  # [N, H]
    E[4000] = E[17]  # exact ties, across blocks
    E[2500] = E[17]
    q = E[17].astype(np.float64)
    for top_k, block in [(1, 100), (10, 64), (50, 5003), (6000, 777)]:
        rows, scores = top_k_scores(E, q, top_k, block_rows=block)
        full = E.astype(np.float64) @ q
        expected = np.lexsort((np.arange(len(full)), -full))[:top_k]
        assert rows.tolist() == expected.tolist()
        assert np.array_equal(scores, full[expected])
    assert top_k_scores(E, q, 3, 100)[0].tolist() == [17, 2500, 4000]


def test_minilm_mean_vectors_equal_sentence_transformers_pooling_and_similarity(
    minilm_h5, minilm_dir, minilm_torch, tmp_path, run
):
    import torch
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    texts = corpus_lines(60)[::3] + ["The cat sat on the mat.", "A dog barked.", "word " * 150]
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")
    report = encode_corpus(
        minilm_h5, corpus, tmp_path / "e.h5", max_length=128, truncate=True, batch_size=16, progress=False
    )
    assert report.rows == len(texts) and report.truncated == 1
    E = contents(tmp_path / "e.h5")[0]["embeddings"]

    # sentence-transformers' modules for all-MiniLM-L6-v2 (1_Pooling: mean; 2_Normalize), in PyTorch.
    assert json.loads((minilm_dir / "1_Pooling" / "config.json").read_text())["pooling_mode_mean_tokens"]
    enc = BertTokenizerLegacy(vocab_file=str(minilm_dir / "vocab.txt"))(
        texts, padding=True, truncation=True, max_length=128, return_tensors="pt"
    )
    with torch.inference_mode():
        tokens = minilm_torch.float()(**enc).last_hidden_state  # [B, T, H]
        mask = enc["attention_mask"][:, :, None].float()  # [B, T, 1]
        expected = torch.nn.functional.normalize(
            (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9), p=2, dim=1
        ).numpy()
    assert np.abs(E - expected).max() <= 1e-5, np.abs(E - expected).max()

    # `minibert similarity` embeds with heads.sentence_embeddings: the same vectors.
    model, tok = minibert.load(minilm_h5), minibert.Tokenizer.from_file(minilm_h5)
    one_by_one = np.concatenate(
        [sentence_embeddings(model, tok.encode_batch([t], max_length=128, truncation=True)) for t in texts]
    )
    assert np.abs(E - one_by_one).max() <= 1e-6
    r = run("similarity", minilm_h5, texts[-3], texts[-2])
    assert r.stdout.strip() == f"cosine similarity: {float(E[-3] @ E[-2]):.4f}"


def test_cls_pooling_and_unsorted_batches_keep_input_order(tiny_vocab_model, tmp_path):
    texts = corpus_lines(700)[::7]
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")
    model, tok = minibert.load(tiny_vocab_model), minibert.Tokenizer.from_file(tiny_vocab_model)
    for pooling in ("mean", "cls"):
        expected = np.concatenate([sentence_embeddings(model, tok.encode_batch([t]), pooling=pooling) for t in texts])
        for sort in (True, False):
            out = tmp_path / f"{pooling}-{sort}.h5"
            encode_corpus(
                tiny_vocab_model,
                corpus,
                out,
                pooling=pooling,
                sort_by_length=sort,
                batch_size=8,
                window=32,
                progress=False,
            )
            assert np.abs(contents(out)[0]["embeddings"] - expected).max() <= 1e-6
    out = model(*[tok.encode_batch(texts[:1])[k] for k in ("input_ids", "attention_mask")]).last_hidden_state
    assert np.allclose(l2_normalize(out[:, 0])[0], contents(tmp_path / "cls-True.h5")[0]["embeddings"][0], atol=1e-6)


def test_window_boundaries_are_line_starts(tmp_path):
    f = tmp_path / "c.txt"
    f.write_bytes(b"a\nbb\n\nccc\r\ndddd\ne")  # no final newline
    plan = scan_input(f, window=2)
    assert plan.line_count == 6 and plan.starts == [0, 5, 11]
    f.write_bytes(b"a\nbb\n\nccc\n")
    plan = scan_input(f, window=2)
    assert plan.line_count == 4 and plan.starts == [0, 5]


def test_bad_lines_empty_lines_bom_crlf_and_jsonl(tiny_vocab_model, tmp_path, run):
    text = tmp_path / "mixed.txt"
    text.write_bytes("\ufeffhello world\r\n\n   \ncaf\xe9 ok\n".encode("utf-8") + b"caf\xe9 latin-1\n" + b"last line")
    r = run("encode", tiny_vocab_model, "--input", text, "--out", tmp_path / "a.h5")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "line 5 is not valid UTF-8 (byte 0xe9 at column 4)" in r.stderr and "--errors skip" in r.stderr
    assert not (tmp_path / "a.h5").exists()

    r = run("encode", tiny_vocab_model, "--input", text, "--out", tmp_path / "a.h5", "--errors", "skip", "--overwrite")
    assert r.returncode == 0, r.stderr
    assert "3 rows from 6 lines (2 empty, 1 skipped" in r.stdout
    data, attrs = contents(tmp_path / "a.h5")
    assert data["line_numbers"].tolist() == [1, 4, 6]
    assert data["skipped_line_numbers"].tolist() == [5] and attrs["empty_lines"] == 2
    model, tok = minibert.load(tiny_vocab_model), minibert.Tokenizer.from_file(tiny_vocab_model)
    expected = sentence_embeddings(
        model, tok.encode_batch(["hello world", "café ok", "last line"])
    )  # BOM and \r dropped
    assert np.abs(data["embeddings"] - expected).max() <= 1e-6
    hits = search(tmp_path / "a.h5", "café ok", top_k=1)
    assert hits[0].line_number == 4 and hits[0].text == "café ok"

    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        '{"body": "first text", "id": 1}\n{"id": 2}\n{"body": 3}\nnot json\n\n{"body": "fifth"}\n', encoding="utf-8"
    )
    r = run("encode", tiny_vocab_model, "--input", rows, "--out", tmp_path / "j.h5", "--field", "body")
    assert r.returncode == 1 and "line 2 has no field 'body'" in r.stderr
    r = run(
        "encode", tiny_vocab_model, "--input", rows, "--out", tmp_path / "j.h5", "--field", "body", "--errors", "skip"
    )
    assert r.returncode == 0, r.stderr
    data, attrs = contents(tmp_path / "j.h5")
    assert data["line_numbers"].tolist() == [1, 6] and data["skipped_line_numbers"].tolist() == [2, 3, 4]
    assert search(tmp_path / "j.h5", "fifth", top_k=1)[0].text == "fifth"


def test_refusals_name_the_fix(tiny_vocab_model, tmp_path, run):
    corpus = tmp_path / "c.txt"
    corpus.write_text("short line\n" + "word " * 200 + "\nanother\n", encoding="utf-8")
    out = tmp_path / "e.h5"

    r = run("encode", tiny_vocab_model, "--input", corpus, "--out", out)
    assert (
        r.returncode == 1
        and "line 2 has 202 tokens, more than the max length 128" in r.stderr
        and "--truncate" in r.stderr
    )
    r = run("encode", tiny_vocab_model, "--input", corpus, "--out", out, "--max-length", "16")
    assert r.returncode == 1 and "more than the max length 16" in r.stderr and "raise --max-length" in r.stderr
    # The fix given, after a refusal: --resume --truncate finishes the run (the parts so far kept).
    r = run("encode", tiny_vocab_model, "--input", corpus, "--out", out, "--truncate", "--resume")
    assert r.returncode == 0 and "1 truncated" in r.stdout, r.stderr

    for args, message in [
        ((), "exists"),
        (("--resume", "--max-length", "64"), "exists"),
        (("--overwrite", "--max-length", "999"), "outside 2..128"),
        (("--overwrite", "--batch-size", "0"), "batch size 0"),
        (("--overwrite", "--field", "text"), "not a .jsonl file"),
        (("--overwrite", "--dask", "local:zero"), "expected local:N"),
        (("--overwrite", "--dask", "nonsense"), "not local:N nor a scheduler address"),
        (("--resume", "--overwrite"), "contradict"),
    ]:
        r = run("encode", tiny_vocab_model, "--input", corpus, "--out", out, *args)
        assert r.returncode == 1 and message in r.stderr and "fix: " in r.stderr and "Traceback" not in r.stderr, (
            args,
            r.stderr,
        )

    # An interrupted run's parts with other settings: --resume refuses and says what differs.
    (tmp_path / "e2.h5.parts").mkdir()
    e2 = ("encode", tiny_vocab_model, "--input", corpus, "--out", tmp_path / "e2.h5",
          "--max-length", "64", "--truncate")
    r = run(*e2, "--errors", "skip")
    assert r.returncode == 1 and "interrupted run" in r.stderr
    from minibert import corpus as corpus_module

    plan = scan_input(corpus)
    settings = corpus_module.make_settings(tiny_vocab_model, corpus, plan, max_length=32, truncate=True)
    corpus_module.write_manifest(tmp_path / "e2.h5.parts", settings, plan)
    r = run(*e2, "--resume")
    assert r.returncode == 1 and "max_length: 32 then, 64 now" in r.stderr

    empty = tmp_path / "empty.txt"
    empty.write_text("")
    for path, message in [(empty, "is empty"), (tmp_path / "missing.txt", "does not exist")]:
        r = run("encode", tiny_vocab_model, "--input", path, "--out", tmp_path / "x.h5")
        assert r.returncode == 1 and message in r.stderr
    r = run("encode", tiny_vocab_model, "some text", "--input", corpus, "--out", tmp_path / "x.h5")
    assert r.returncode == 1 and "cannot go with it" in r.stderr
    r = run("search", out, "   ")
    assert r.returncode == 1 and "query is empty" in r.stderr
    r = run("search", tiny_vocab_model, "hello")
    assert r.returncode == 1 and "not a minibert embeddings file" in r.stderr
    other = seeded_model(tmp_path / "other.h5", seed=1)
    r = run("search", out, "hello", "--model", other)
    assert r.returncode == 1 and "not the model the embeddings were made with" in r.stderr
    with pytest.raises(InputError, match="the query has 202 tokens, more than the max length 128"):
        search(out, "word " * 200)


def test_dask_missing_says_how_to_install(tiny_vocab_model, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("hello\n", encoding="utf-8")
    code = (
        "import sys; sys.modules['distributed'] = None; from minibert.cli import main; "
        f"sys.exit(main(['encode', {str(tiny_vocab_model)!r}, '--input', {str(corpus)!r}, "
        f"'--out', {str(tmp_path / 'e.h5')!r}, '--dask', 'local:2']))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, cwd=REPO)
    assert r.returncode == 1 and "pip install 'minibert[dask]'" in r.stderr and "Traceback" not in r.stderr
