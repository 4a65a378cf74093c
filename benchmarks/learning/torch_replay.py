"""Replay a `minibert finetune` run in PyTorch/transformers, step for step, and compare the losses.

    python benchmarks/learning/torch_replay.py RUN_DIR [--steps N]

Reads RUN_DIR/run.json (the run's inputs and settings) and RUN_DIR/initial.h5 (its starting
weights, with the new classification head), exports them with `minibert export`, loads
transformers' BertForSequenceClassification from that directory and trains it on exactly the
batches minibert trained on (the same `minibert.data` batches, in the same order), with the
same AdamW (the Trainer's groups: no decay on biases and LayerNorm), linear warm-up schedule,
gradient clipping and dtype. The run must have been made with --no-dropout (PyTorch runs in
eval() mode, so dropout is off on both sides).

Writes RUN_DIR/torch_history.json and RUN_DIR/loss_vs_torch.png, and prints the largest loss
difference over the steps both runs have.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root

from minibert import Tokenizer, data, fit, optim  # noqa: E402
from minibert.export import export  # noqa: E402


def replay(run_dir, steps=None):
    import torch
    import transformers
    from transformers import get_linear_schedule_with_warmup

    run_dir = Path(run_dir)
    run = json.loads((run_dir / "run.json").read_text())
    settings = fit.Settings(**run["settings"])
    if settings.dropout:
        raise SystemExit("the run used dropout: replay only runs made with --no-dropout")
    train_examples = data.read_examples(run["train"], run["task"])
    label2id = {name: i for i, name in enumerate(run["labels"])}
    tokenizer = Tokenizer.from_file(run_dir / "initial.h5")
    task = fit.ClassificationTask(train_examples, [], tokenizer, label2id, settings.batch_size, settings.max_length)
    total = settings.total_steps(task.steps_per_epoch())
    steps = min(steps or total, total)

    hf_dir = export(run_dir / "initial.h5", Path(tempfile.mkdtemp()) / "initial")
    model = transformers.BertForSequenceClassification.from_pretrained(hf_dir, attn_implementation="eager")
    model = (model.double() if run["dtype"] == "float64" else model.float()).eval()  # eval(): no dropout
    names = [n for n, _ in model.named_parameters()]
    decay = set(optim.decay_parameter_names(names))
    params = dict(model.named_parameters())
    opt = torch.optim.AdamW(
        [
            {"params": [params[n] for n in names if n in decay], "weight_decay": settings.weight_decay},
            {"params": [params[n] for n in names if n not in decay], "weight_decay": 0.0},
        ],
        lr=settings.lr,
    )
    scheduler = get_linear_schedule_with_warmup(opt, int(round(settings.warmup_ratio * total)), total)
    history, epoch, index = [], 0, 0
    for step in range(1, steps + 1):
        batch = task.batch(settings.seed, epoch, index)
        tick = time.perf_counter()
        out = model(**{k: torch.from_numpy(v) for k, v in batch.items()})
        out.loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
        lr = opt.param_groups[0]["lr"]
        opt.step()
        scheduler.step()
        opt.zero_grad()
        history.append(
            {
                "step": step,
                "loss": out.loss.item(),
                "lr": lr,
                "grad_norm": float(norm),
                "seconds": time.perf_counter() - tick,
            }
        )
        index += 1
        if index >= task.steps_per_epoch():
            epoch, index = epoch + 1, 0
        if step % 10 == 0:
            print(f"step {step}: loss {out.loss.item():.4f}", flush=True)
            (run_dir / "torch_history.json").write_text(json.dumps(history))
    (run_dir / "torch_history.json").write_text(json.dumps(history))
    return history


def compare(run_dir):
    run_dir = Path(run_dir)
    ours = {r["step"]: r for r in json.loads((run_dir / "history.json").read_text()) if "loss" in r}
    theirs = {r["step"]: r for r in json.loads((run_dir / "torch_history.json").read_text())}
    common = sorted(set(ours) & set(theirs))
    diff = np.array([abs(ours[s]["loss"] - theirs[s]["loss"]) for s in common])
    print(
        f"{len(common)} common steps; max |loss_minibert - loss_torch| = {diff.max():.2e} "
        f"(step {common[int(diff.argmax())]}), "
        f"mean {diff.mean():.2e}; first loss {ours[common[0]]['loss']:.6f} vs {theirs[common[0]]['loss']:.6f}, "
        f"last {ours[common[-1]]['loss']:.6f} vs {theirs[common[-1]]['loss']:.6f}"
    )
    lr_diff = max(abs(ours[s]["lr"] - theirs[s]["lr"]) for s in common)
    print(f"max |lr difference| = {lr_diff:.1e}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    a.plot(common, [ours[s]["loss"] for s in common], lw=1.2, label="minibert (NumPy)")
    a.plot(common, [theirs[s]["loss"] for s in common], "--", lw=1.2, label="PyTorch / transformers")
    a.set_ylabel("training loss")
    a.legend()
    a.grid(alpha=0.3)
    b.semilogy(common, np.maximum(diff, 1e-12), lw=1)
    b.set_ylabel("|difference|")
    b.set_xlabel("step")
    b.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(run_dir / "loss_vs_torch.png", dpi=100)
    return diff


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="replay a minibert finetune run in PyTorch and compare losses")
    parser.add_argument("run_dir")
    parser.add_argument("--steps", type=int, help="replay only the first N steps")
    parser.add_argument("--compare-only", action="store_true", help="compare the existing torch_history.json")
    args = parser.parse_args()
    if not args.compare_only:
        replay(args.run_dir, args.steps)
    compare(args.run_dir)
