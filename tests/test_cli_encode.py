"""`minibert encode`: the README's main job, on the real MiniLM."""

import json

import numpy as np

from helpers import assert_close, run_cli


def test_encode_prints_tokens_ids_and_writes_embeddings_matching_torch(minilm_h5, minilm_dir, minilm_torch, tmp_path):
    import torch
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    text, pair = "The capital of France is Paris.", "It is a big city."
    out_json = tmp_path / "e.json"
    r = run_cli("encode", minilm_h5, text, "--pair", pair, "--json", out_json)
    assert r.returncode == 0, r.stderr
    ref_tok = BertTokenizerLegacy(vocab_file=str(minilm_dir / "vocab.txt"))
    enc = ref_tok(text, pair, return_token_type_ids=True)
    tokens = ref_tok.convert_ids_to_tokens(enc["input_ids"])
    assert f"tokens ({len(tokens)}): {' '.join(tokens)}" in r.stdout
    assert "input_ids: " + " ".join(map(str, enc["input_ids"])) in r.stdout
    assert "last_hidden_state: shape [1, %d, 384]" % len(tokens) in r.stdout

    record = json.loads(out_json.read_text())
    assert record["input_ids"] == enc["input_ids"] and record["token_type_ids"] == enc["token_type_ids"]
    with torch.inference_mode():
        ref = minilm_torch.float()(
            input_ids=torch.tensor([enc["input_ids"]]), token_type_ids=torch.tensor([enc["token_type_ids"]])
        )
    ours = np.array(record["last_hidden_state"], dtype=np.float32)[None]
    assert_close("CLI encode (JSON)", "last_hidden_state", ours, ref.last_hidden_state, "float32")
    expected_mean = ref.last_hidden_state[0].mean(0).numpy()
    assert_close(
        "CLI encode (JSON)", "mean_pooled", np.array(record["mean_pooled"], np.float32), expected_mean, "float32"
    )
    norm = float(np.linalg.norm(ref.last_hidden_state.numpy()))
    printed = float(r.stdout.split("last_hidden_state: shape")[1].split("L2 norm ")[1].split(",")[0])
    assert abs(printed - norm) <= 1e-4 * norm


def test_encode_text_from_a_non_utf8_file_is_a_clear_error(minilm_h5, tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café".encode("latin-1"))
    r = run_cli("encode", minilm_h5, "--file", bad)
    assert r.returncode == 1
    assert "is not valid UTF-8" in r.stderr and "byte offset 3" in r.stderr and "Traceback" not in r.stderr
