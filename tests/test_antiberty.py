"""A real pretrained masked-LM: AntiBERTy (``pip install --no-deps antiberty==0.1.3``, MIT).

AntiBERTy (Ruffolo, Gray & Sulam, 2021, arXiv:2112.07782) is a BERT of bert-medium's shape
(L=8, H=512, A=8, I=2048) pre-trained with masked language modelling on 558M natural
antibody sequences (the Observed Antibody Space); its vocabulary is the 20 amino acids plus
5 special tokens, cased, one token per residue. Its checkpoint names the architecture
"AntiBERTy" and carries three extra heads (species, chain, graft) that minibert skips.

The antibody sequences are in docs/data/antibody_sequences.txt (sources cited there).
"""

import importlib.metadata
import importlib.util
from pathlib import Path

import numpy as np
import pytest

import minibert
from minibert import weights
from minibert.cli import main as cli_main
from minibert.heads import predict_each_position

from helpers import assert_close

pytestmark = pytest.mark.torch  # the PyTorch reference (dev extra)

REPO = Path(__file__).resolve().parent.parent
SEQUENCES = REPO / "docs" / "data" / "antibody_sequences.txt"


def antiberty_files():
    spec = importlib.util.find_spec("antiberty")
    if spec is None:
        raise RuntimeError("the AntiBERTy tests need `pip install --no-deps antiberty==0.1.3`")
    models = Path(spec.origin).parent / "trained_models"
    return models / "AntiBERTy_md_smooth", models / "vocab.txt"


def read_sequences():
    return [line.strip() for line in SEQUENCES.read_text().splitlines() if line.strip() and not line.startswith("#")]


@pytest.fixture(scope="module")
def antiberty(tmp_path_factory):
    """(checkpoint dir, vocab.txt, converted .h5, conversion notices)."""
    directory, vocab = antiberty_files()
    notices = []
    h5 = minibert.convert(
        directory,
        tmp_path_factory.mktemp("antiberty") / "antiberty.h5",
        vocab=vocab,
        do_lower_case=False,
        log=notices.append,
    )
    return directory, vocab, h5, notices


@pytest.fixture(scope="module")
def reference_model(antiberty):
    from transformers import BertForMaskedLM

    return BertForMaskedLM.from_pretrained(antiberty[0], attn_implementation="eager").eval()


def test_conversion_keeps_bert_and_its_masked_lm_and_skips_the_extra_heads(antiberty):
    _, _, h5, notices = antiberty
    w = weights.load(h5)
    assert w.heads == ["masked-lm"] and w.vocab[5:] == list("ACDEFGHIKLMNPQRSTVWY") and w.do_lower_case is False
    assert (
        w.config.num_hidden_layers,
        w.config.hidden_size,
        w.config.num_attention_heads,
        w.config.intermediate_size,
        w.config.vocab_size,
    ) == (8, 512, 8, 2048, 25)
    assert not any(name.startswith(("cls.species", "cls.chain", "cls.graft")) for name in w.tensors)
    assert len(notices) == 1 and "names the architecture AntiBERTy" in notices[0]
    assert "skipped 6 tensor(s) that are not part of BERT: cls.chain.bias [2], cls.chain.weight [2, 512]" in notices[0]


def test_the_first_sequences_are_the_ones_antiberty_ships():
    metadata = importlib.metadata.metadata("antiberty").get_payload()  # the package's README
    heavy, light = read_sequences()[:2]
    assert heavy in metadata and light in metadata


def encode_batch(h5, masked_fraction=0.15):
    """The five sequences, residues space-separated, padded; 15% of the residues [MASK]ed (seeded)."""
    tok = minibert.Tokenizer.from_file(h5)
    batch = tok.encode_batch([" ".join(s) for s in read_sequences()])
    ids, mask = batch["input_ids"].copy(), batch["attention_mask"]
    residue = mask.astype(bool) & (ids != tok.cls_token_id) & (ids != tok.sep_token_id)
    chosen = residue & (np.random.default_rng(0).random(ids.shape) < masked_fraction)
    ids[chosen] = tok.mask_token_id
    return tok, ids, mask, batch["token_type_ids"]


def test_tokenizer_matches_the_one_antiberty_uses(antiberty):
    """AntiBERTyRunner builds BertTokenizer(vocab_file=..., do_lower_case=False). Under transformers 5
    that class ignores ``vocab_file`` (5 special tokens, every residue [UNK]); the slow tokenizer it
    meant is transformers 5's BertTokenizerLegacy, which minibert's tokenizer matches."""
    from transformers import BertTokenizerLegacy

    _, vocab, h5, _ = antiberty
    theirs = BertTokenizerLegacy(vocab_file=str(vocab), do_lower_case=False)
    ours = minibert.Tokenizer.from_file(h5)
    for s in read_sequences():
        text = " ".join(s[:40]) + " [MASK] " + " ".join(s[41:])
        assert ours.encode(text)["input_ids"] == theirs(text)["input_ids"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_masked_lm_logits_match_transformers(antiberty, reference_model, dtype):
    import torch

    _, _, h5, _ = antiberty
    _, ids, mask, types = encode_batch(h5)
    model = minibert.load(h5, dtype=dtype, head="masked-lm")
    ours = model(ids, mask, types, output_hidden_states=True)
    ref_model = reference_model.double() if dtype == "float64" else reference_model.float()
    with torch.no_grad():
        ref = ref_model(
            torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(types), output_hidden_states=True
        )
    label = f"AntiBERTy masked-LM, 5 antibodies {tuple(ids.shape)}"
    keep = mask.astype(bool)  # padding rows are not compared: transformers computes them differently, nobody reads them
    assert_close(label, "logits", ours.logits[keep], ref.logits.numpy()[keep], dtype)
    for i in (0, 4, 8):
        assert_close(
            label, f"hidden_states[{i}]", ours.hidden_states[i][keep], ref.hidden_states[i].numpy()[keep], dtype
        )
    reference_model.float()


def test_each_position_predictions_agree_with_transformers(antiberty, reference_model):
    """The first 32 residues of the light chain, each masked alone: same argmax as transformers."""
    import torch

    _, _, h5, _ = antiberty
    tok = minibert.Tokenizer.from_file(h5)
    light = read_sequences()[1]
    text = " ".join(light[:32])
    tokens, predicted = predict_each_position(minibert.load(h5, head="masked-lm"), tok, text)
    assert tokens == list(light[:32])
    ids = np.array(tok.encode(text)["input_ids"])
    batch = np.repeat(ids[None], 32, axis=0)
    batch[np.arange(32), np.arange(1, 33)] = tok.mask_token_id
    with torch.no_grad():
        logits = reference_model(torch.from_numpy(batch)).logits.numpy()  # [32, T, V]
    theirs = tok.convert_ids_to_tokens(logits[np.arange(32), np.arange(1, 33)].argmax(-1).tolist())
    assert predicted == theirs
    accuracy = np.mean([t == p for t, p in zip(tokens, predicted)])
    baseline = max(tokens.count(a) for a in set(tokens)) / len(tokens)
    assert accuracy >= 0.8 and baseline <= 0.3  # a real masked-LM: far above always guessing the commonest residue


def test_fill_mask_command_line(antiberty, tmp_path, capsys):
    _, _, h5, _ = antiberty
    light = read_sequences()[1][:24]  # DVVMTQTPFSLPVSLGDQASISCR
    masked = " ".join(light[:10]) + " [MASK] " + " ".join(light[11:])
    assert cli_main(["fill-mask", str(h5), masked, "--top-k", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "[MASK] 1:" and len(out) == 4 and all(len(line.split()) == 2 for line in out[1:])
    f = tmp_path / "one.txt"
    f.write_text(f"# a comment\n{light}\n")
    assert cli_main(["fill-mask", str(h5), "--mask-each", str(f), "--residues"]) == 0
    out = capsys.readouterr().out
    assert "1. DVVMTQTPFSLPVSLGDQASISCR (24 tokens): top-1 " in out
    assert "all 1 texts, 24 positions, each masked alone: top-1 accuracy " in out and "baseline (always 'S'" in out
