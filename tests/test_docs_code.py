"""Every ```python block of README.md and docs/*.md runs as written (issue 10, item 17).

The rules, for whoever writes docs:

* a block fenced as ```python runs; any other language (```text, ```bash, ```pycon, ...) does not;
* the blocks of one file run in order, in one namespace (a later block may use an earlier
  block's names), in a scratch directory that holds the files the docs name:
  ``weights/all-MiniLM-L6-v2.h5`` and ``minilm.h5`` (the default model, converted),
  ``vocab.txt`` (its vocabulary), ``bert-pretraining.h5`` and ``mnli.h5`` (seeded random
  bert-tiny models with masked-LM + next-sentence heads and a 3-label classification head,
  with the MiniLM vocabulary) and ``path/to/hf-model-dir`` (the Hugging Face directory of the
  first: a bert-tiny converts in a second where MiniLM takes ten);
* a python block that must not run (a long benchmark, a placeholder) is preceded by the line
  ``<!-- not run: REASON -->``; the reason is required.
"""

import os
import re
import shutil
from pathlib import Path

import pytest

import minibert

from helpers import MNLI

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\S*)[^\n]*\n(.*?)^```", re.S | re.M)
NOT_RUN = re.compile(r"<!-- not run: (\S.*?) -->\s*$")


def python_blocks(path):
    """[(line number, code)] of the blocks of ``path`` that run."""
    text = path.read_text(encoding="utf-8")
    blocks = []
    for m in FENCE.finditer(text):
        if m.group(1) != "python":
            continue
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        if NOT_RUN.search(before):
            continue
        blocks.append((text[: m.start()].count("\n") + 1, m.group(2)))
    return blocks


def test_the_not_run_marker_needs_a_reason():
    for path in DOCS:
        for line in path.read_text(encoding="utf-8").splitlines():
            if "<!-- not run" in line:
                assert NOT_RUN.search(line), f"{path.name}: {line!r}: write <!-- not run: REASON -->"


@pytest.fixture(scope="module")
def scratch(minilm_dir, minilm_h5, preset_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("docs")
    (root / "weights").mkdir()
    for name in ("weights/all-MiniLM-L6-v2.h5", "minilm.h5"):
        os.symlink(minilm_h5, root / name)
    shutil.copy(minilm_dir / "vocab.txt", root / "vocab.txt")
    (root / "path" / "to").mkdir(parents=True)
    for name, model_class, overrides in (
        ("bert-pretraining", "BertForPreTraining", {}),
        ("mnli", "BertForSequenceClassification", MNLI),
    ):
        _, hf_dir, _ = preset_model("bert-tiny", model_class, **overrides)
        d = root / f"{name}-src"
        shutil.copytree(hf_dir, d, ignore=shutil.ignore_patterns("*.h5"))
        shutil.copy(minilm_dir / "vocab.txt", d / "vocab.txt")
        minibert.convert(d, root / f"{name}.h5")
    os.symlink(root / "bert-pretraining-src", root / "path" / "to" / "hf-model-dir")
    return root


@pytest.mark.parametrize("doc", DOCS, ids=[p.name for p in DOCS])
def test_python_blocks_run_as_written(doc, scratch, monkeypatch):
    blocks = python_blocks(doc)
    if not blocks:
        return  # nothing to run in this file
    monkeypatch.chdir(scratch)
    namespace = {"__name__": f"docs:{doc.name}"}
    for line, code in blocks:
        try:
            exec(compile(code, f"{doc.name}:{line}", "exec"), namespace)
        except Exception as e:  # report which block, then the error
            raise AssertionError(
                f"{doc.relative_to(ROOT)}, the python block at line {line}: {type(e).__name__}: {e}"
            ) from e


def test_readme_inline_compare_line_needs_only_import_minibert(tmp_path):
    """README: `minibert.compare(trace, minibert.reference.trace(path, ids))` after `import minibert`."""
    import subprocess
    import sys

    code = "import minibert; print(minibert.compare.__name__, minibert.reference.trace.__name__)"
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert r.returncode == 0 and r.stdout.split() == ["compare", "trace"], r.stderr
