"""Training end to end: 20 AdamW steps equal to PyTorch's, the finetune/pretrain commands,
checkpoints, --resume (bit-identical to an uninterrupted run) and Ctrl-C."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from training_fixtures import SENTIMENT, sentiment_files, tiny_model_file, tiny_vocab, write_jsonl

import minibert
from minibert import data, fit, optim, train, weights
from minibert.cli import main
from minibert.export import export

REPO = Path(__file__).resolve().parent.parent


def torch_training_run(hf_dir, arch, batches, lr, warmup, total, weight_decay, max_norm):
    """The same steps in PyTorch: AdamW with the Trainer's groups, linear schedule, clipping, float64, no dropout."""
    import torch
    import transformers
    from transformers import get_linear_schedule_with_warmup

    model = (
        getattr(transformers, arch).from_pretrained(hf_dir, attn_implementation="eager").double().eval()
    )  # eval: no dropout
    names = [n for n, _ in model.named_parameters()]
    decay = set(optim.decay_parameter_names(names))
    params = dict(model.named_parameters())
    opt = torch.optim.AdamW(
        [
            {"params": [params[n] for n in names if n in decay], "weight_decay": weight_decay},
            {"params": [params[n] for n in names if n not in decay], "weight_decay": 0.0},
        ],
        lr=lr,
    )
    scheduler = get_linear_schedule_with_warmup(opt, warmup, total)
    losses = []
    for b in batches:
        out = model(**{k: torch.from_numpy(v) for k, v in b.items()})
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        opt.step()
        scheduler.step()
        opt.zero_grad()
        losses.append(out.loss.item())
    return model, losses


@pytest.mark.torch
@pytest.mark.parametrize(
    "heads, head, arch",
    [
        (("classification",), "classification", "BertForSequenceClassification"),
        (("masked-lm", "next-sentence"), "pretraining", "BertForPreTraining"),
    ],
)
def test_20_steps_equal_pytorch(tmp_path, heads, head, arch):
    """Same initial weights, same batches, float64, no dropout: same loss every step, same weights after 20."""
    pytest.importorskip("transformers")
    h5 = tiny_model_file(
        tmp_path / "m.h5", heads, seed=5, id2label={0: "neg", 1: "pos"} if head == "classification" else None
    )
    tok = minibert.Tokenizer.from_file(h5)
    label2id = {"neg": 0, "pos": 1}
    examples = [data.Example(t, None, y, i) for i, (t, y) in enumerate(SENTIMENT)]
    docs = [[t for t, _ in SENTIMENT[i : i + 4]] for i in range(0, 12, 4)]
    batches = []
    for step in range(20):
        if head == "classification":
            order = data.epoch_order(len(examples), 0, step // 3)[(step % 3) * 4 : (step % 3) * 4 + 4]
            batches.append(data.classification_batch([examples[i] for i in order], tok, label2id, 16))
        else:
            batches.append(data.pretraining_batch(docs, tok, data.batch_rng(0, 0, step), 4, 16))
    lr, warmup, total, wd, max_norm = 5e-3, 4, 20, 0.01, 1.0

    torch_model, torch_losses = torch_training_run(
        export(h5, tmp_path / "hf"), arch, batches, lr, warmup, total, wd, max_norm
    )

    model = minibert.load(h5, head=head, dtype="float64")
    opt = optim.AdamW(model.weights, lr=lr, weight_decay=wd)
    schedule = optim.linear_schedule_with_warmup(warmup, total)
    losses = []
    for b in batches:
        loss, grads = train.value_and_grad(model, **b)
        optim.clip_grad_norm(grads, max_norm)
        opt.step(grads, lr=lr * schedule(opt.step_count))
        losses.append(loss)
    loss_err = max(abs(a - b) / max(1.0, abs(b)) for a, b in zip(losses, torch_losses))
    state = {n: t.detach().numpy() for n, t in torch_model.state_dict().items()}
    worst, worst_name = 0.0, None
    for name, w in model.weights.items():
        ref = state.get(name, state.get("bert." + name))
        err = float(np.abs(w - ref).max()) / max(1.0, float(np.abs(ref).max()))
        if err > worst:
            worst, worst_name = err, name
    print(
        f"\n{arch} 20 AdamW steps, float64: loss {losses[0]:.4f} -> {losses[-1]:.4f}; "
        f"worst loss difference {loss_err:.1e}, "
        f"worst parameter difference {worst:.1e} ({worst_name})"
    )
    assert losses[-1] < losses[0] - 0.1  # it learned something: the comparison is not of two frozen models
    assert loss_err <= 1e-9
    assert worst <= 1e-9


def run(argv):
    """The CLI in-process; returns (exit status, stderr text)."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = main(argv)
    return status, err.getvalue()


def test_finetune_command_learns_and_saves(tmp_path):
    h5 = tiny_model_file(tmp_path / "m.h5")
    train_file, dev_file = sentiment_files(tmp_path)
    out = tmp_path / "run"
    status, err = run(
        [
            "finetune",
            str(h5),
            "--train",
            str(train_file),
            "--dev",
            str(dev_file),
            "--labels",
            "neg,pos",
            "--out",
            str(out),
            "--epochs",
            "12",
            "--batch-size",
            "4",
            "--lr",
            "1e-2",
            "--save-steps",
            "10",
        ]
    )
    assert status == 0, err
    history = json.loads((out / "history.json").read_text())
    steps = [r for r in history if "loss" in r]
    evals = [r for r in history if "dev_accuracy" in r]
    assert len(steps) == 36 and len(evals) == 12  # 3 batches per epoch, dev metrics after each epoch
    assert np.mean([r["loss"] for r in steps[-6:]]) < np.mean([r["loss"] for r in steps[:6]]) - 0.2
    assert evals[-1]["dev_accuracy"] == 1.0 and evals[-1]["dev_loss"] < evals[0]["dev_loss"] - 0.3
    if importlib.util.find_spec("matplotlib"):  # the viz/train extra draws the loss curve (CI has it)
        assert (out / "loss.png").stat().st_size > 1000
    model = minibert.load(out / "model.h5", head="classification")
    assert model.id2label == {0: "neg", 1: "pos"}
    tok = minibert.Tokenizer.from_file(out / "model.h5")
    from minibert.heads import classify

    assert max(classify(model, tok, "a great movie"), key=lambda p: p[1])[0] == "pos"
    state = fit.load_state(out)
    assert state[1].step == 36 and state[0]["step_count"] == 36
    assert "finished at step 36/36" in err


def test_resume_is_identical_to_an_uninterrupted_run(tmp_path):
    """With dropout on: 1 step, stop, resume to 6 == 6 steps in one go (weights, moments, losses)."""
    h5 = tiny_model_file(tmp_path / "m.h5")
    train_file, dev_file = sentiment_files(tmp_path)
    common = ["finetune", str(h5), "--train", str(train_file), "--max-steps", "6", "--batch-size", "4", "--lr", "3e-3"]
    assert run(common + ["--out", str(tmp_path / "a")])[0] == 0
    status, err = run(common + ["--out", str(tmp_path / "b"), "--max-minutes", "0"])  # stops after the first step
    assert status == 0 and "time limit" in err
    assert fit.load_state(tmp_path / "b")[1].step == 1
    assert run(common + ["--out", str(tmp_path / "b"), "--resume"])[0] == 0
    a, b = weights.load(tmp_path / "a" / "model.h5"), weights.load(tmp_path / "b" / "model.h5")
    for name in a.tensors:
        np.testing.assert_array_equal(a.tensors[name], b.tensors[name])
    sa, sb = fit.load_state(tmp_path / "a"), fit.load_state(tmp_path / "b")
    np.testing.assert_array_equal(sa[0]["exp_avg_sq"]["classifier.weight"], sb[0]["exp_avg_sq"]["classifier.weight"])
    assert [r["loss"] for r in sa[1].history] == [r["loss"] for r in sb[1].history]
    # resuming with other settings is an error, not a silently different run
    status, err = run(common[:-1] + ["1e-3", "--out", str(tmp_path / "b"), "--resume"])
    assert status == 1 and "other settings (lr)" in err and "fix:" in err


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    h5 = tiny_model_file(tmp_path / "m.h5")
    train_file, dev_file = sentiment_files(tmp_path)
    out = tmp_path / "run"
    argv = [
        sys.executable,
        "-m",
        "minibert",
        "finetune",
        str(h5),
        "--train",
        str(train_file),
        "--dev",
        str(dev_file),
        "--out",
        str(out),
        "--max-steps",
        "40",
        "--eval-steps",
        "1",
        "--batch-size",
        "4",
        "--save-steps",
        "1000",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True, bufsize=1)
    seen = []
    first_step = threading.Event()

    def read():
        for line in proc.stderr:
            seen.append(line)
            if line.startswith("step "):
                first_step.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert first_step.wait(timeout=120), "".join(seen)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    reader.join(timeout=10)
    stderr = "".join(seen)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted at step" in stderr and "--resume" in stderr
    step = fit.load_state(out)[1].step
    assert 1 <= step < 40
    minibert.load(out / "model.h5", head="classification")  # a complete, loadable checkpoint
    status, err = run(argv[3:-2] + ["--save-steps", "1000", "--resume"])
    assert status == 0, err
    assert fit.load_state(out)[1].step == 40


def test_pretrain_command(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(tiny_vocab()) + "\n", encoding="utf-8")
    corpus = tmp_path / "corpus.txt"
    docs = [[t for t, _ in SENTIMENT[i : i + 3]] for i in range(0, 12, 3)] * 3
    corpus.write_text("\n\n".join("\n".join(d) for d in docs) + "\n", encoding="utf-8")
    out = tmp_path / "run"
    status, err = run(
        [
            "pretrain",
            "--corpus",
            str(corpus),
            "--vocab",
            str(vocab),
            "--preset",
            "bert-tiny",
            "--out",
            str(out),
            "--max-steps",
            "8",
            "--batch-size",
            "4",
            "--max-length",
            "24",
            "--eval-steps",
            "4",
            "--dev-fraction",
            "0.2",
        ]
    )
    assert status == 0, err
    history = json.loads((out / "history.json").read_text())
    evals = [r for r in history if "dev_mlm_loss" in r]
    assert len(evals) == 2 and all(np.isfinite(r["dev_mlm_loss"]) and 0 <= r["dev_nsp_accuracy"] <= 1 for r in evals)
    assert (
        abs([r["loss"] for r in history if "loss" in r][0] - (np.log(len(tiny_vocab())) + np.log(2))) < 0.5
    )  # ~ ln V + ln 2
    w = weights.load(out / "model.h5")
    assert (
        w.heads == ["masked-lm", "next-sentence"]
        and w.config.hidden_size == 128
        and w.config.vocab_size == len(tiny_vocab())
    )
    assert minibert.load(out / "model.h5", head="masked-lm") is not None


def test_training_errors_are_clear(tmp_path):
    h5 = tiny_model_file(tmp_path / "m.h5")
    train_file, _ = sentiment_files(tmp_path)
    bad_dev = write_jsonl(tmp_path / "bad.jsonl", [{"text": "x", "label": "pos"}, {"text": "y", "label": "maybe"}])
    status, err = run(
        ["finetune", str(h5), "--train", str(train_file), "--dev", str(bad_dev), "--out", str(tmp_path / "r")]
    )
    assert status == 1 and "bad.jsonl:2: unknown label 'maybe' (known: neg, pos)" in err and "Traceback" not in err
    status, err = run(["finetune", str(h5), "--train", str(train_file), "--out", str(tmp_path / "none"), "--resume"])
    assert status == 1 and "no trainer state to resume from" in err
