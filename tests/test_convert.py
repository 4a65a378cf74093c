"""The converter end to end: sources, names, buffers, metadata."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import minibert
from minibert import weights
from minibert.convert import read_safetensors

from helpers import run_cli

REPO = Path(__file__).resolve().parent.parent


def test_minilm_directory(minilm_dir, minilm_h5):
    w = weights.load(minilm_h5)
    assert "embeddings.position_ids" not in w.tensors  # the int64 buffer MiniLM carries is dropped
    assert "embeddings.position_ids" in read_safetensors(minilm_dir / "model.safetensors")
    assert len(w.tensors) == 5 + 16 * 6 + 2
    assert w.vocab[:1] == ["[PAD]"] and w.vocab[101] == "[CLS]" and len(w.vocab) == 30522
    assert w.do_lower_case is True  # from tokenizer_config.json
    assert w.heads == []
    assert set(w.source_sha256) == {"model.safetensors", "config.json", "vocab.txt"}
    src = read_safetensors(minilm_dir / "model.safetensors")
    np.testing.assert_array_equal(
        w.tensors["encoder.layer.3.intermediate.dense.weight"], src["encoder.layer.3.intermediate.dense.weight"]
    )


@pytest.mark.torch  # the safetensors package comes with the reference stack (the dev extra)
def test_safetensors_reader_matches_the_safetensors_package(minilm_dir):
    load_file = pytest.importorskip("safetensors.numpy").load_file

    ours, theirs = read_safetensors(minilm_dir / "model.safetensors"), load_file(minilm_dir / "model.safetensors")
    assert ours.keys() == theirs.keys()
    for k in ours:
        assert ours[k].dtype == theirs[k].dtype
        np.testing.assert_array_equal(ours[k], theirs[k])


def test_bin_and_safetensors_give_the_same_file(preset_model, tmp_path):
    torch_model, hf_dir, h5 = preset_model("bert-tiny")
    import torch

    bin_dir = tmp_path / "bin"  # a classic checkpoint directory: config.json + pytorch_model.bin
    bin_dir.mkdir()
    shutil.copy(hf_dir / "config.json", bin_dir)
    torch.save(torch_model.state_dict(), bin_dir / "pytorch_model.bin")
    out = minibert.convert(bin_dir, tmp_path / "from_bin.h5")
    a, b = weights.load(out), weights.load(h5)
    assert a.tensors.keys() == b.tensors.keys()
    for k in a.tensors:
        np.testing.assert_array_equal(a.tensors[k], b.tensors[k])


def test_single_file_with_config_and_bert_prefix(preset_model, tmp_path):
    """A BertFor* checkpoint (names prefixed `bert.`) given as a single file plus --config."""
    from safetensors.numpy import save_file

    _, hf_dir, h5 = preset_model("bert-tiny")
    tensors = read_safetensors(hf_dir / "model.safetensors")
    save_file({"bert." + k: v for k, v in tensors.items()}, tmp_path / "weights.safetensors")
    r = run_cli("convert", tmp_path / "weights.safetensors", tmp_path / "out.h5", "--config", hf_dir / "config.json")
    assert r.returncode == 0, r.stderr
    a, b = weights.load(tmp_path / "out.h5"), weights.load(h5)
    assert a.tensors.keys() == b.tensors.keys()
    assert a.vocab == []  # no vocab.txt beside the file


def test_old_gamma_beta_names(preset_model, tmp_path):
    from safetensors.numpy import save_file

    _, hf_dir, h5 = preset_model("bert-tiny")
    tensors = read_safetensors(hf_dir / "model.safetensors")
    renamed = {
        k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
        for k, v in tensors.items()
    }
    d = tmp_path / "old"
    d.mkdir()
    save_file(renamed, d / "model.safetensors")
    shutil.copy(hf_dir / "config.json", d / "config.json")
    a = weights.load(minibert.convert(d, tmp_path / "old.h5"))
    np.testing.assert_array_equal(a.tensors["embeddings.LayerNorm.weight"], tensors["embeddings.LayerNorm.weight"])


@pytest.mark.parametrize(
    "name,expected", [("prajjwal1/bert-tiny", True), ("bert-base-cased", False), ("bert-base-uncased", True)]
)
def test_do_lower_case_from_the_name_when_no_tokenizer_config(name, expected, preset_model, minilm_dir, tmp_path):
    _, hf_dir, _ = preset_model("bert-tiny")
    cfg = json.loads((hf_dir / "config.json").read_text())
    cfg["_name_or_path"] = name
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(cfg))
    shutil.copy(hf_dir / "model.safetensors", d)
    shutil.copy(minilm_dir / "vocab.txt", d)  # do_lower_case is stored with the vocabulary
    assert weights.load(minibert.convert(d, tmp_path / "m.h5")).do_lower_case is expected


def test_hub_id_from_the_local_cache_when_offline(preset_model, minilm_dir, tmp_path):
    """A hub id resolves from huggingface_hub's cache layout with HF_HUB_OFFLINE=1."""
    _, hf_dir, h5 = preset_model("bert-tiny")
    repo = tmp_path / "hub" / "models--prajjwal1--bert-tiny"
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(hf_dir / name, snap / name)
    shutil.copy(minilm_dir / "vocab.txt", snap / "vocab.txt")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    r = run_cli(
        "convert",
        "prajjwal1/bert-tiny",
        tmp_path / "hub.h5",
        env={"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"},
    )
    assert r.returncode == 0, r.stderr
    a, b = weights.load(tmp_path / "hub.h5"), weights.load(h5)
    np.testing.assert_array_equal(a.tensors["pooler.dense.weight"], b.tensors["pooler.dense.weight"])
    assert len(a.vocab) == 30522


@pytest.mark.torch  # huggingface_hub comes with transformers (the dev extra)
def test_hub_id_neither_online_nor_cached_is_a_clear_error(tmp_path):
    pytest.importorskip("huggingface_hub")
    r = run_cli(
        "convert",
        "prajjwal1/bert-tiny",
        tmp_path / "x.h5",
        env={"HF_HUB_CACHE": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "1"},
    )
    assert r.returncode == 1
    assert "cannot fetch from the hub nor find it in the local cache" in r.stderr
    assert "fix: download the files of prajjwal1/bert-tiny" in r.stderr
    assert "Traceback" not in r.stderr


def test_inspect_prints_config_and_tensor_table(minilm_h5):
    r = run_cli("inspect", minilm_h5, "--verify")
    assert r.returncode == 0, r.stderr
    assert "num_hidden_layers: 6" in r.stdout and "hidden_size: 384" in r.stdout
    assert "encoder.layer.5.output.dense.weight" in r.stdout and "(384, 1536)" in r.stdout
    assert "verified: all 103 tensors match their SHA-256" in r.stdout
    lines = [l.split()[0] for l in r.stdout.splitlines() if l.strip().startswith("encoder.layer.")]
    assert lines.index("encoder.layer.2.output.dense.weight") < lines.index("encoder.layer.5.output.dense.weight")
