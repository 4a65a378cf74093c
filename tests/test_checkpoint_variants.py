"""Checkpoint shapes other than one file of one BertFor* model: shards, and tensors that are not BERT's.

Sharded checkpoints are made from the real all-MiniLM-L6-v2 by the tools users get them
from: transformers' ``save_pretrained(max_shard_size=...)`` (model.safetensors.index.json +
shards) and huggingface_hub's ``save_torch_state_dict(safe_serialization=False)``
(pytorch_model.bin.index.json + shards, the layout transformers 4 wrote).
"""

import json
import shutil

import numpy as np
import pytest

import minibert
from minibert import weights
from minibert.convert import read_safetensors
from minibert.errors import ConversionError

from helpers import run_cli

pytestmark = pytest.mark.torch  # the PyTorch reference (dev extra)


def assert_same_tensors(a_path, b_path):
    a, b = weights.load(a_path), weights.load(b_path)
    assert sorted(a.tensors) == sorted(b.tensors)
    for name in a.tensors:
        np.testing.assert_array_equal(a.tensors[name], b.tensors[name], err_msg=name)
    assert a.config == b.config and a.vocab == b.vocab and a.do_lower_case == b.do_lower_case
    return a


@pytest.fixture(scope="module")
def minilm_bert(minilm_dir):
    from transformers import BertModel

    return BertModel.from_pretrained(minilm_dir)


def copy_tokenizer_files(src, dst):
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(src / name, dst / name)


def test_sharded_safetensors_from_save_pretrained(minilm_bert, minilm_dir, minilm_h5, tmp_path):
    out = tmp_path / "sharded"
    minilm_bert.save_pretrained(out, max_shard_size="30MB")
    copy_tokenizer_files(minilm_dir, out)
    shards = sorted(p.name for p in out.glob("model-*.safetensors"))
    assert (
        len(shards) >= 3
        and (out / "model.safetensors.index.json").is_file()
        and not (out / "model.safetensors").exists()
    )
    a = assert_same_tensors(minibert.convert(out, tmp_path / "a.h5"), minilm_h5)
    assert sorted(a.source_sha256) == sorted(shards + ["model.safetensors.index.json", "config.json", "vocab.txt"])


def test_sharded_pytorch_bin_from_huggingface_hub(minilm_bert, minilm_dir, minilm_h5, tmp_path):
    from huggingface_hub import save_torch_state_dict

    out = tmp_path / "sharded_bin"
    out.mkdir()
    save_torch_state_dict(minilm_bert.state_dict(), out, max_shard_size="30MB", safe_serialization=False)
    shutil.copy(minilm_dir / "config.json", out)
    copy_tokenizer_files(minilm_dir, out)
    assert (out / "pytorch_model.bin.index.json").is_file() and len(list(out.glob("pytorch_model-*.bin"))) >= 3
    assert_same_tensors(minibert.convert(out, tmp_path / "b.h5"), minilm_h5)


def test_sharded_errors_name_the_shard(preset_model, tmp_path):
    torch_model, hf_dir, _ = preset_model("bert-tiny")
    out = tmp_path / "s"
    torch_model.save_pretrained(out, max_shard_size="2MB")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[-1]
    (out / shard).rename(tmp_path / shard)
    with pytest.raises(ConversionError, match=f"shard {shard} is missing"):
        minibert.convert(out, tmp_path / "x.h5")
    (tmp_path / shard).rename(out / shard)
    index["weight_map"]["encoder.layer.9.output.dense.weight"] = shard  # listed, but in no shard
    (out / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(
        ConversionError, match="encoder.layer.9.output.dense.weight is listed in the index but not in its shard"
    ):
        minibert.convert(out, tmp_path / "x.h5")
    (out / "model.safetensors.index.json").unlink()
    with pytest.raises(ConversionError, match="shards without their index"):
        minibert.convert(out, tmp_path / "x.h5")


def test_tensors_that_are_not_bert_are_skipped_with_a_notice_or_refused(preset_model, tmp_path):
    """A model built on BertModel with an extra head of its own (architectures: not BertFor*)."""
    from safetensors.numpy import save_file

    _, hf_dir, h5 = preset_model("bert-tiny", model_class="BertForMaskedLM")
    out = tmp_path / "custom"
    out.mkdir()
    tensors = read_safetensors(hf_dir / "model.safetensors")
    tensors["cls.species.weight"] = np.ones((6, 128), np.float32)
    tensors["cls.species.bias"] = np.zeros(6, np.float32)
    save_file(tensors, out / "model.safetensors")
    config = json.loads((hf_dir / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "architectures": ["SpeciesBert"]}))

    logged = []
    assert_same_tensors(minibert.convert(out, tmp_path / "a.h5", log=logged.append), h5)
    assert logged == [
        f"{out}: the config names the architecture SpeciesBert, not a transformers Bert* class; "
        "skipped 2 tensor(s) that are not part of BERT: cls.species.bias [6], cls.species.weight [6, 128]"
    ]
    r = run_cli("convert", out, tmp_path / "b.h5", "--strict")
    assert r.returncode == 1 and not (tmp_path / "b.h5").exists()
    assert (
        "error:" in r.stderr
        and "2 tensor(s) are not part of BERT: cls.species.bias [6], cls.species.weight [6, 128]" in r.stderr
    )
    assert "fix: convert without --strict to skip them" in r.stderr


def test_hidden_act_override_on_a_hugging_face_checkpoint(preset_model, tmp_path):
    _, hf_dir, _ = preset_model("bert-tiny")
    assert (
        weights.load(minibert.convert(hf_dir, tmp_path / "a.h5", hidden_act="gelu_new")).config.hidden_act == "gelu_new"
    )
    with pytest.raises(ConversionError, match="hidden_act='gelu_10' is not supported"):
        minibert.convert(hf_dir, tmp_path / "b.h5", hidden_act="gelu_10")
