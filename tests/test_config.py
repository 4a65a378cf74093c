import json

import pytest

from minibert import BertConfig, ConfigError
from minibert.config import PRESETS


@pytest.mark.parametrize(
    "name,L,H", [("bert-tiny", 2, 128), ("bert-mini", 4, 256), ("bert-small", 4, 512), ("bert-medium", 8, 512)]
)
def test_presets_follow_the_model_cards(name, L, H):
    c = BertConfig.preset(name)
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size) == (L, H, H // 64, 4 * H)
    assert c.vocab_size == 30522 and c.max_position_embeddings == 512 and c.layer_norm_eps == 1e-12
    assert BertConfig.preset("prajjwal1/" + name) == c
    assert set(PRESETS) == {"bert-tiny", "bert-mini", "bert-small", "bert-medium"}


def test_from_json_ignores_unknown_keys(minilm_dir):
    c = BertConfig.from_json(minilm_dir / "config.json")  # has architectures, gradient_checkpointing, ...
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size) == (6, 384, 12, 1536)


def test_missing_required_key_is_a_clear_error(tmp_path):
    p = tmp_path / "config.json"
    p.write_text(json.dumps({"vocab_size": 10, "hidden_size": 8}))
    with pytest.raises(ConfigError, match="missing required key.*num_hidden_layers"):
        BertConfig.from_json(p)


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"hidden_size": 33}, "not a multiple of num_attention_heads"),
        ({"hidden_act": "mish"}, "hidden_act='mish' is not supported"),
        ({"num_hidden_layers": 0}, "num_hidden_layers=0 must be an integer from 1 to 256"),
    ],
)
def test_bad_values(bad, match):
    d = dict(vocab_size=10, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    d.update(bad)
    with pytest.raises(ConfigError, match=match):
        BertConfig.from_dict(d)


def test_not_json(tmp_path):
    p = tmp_path / "config.json"
    p.write_text("{oops")
    with pytest.raises(ConfigError, match="not valid JSON"):
        BertConfig.from_json(p)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="choose one of bert-tiny"):
        BertConfig.preset("bert-huge")
