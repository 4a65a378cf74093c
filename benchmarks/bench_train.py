"""One training step of minibert against PyTorch eager, in one process, interleaved; and peak memory.

    python benchmarks/bench_train.py                       # bert-tiny and MiniLM-L6 at (8, 128) and (32, 128)
    python benchmarks/bench_train.py --models bert-tiny --workloads 8x128 --budget 5

A training step is what `minibert finetune` does per batch, on a sequence-classification model
(2 labels, the new head initialised as transformers does), float32, dropout on as in training:

    minibert   loss, grads = train.value_and_grad(model, ids, mask, labels=y, rng=rng)
               optim.clip_grad_norm(grads, 1.0); optimizer.step(grads)        (AdamW, optim.py)
    PyTorch    out = model(ids, mask, labels=y); out.loss.backward()
               clip_grad_norm_(params, 1.0); optimizer.step(); optimizer.zero_grad()
               (transformers BertForSequenceClassification, train() mode, default attention,
               torch.optim.AdamW with the Trainer's parameter groups, torch.set_num_threads(2))

Timing: both engines warmed up (2 steps), then steps alternate (minibert, torch, minibert, ...)
until the time budget is spent; the median step time and the ratio torch / minibert (> 1:
minibert faster) are reported. Memory: each engine, model and workload in a fresh process; the
peak resident memory (VmHWM, reset through /proc/self/clear_refs after the model is loaded and
before the optimiser exists) over 2 steps, minus the resident memory at that point: what a step
adds (activations kept for the backward, gradients, AdamW's two moments).

Like bench.py, the process unsets OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE (for itself only) and
makes OpenBLAS and OpenMP threads sleep when idle. Needs the bench extra. Results go to
benchmarks/results/<UTC date>-train.json.
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

for _name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
    os.environ.pop(_name, None)  # this process only: OpenBLAS picks its kernels for the real CPU
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import minibert  # noqa: E402
from minibert import fit, optim  # noqa: E402

THREADS = 2
MODELS = ["bert-tiny", "MiniLM-L6"]
WORKLOADS = [(8, 128), (32, 128)]


def build(name, workdir):
    """(minibert .h5 with a 2-label classification head, its Hugging Face export directory)."""
    from bench import minilm_checkpoint, preset_checkpoint

    from minibert.export import export
    from minibert.weights import load, save

    hf = minilm_checkpoint() if name == "MiniLM-L6" else preset_checkpoint(name, workdir)
    encoder = minibert.convert(hf, Path(workdir) / f"{name}-encoder.h5")
    w = load(encoder)
    if not w.vocab:  # the seeded random presets come without a vocabulary; export needs one
        w.vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [
            f"[unused{i}]" for i in range(w.config.vocab_size - 5)
        ]
    h5 = save(Path(workdir) / f"{name}.h5", fit.with_classification_head(w, ["a", "b"], seed=0))
    return h5, export(h5, Path(workdir) / f"{name}-hf")


def inputs(B, T, vocab_size, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.integers(1000 if vocab_size > 2000 else 5, vocab_size, size=(B, T)),
        np.ones((B, T), np.int64),
        rng.integers(0, 2, size=B),
    )


def minibert_step_fn(h5):
    from minibert import train

    model = minibert.load(h5, head="classification")  # float32, numba backend: the defaults
    state = {}

    def step(ids, mask, y):
        if "opt" not in state:
            state["opt"], state["rng"] = optim.AdamW(model.weights, lr=1e-5), np.random.default_rng(0)
        loss, grads = train.value_and_grad(model, ids, attention_mask=mask, labels=y, rng=state["rng"])
        optim.clip_grad_norm(grads, 1.0)
        state["opt"].step(grads)
        return loss

    return step


def torch_step_fn(hf_dir):
    import torch
    import transformers

    torch.set_num_threads(THREADS)
    model = transformers.BertForSequenceClassification.from_pretrained(hf_dir).train()  # default attention, dropout on
    state = {}

    def step(ids, mask, y):
        if "opt" not in state:
            names = [n for n, _ in model.named_parameters()]
            decay = set(optim.decay_parameter_names(names))
            params = dict(model.named_parameters())
            state["opt"] = torch.optim.AdamW(
                [
                    {"params": [params[n] for n in names if n in decay], "weight_decay": 0.01},
                    {"params": [params[n] for n in names if n not in decay], "weight_decay": 0.0},
                ],
                lr=1e-5,
            )
        out = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), labels=torch.from_numpy(y))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        state["opt"].step()
        state["opt"].zero_grad(set_to_none=True)
        return out.loss.item()

    return step


def rss_kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def memory_child(engine, h5, hf_dir, B, T):
    """Peak memory a training step adds, in MiB (run in a fresh process)."""
    step = minibert_step_fn(h5) if engine == "minibert" else torch_step_fn(hf_dir)
    ids, mask, y = inputs(B, T, minibert.weights.read_config(h5).vocab_size)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident size
    base = rss_kib("VmRSS")
    for _ in range(2):
        step(ids, mask, y)
    print(json.dumps({"peak_step_mib": (rss_kib("VmHWM") - base) / 1024, "base_mib": base / 1024}))


def measure_memory(engine, h5, hf_dir, B, T):
    argv = [sys.executable, __file__, "--memory-child", engine, str(h5), str(hf_dir), str(B), str(T)]
    out = subprocess.run(argv, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"error: the memory measurement of {engine} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    parser.add_argument("--workloads", nargs="+", default=[f"{b}x{t}" for b, t in WORKLOADS])
    parser.add_argument("--budget", type=float, default=20.0, help="seconds of timed steps per model and workload")
    parser.add_argument("--min-reps", type=int, default=3)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--memory-child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        engine, h5, hf_dir, B, T = args.memory_child
        return memory_child(engine, h5, hf_dir, int(B), int(T))
    workloads = [tuple(int(v) for v in w.split("x")) for w in args.workloads]
    load = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.models:
            h5, hf_dir = build(name, workdir)
            engines = {"minibert": minibert_step_fn(h5), "torch": torch_step_fn(hf_dir)}
            vocab_size = minibert.weights.read_config(h5).vocab_size
            for B, T in workloads:
                ids, mask, y = inputs(B, T, vocab_size)
                for step in engines.values():
                    for _ in range(2):
                        step(ids, mask, y)
                times = {e: [] for e in engines}
                start = time.perf_counter()
                while min(len(t) for t in times.values()) < args.min_reps or time.perf_counter() - start < args.budget:
                    for e, step in engines.items():
                        tick = time.perf_counter()
                        step(ids, mask, y)
                        times[e].append(time.perf_counter() - tick)
                row = {
                    "model": name,
                    "B": B,
                    "T": T,
                    **{f"{e}_ms": 1e3 * statistics.median(t) for e, t in times.items()},
                    "reps": len(times["minibert"]),
                }
                row["ratio"] = row["torch_ms"] / row["minibert_ms"]
                if not args.no_memory:
                    for e in engines:
                        row[f"{e}_peak_step_mib"] = measure_memory(e, h5, hf_dir, B, T)["peak_step_mib"]
                rows.append(row)
                print(
                    f"{name} ({B}, {T}): minibert {row['minibert_ms']:.0f} ms, torch {row['torch_ms']:.0f} ms, "
                    f"ratio {row['ratio']:.2f}x"
                    + (
                        ""
                        if args.no_memory
                        else f"; peak step memory minibert {row['minibert_peak_step_mib']:.0f} MiB, "
                        f"torch {row['torch_peak_step_mib']:.0f} MiB"
                    ),
                    flush=True,
                )
    load_after = os.getloadavg()
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "load_average_before": load,
        "load_average_after": load_after,
        "cpu_count": os.cpu_count(),
        "rows": rows,
    }
    out = HERE / "results" / f"{datetime.date.today().isoformat()}-train.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"load average before {load[0]:.1f}, after {load_after[0]:.1f} (1 min) on {os.cpu_count()} cores; wrote {out}"
    )
    print(
        "| model | (B, T) | minibert ms | PyTorch ms | ratio (> 1: minibert faster) "
        "| peak step MiB minibert / PyTorch |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        mem = "" if args.no_memory else f"{r['minibert_peak_step_mib']:.0f} / {r['torch_peak_step_mib']:.0f}"
        print(
            f"| {r['model']} | ({r['B']}, {r['T']}) | {r['minibert_ms']:.0f} | {r['torch_ms']:.0f} "
            f"| {r['ratio']:.2f}x | {mem} |"
        )


if __name__ == "__main__":
    main()
