"""Google's TensorFlow checkpoints, written by TensorFlow itself, converted without it.

The fixtures in tests/fixtures/tf/ were written by ``tests/fixtures/make_tf_checkpoints.py``
(TensorFlow 2.21): a seeded transformers BertForPreTraining (L=2, H=16, A=2, I=32, 100 tokens)
saved in Hugging Face format (hf/), and the same weights as TensorFlow checkpoints with Google's
variable names: plain, sharded into two data files, with Adam slots, zipped as Google released
the compact BERTs; plus a checkpoint of many dtypes with what ``tf.train.load_checkpoint``
reads back from it. Every conversion must equal the .h5 of the Hugging Face route, tensor for
tensor, bit for bit. One test runs the script again (TensorFlow in a subprocess; neither
minibert nor this process imports it) to check that TensorFlow today writes the same thing.
"""

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import minibert
from minibert import weights
from minibert.errors import ConversionError
from minibert.tf_checkpoint import TFCheckpoint, crc32c, google_names, unmask_crc

from helpers import run_cli

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHAPE = dict(vocab_size=100, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)
ZIP = "uncased_L-2_H-16_A-2.zip"


@pytest.fixture(scope="module")
def tf_files(tmp_path_factory):
    """(HF directory, its .h5 by the Hugging Face route, directory of the TF checkpoints)."""
    hf = FIXTURES / "tf" / "hf"
    reference = minibert.convert(hf, tmp_path_factory.mktemp("tf") / "from_pytorch.h5")
    return hf, reference, FIXTURES / "tf"


def assert_same_file(converted, reference, hidden_act="gelu_new", vocab=True):
    a, b = weights.load(converted), weights.load(reference)
    assert sorted(a.tensors) == sorted(b.tensors)
    for name in b.tensors:
        assert a.tensors[name].dtype == b.tensors[name].dtype, name
        np.testing.assert_array_equal(a.tensors[name], b.tensors[name], err_msg=name)
    assert a.heads == b.heads == ["masked-lm", "next-sentence"]
    assert a.vocab == (b.vocab if vocab else []) and len(b.vocab) == SHAPE["vocab_size"]
    assert a.config.hidden_act == hidden_act
    assert {**a.config.to_dict(), "hidden_act": "gelu"} == b.config.to_dict()
    return a


@pytest.mark.parametrize("variant", ["plain", "sharded", "adam"])
def test_folder_converts_to_the_same_tensors_as_the_pytorch_route(tf_files, tmp_path, variant):
    _, reference, out = tf_files
    logged = []
    h5 = minibert.convert(out / variant, tmp_path / "tf.h5", log=logged.append)
    a = assert_same_file(h5, reference)
    assert any('stored as hidden_act="gelu_new"' in m for m in logged)
    data_files = sorted(p.name for p in (out / variant).glob("bert_model.ckpt.data-*"))
    assert sorted(n for n in a.source_sha256 if ".data-" in n) == data_files
    if variant == "sharded":
        assert data_files == ["bert_model.ckpt.data-00000-of-00002", "bert_model.ckpt.data-00001-of-00002"]
        ckpt = TFCheckpoint(out / variant / "bert_model.ckpt")
        assert ckpt.num_shards == 2 and {e.shard_id for e in ckpt.entries.values()} == {0, 1}
    if variant == "adam":
        assert any("skipped 93 training variables (92 Adam slots; global_step)" in m for m in logged)


def test_released_zip_and_ckpt_prefix_from_the_command_line(tf_files, tmp_path):
    _, reference, out = tf_files
    r = run_cli("convert", out / ZIP, tmp_path / "zip.h5", "--verbose")
    assert r.returncode == 0, r.stderr
    assert 'stored as hidden_act="gelu_new"' in r.stderr and "hidden_act: gelu_new" in r.stdout
    a = assert_same_file(tmp_path / "zip.h5", reference)
    assert a.source.endswith(ZIP) and a.do_lower_case is True  # "uncased" in the release's name

    prefix_dir = tmp_path / "elsewhere"  # a *.ckpt prefix whose config is not beside it
    prefix_dir.mkdir()
    for f in (out / "plain").glob("bert_model.ckpt.*"):
        shutil.copy(f, prefix_dir)
    logged = []
    h5 = minibert.convert(
        prefix_dir / "bert_model.ckpt",
        tmp_path / "prefix.h5",
        config=out / "plain" / "bert_config.json",
        hidden_act="gelu",
        log=logged.append,
    )  # as --hidden-act gelu
    assert logged == []  # chosen explicitly: no notice
    assert_same_file(h5, reference, hidden_act="gelu", vocab=False)  # no vocab.txt beside this prefix
    with pytest.raises(
        ConversionError, match="no bert_config.json beside the TensorFlow checkpoint\nFix: pass --config"
    ):
        minibert.convert(prefix_dir / "bert_model.ckpt", tmp_path / "noconfig.h5")


def test_zip_with_a_top_folder_as_the_large_releases(tf_files, tmp_path):
    _, reference, out = tf_files
    z = tmp_path / "cased_L-2_H-16_A-2.zip"
    with zipfile.ZipFile(z, "w") as archive:
        for f in (out / "plain").iterdir():
            archive.write(f, f"cased_L-2_H-16_A-2/{f.name}")
    a = assert_same_file(minibert.convert(z, tmp_path / "z.h5", log=lambda m: None), reference)
    assert a.do_lower_case is False  # a cased release


def test_reader_matches_tensorflow_on_many_dtypes_and_shapes(tf_files):
    _, _, out = tf_files
    ckpt = TFCheckpoint(out / "dtypes" / "model.ckpt")
    numbers = np.load(out / "dtypes" / "dtypes.npz")
    strings = json.loads((out / "dtypes" / "strings.json").read_text())
    assert len(ckpt.entries) == len(numbers.files) + len(strings) == 12
    for name in ckpt.entries:
        ours = ckpt.read(name)
        if name in strings:
            assert ours.reshape(-1).tolist() == [s.encode("latin-1") for s in strings[name]]
            continue
        theirs = numbers[name.replace("/", "__")]
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, name
        np.testing.assert_array_equal(ours, theirs, err_msg=name)
    assert ckpt.read("i64/scalar").shape == () and ckpt.read("f32/empty").shape == (0, 4)


def test_crc32c_and_tensorflow_masking():
    assert crc32c(b"123456789") == 0xE3069283  # the standard CRC-32C check value
    assert crc32c(b"56789", crc32c(b"1234")) == 0xE3069283  # continued over two pieces
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 (iSCSI) test vector: 32 zero bytes
    crc = 0xE3069283
    masked = ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF  # crc32c::Mask
    assert unmask_crc(masked) == crc


def test_corrupted_data_file_fails_the_variable_crc(tf_files, tmp_path):
    _, _, out = tf_files
    bad = tmp_path / "bad"
    shutil.copytree(out / "plain", bad)
    entry = TFCheckpoint(bad / "bert_model.ckpt").entries["bert/encoder/layer_1/output/dense/kernel"]
    data = bytearray((bad / "bert_model.ckpt.data-00000-of-00001").read_bytes())
    data[entry.offset + 100] ^= 0x01  # one bit of one float
    (bad / "bert_model.ckpt.data-00000-of-00001").write_bytes(bytes(data))
    with pytest.raises(
        ConversionError, match="variable bert/encoder/layer_1/output/dense/kernel fails its CRC32C check"
    ):
        minibert.convert(bad, tmp_path / "x.h5", log=lambda m: None)


def test_corrupted_index_fails_the_block_crc(tf_files, tmp_path):
    _, _, out = tf_files
    bad = tmp_path / "bad"
    shutil.copytree(out / "plain", bad)
    index = bytearray((bad / "bert_model.ckpt.index").read_bytes())
    index[40] ^= 0x01
    (bad / "bert_model.ckpt.index").write_bytes(bytes(index))
    with pytest.raises(ConversionError, match="fails its CRC32C check"):
        minibert.convert(bad, tmp_path / "x.h5", log=lambda m: None)


def test_missing_shard_is_named(tf_files, tmp_path):
    _, _, out = tf_files
    bad = tmp_path / "bad"
    shutil.copytree(out / "sharded", bad)
    (bad / "bert_model.ckpt.data-00001-of-00002").unlink()
    with pytest.raises(
        ConversionError, match=r"data-00001-of-00002: data file missing \(variable .* is in shard 1 of 2\)"
    ):
        minibert.convert(bad, tmp_path / "x.h5", log=lambda m: None)


def test_unknown_variables_are_listed(tf_files, tmp_path):
    _, _, out = tf_files
    folder = tmp_path / "notbert"
    shutil.copytree(out / "dtypes", folder)
    shutil.copy(out / "plain" / "bert_config.json", folder)
    with pytest.raises(
        ConversionError, match=r"12 variable\(s\) minibert does not know: bf16/vector, bool/vector, .* and 4 more"
    ):
        minibert.convert(folder, tmp_path / "x.h5", log=lambda m: None)


def test_wrong_layer_count_in_the_config_says_so(tf_files, tmp_path):
    _, _, out = tf_files
    cfg = json.loads((out / "plain" / "bert_config.json").read_text())
    (tmp_path / "one_layer.json").write_text(json.dumps({**cfg, "num_hidden_layers": 1}))
    with pytest.raises(ConversionError, match=r"bert/encoder/layer_1/.*\nFix: the config says num_hidden_layers=1"):
        minibert.convert(
            out / "plain" / "bert_model.ckpt", tmp_path / "x.h5", config=tmp_path / "one_layer.json", log=lambda m: None
        )


def test_google_name_table():
    names = google_names(2)
    assert names["bert/encoder/layer_1/attention/self/query/kernel"] == (
        "encoder.layer.1.attention.self.query.weight",
        True,
    )
    assert names["bert/embeddings/LayerNorm/gamma"] == ("embeddings.LayerNorm.weight", False)
    assert names["cls/seq_relationship/output_weights"] == ("cls.seq_relationship.weight", False)  # already [2, H]
    assert names["output_weights"] == ("classifier.weight", False)  # run_classifier.py
    assert len(names) == 5 + 16 * 2 + 2 + 4 + 1 + 2 + 2


@pytest.mark.torch  # TensorFlow, in the dev extra with the reference stack
@pytest.mark.slow
def test_tensorflow_today_writes_what_the_fixtures_hold(tf_files, tmp_path):
    """The live check: TensorFlow (in a subprocess) rewrites every fixture from the committed model."""
    hf, _, committed = tf_files
    fresh = tmp_path / "fresh"
    r = subprocess.run([sys.executable, FIXTURES / "make_tf_checkpoints.py", hf, fresh], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    for variant in ("plain", "sharded", "adam"):
        new, old = (
            TFCheckpoint(fresh / variant / "bert_model.ckpt"),
            TFCheckpoint(committed / variant / "bert_model.ckpt"),
        )
        assert new.entries.keys() == old.entries.keys() and new.num_shards == old.num_shards
        for name in old.entries:
            np.testing.assert_array_equal(new.read(name), old.read(name), err_msg=f"{variant}: {name}")
    ckpt, numbers = TFCheckpoint(fresh / "dtypes" / "model.ckpt"), np.load(fresh / "dtypes" / "dtypes.npz")
    for key in numbers.files:  # minibert's reader against what tf.train.load_checkpoint just read
        ours = ckpt.read(key.replace("__", "/"))
        assert ours.dtype == numbers[key].dtype
        np.testing.assert_array_equal(ours, numbers[key], err_msg=key)


@pytest.mark.torch
def test_converted_tf_model_computes_what_transformers_computes_with_the_tanh_gelu(tf_files, tmp_path):
    """The TF checkpoint's default (gelu_new) against transformers' BertForPreTraining with hidden_act="gelu_new"."""
    import torch
    from transformers import BertForPreTraining

    hf, _, out = tf_files
    h5 = minibert.convert(out / "plain", tmp_path / "tf.h5", log=lambda m: None)
    ref_model = BertForPreTraining.from_pretrained(hf, hidden_act="gelu_new", attn_implementation="eager").eval()
    ids = np.random.default_rng(0).integers(5, SHAPE["vocab_size"], (2, 9))
    with torch.no_grad():
        ref = ref_model(torch.from_numpy(ids))
    ours = minibert.load(h5, head="masked-lm")(ids)
    from helpers import assert_close

    assert_close(
        "Google TF checkpoint (gelu_new), H=16",
        "prediction_logits",
        ours.logits,
        ref.prediction_logits.numpy(),
        "float32",
    )
    exact = minibert.load(minibert.convert(out / "plain", tmp_path / "exact.h5", hidden_act="gelu"), head="masked-lm")(
        ids
    )
    tolerance = 1e-5 * max(1.0, np.abs(ref.prediction_logits.numpy()).max())
    assert (
        np.abs(exact.logits - ref.prediction_logits.numpy()).max() > 3 * tolerance
    )  # the exact GELU would fail parity


def test_a_folder_with_both_formats_converts_the_hugging_face_one(tf_files, tmp_path):
    hf, reference, out = tf_files
    both = tmp_path / "both"
    shutil.copytree(hf, both)
    for f in (out / "plain").glob("bert_model.ckpt.*"):
        shutil.copy(f, both)
    logged = []
    a = weights.load(minibert.convert(both, tmp_path / "a.h5", log=logged.append))
    assert logged == [] and a.config.hidden_act == "gelu" and "model.safetensors" in a.source_sha256
