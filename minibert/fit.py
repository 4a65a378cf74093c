"""The training loop: fine-tuning a classifier and pretraining BERT from scratch, in NumPy.

One step, in the order of transformers' ``Trainer``::

    loss, grads = train.value_and_grad(model, **batch, rng=dropout_rng)   # forward + backward
    clip_grad_norm(grads, max_grad_norm)                                  # optim.py
    optimizer.step(grads, lr=lr * schedule(step))                         # AdamW, in place

``fit`` runs those steps over a task's batches with a progress bar (loss, learning rate,
tokens/s), dev metrics after each epoch (or every ``eval_steps``), a checkpoint every
``save_steps`` and at the end, and a clean stop on Ctrl-C (the checkpoint is written first).
A run directory holds::

    initial.h5          the starting weights (with the new head): rerun or compare from here
    model.h5            the latest weights, a minibert .h5 file with its head (and id2label)
    trainer_state.h5    AdamW's moments, the step, the position in the data, the history
    history.json        every step's loss, lr, gradient norm, tokens/s, and every evaluation
    loss.png            the loss curve (needs matplotlib: the viz extra)

``resume`` continues from ``trainer_state.h5``: the batches are a pure function of
(seed, epoch, batch index) and dropout's generator of (seed, step), so an interrupted and
resumed run computes exactly what the uninterrupted run does.
"""

import json
import math
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from . import data, optim, train
from . import weights as weights_format
from .api import load
from .config import BertConfig
from .errors import MinibertError
from .heads import BertForMaskedLM
from .tokenizer import Tokenizer, read_vocab_txt
from .weights import WeightsFile, encoder_shapes, file_sha256, has_pooler, head_shapes, read_vocab, save

STATE_FORMAT = "minibert-trainer-state"
STATE_VERSION = 1
INITIALIZER_RANGE = 0.02  # transformers' BertConfig.initializer_range: std of the normal init


class TrainingError(MinibertError, ValueError):
    """A training run cannot start or resume (bad settings, mismatched checkpoint)."""


# ---------------------------------------------------------------------------------------
# Starting points: a new model, a new head
# ---------------------------------------------------------------------------------------


def init_tensor(name, shape, rng, pad_token_id=0):
    """transformers' ``BertPreTrainedModel._init_weights`` for one tensor.

    Linear and embedding weights ~ Normal(0, 0.02), the padding id's embedding row 0; biases 0;
    LayerNorm weight 1, bias 0.
    """
    if name.endswith("LayerNorm.weight"):
        return np.ones(shape, np.float32)
    if name.endswith("bias"):  # every bias, and cls.predictions.bias
        return np.zeros(shape, np.float32)
    w = rng.normal(0.0, INITIALIZER_RANGE, size=shape).astype(np.float32)
    if name == "embeddings.word_embeddings.weight":
        w[pad_token_id] = 0.0  # nn.Embedding(padding_idx=pad_token_id)
    return w


def new_model(config, vocab, do_lower_case, heads, seed, source):
    """A ``WeightsFile`` of a freshly initialised BERT with the given heads (pretraining from scratch)."""
    rng = np.random.default_rng(seed)
    shapes = dict(encoder_shapes(config))
    for head in heads:
        shapes.update(head_shapes(config, head)[0])  # required tensors only: the decoder is tied
    tensors = {name: init_tensor(name, shape, rng, config.pad_token_id) for name, shape in sorted(shapes.items())}
    return WeightsFile(
        config=config, tensors=tensors, vocab=list(vocab), do_lower_case=do_lower_case, heads=list(heads), source=source
    )


def with_classification_head(weights, labels, seed):
    """The encoder of ``weights`` (a WeightsFile) with a new classifier for ``labels`` (names in id order).

    Other heads are dropped (fine-tuning trains the classifier); a pooler is initialised if the
    file has none. A classification head already holding exactly these labels is kept.
    """
    rng = np.random.default_rng(seed)
    config = weights.config
    id2label = dict(enumerate(labels))
    keep_head = "classification" in weights.heads and config.id2label == id2label
    tensors = {n: t for n, t in weights.tensors.items() if n in encoder_shapes(config)}
    if not has_pooler(tensors):
        for name in ("pooler.dense.weight", "pooler.dense.bias"):
            tensors[name] = init_tensor(name, encoder_shapes(config)[name], rng)
    H = config.hidden_size
    if keep_head:
        tensors["classifier.weight"] = weights.tensors["classifier.weight"]
        tensors["classifier.bias"] = weights.tensors["classifier.bias"]
    else:
        tensors["classifier.weight"] = init_tensor("classifier.weight", (len(labels), H), rng)
        tensors["classifier.bias"] = init_tensor("classifier.bias", (len(labels),), rng)
    new_config = BertConfig.from_dict({**config.to_dict(), "id2label": id2label})
    return type(weights)(
        config=new_config,
        tensors=tensors,
        vocab=weights.vocab,
        do_lower_case=weights.do_lower_case,
        heads=["classification"],
        source=weights.source,
        source_sha256=weights.source_sha256,
    )


def model_weights_file(model, template):
    """The model's current tensors as a WeightsFile with the template's config, vocab and heads."""
    tensors = {name: np.array(model.weights[name]) for name in template.tensors}
    return WeightsFile(
        config=template.config,
        tensors=tensors,
        vocab=template.vocab,
        do_lower_case=template.do_lower_case,
        heads=template.heads,
        source=template.source,
        source_sha256=template.source_sha256,
    )


# ---------------------------------------------------------------------------------------
# Tasks: where the batches come from and how a model is evaluated
# ---------------------------------------------------------------------------------------


def log_softmax(logits):  # [N, C] -> [N, C], in float64
    z = logits.astype(np.float64) - logits.max(-1, keepdims=True)  # [N, C]
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


class ClassificationTask:
    """Fine-tuning on labelled texts or pairs: ``classification`` or ``pair-classification``."""

    head = "classification"

    def __init__(self, train, dev, tokenizer, label2id, batch_size, max_length):
        self.train, self.dev = train, dev
        self.tokenizer, self.label2id = tokenizer, label2id
        self.batch_size, self.max_length = batch_size, max_length

    def steps_per_epoch(self):
        return math.ceil(len(self.train) / self.batch_size)

    def batch(self, seed, epoch, index):
        order = data.epoch_order(len(self.train), seed, epoch)[index * self.batch_size : (index + 1) * self.batch_size]
        return data.classification_batch([self.train[i] for i in order], self.tokenizer, self.label2id, self.max_length)

    def evaluate(self, model):
        """Accuracy and mean cross-entropy on the dev examples (no dropout)."""
        if not self.dev:
            return {}
        correct, total_loss = 0, 0.0
        for start in range(0, len(self.dev), self.batch_size):
            b = data.classification_batch(
                self.dev[start : start + self.batch_size], self.tokenizer, self.label2id, self.max_length
            )
            logits = model(b["input_ids"], b["attention_mask"], b["token_type_ids"]).logits  # [B, N]
            logp = log_softmax(logits)  # [B, N]
            total_loss -= logp[np.arange(len(b["labels"])), b["labels"]].sum()
            correct += int((logits.argmax(-1) == b["labels"]).sum())
        return {"dev_loss": total_loss / len(self.dev), "dev_accuracy": correct / len(self.dev)}


class PretrainingTask:
    """Masked-LM and next-sentence prediction on a corpus (documents of sentences).

    An "epoch" is as many batches as the corpus has sentence starts; each batch draws its pairs
    and masks from ``batch_rng(seed, epoch, index)``. The dev set is a fixed list of batches
    drawn from held-out documents.
    """

    head = "pretraining"

    def __init__(self, documents, dev_documents, tokenizer, batch_size, max_length, dev_batches=8, seed=0):
        self.documents, self.tokenizer = documents, tokenizer
        self.batch_size, self.max_length = batch_size, max_length
        self.dev = (
            [
                data.pretraining_batch(
                    dev_documents, tokenizer, data.batch_rng(seed, 0, i, stream=1), batch_size, max_length
                )
                for i in range(dev_batches)
            ]
            if dev_documents
            else []
        )

    def steps_per_epoch(self):
        starts = sum(len(doc) - 1 for doc in self.documents)
        return max(1, starts // self.batch_size)

    def batch(self, seed, epoch, index):
        return data.pretraining_batch(
            self.documents, self.tokenizer, data.batch_rng(seed, epoch, index), self.batch_size, self.max_length
        )

    def evaluate(self, model):
        return evaluate_pretraining(model, self.dev) if self.dev else {}


def evaluate_pretraining(model, batches, top_k=5):
    """Masked-LM loss and top-1/top-k accuracy on the masked tokens; next-sentence loss and accuracy.

    ``model``: a pretraining (or masked-LM) head model. The masked-LM loss is the mean over every
    masked token of every batch (what transformers' loss is for a single batch).
    """
    mlm = BertForMaskedLM(model.bert)  # the same encoder and weights, masked-LM logits only at the chosen positions
    nll, hits1, hitsk, tokens, nsp_nll, nsp_correct, pairs = 0.0, 0, 0, 0, 0.0, 0, 0
    for b in batches:
        chosen = b["labels"] != data.IGNORE_INDEX  # [B, T]
        out = mlm(b["input_ids"], b["attention_mask"], b["token_type_ids"], positions=chosen)
        target = b["labels"][chosen]  # [N]
        logp = log_softmax(out.logits)  # [N, V]
        nll -= logp[np.arange(len(target)), target].sum()
        ranks = (logp > logp[np.arange(len(target)), target][:, None]).sum(-1)  # [N]: how many tokens score higher
        hits1 += int((ranks == 0).sum())
        hitsk += int((ranks < top_k).sum())
        tokens += len(target)
        if "next_sentence_label" in b and "cls.seq_relationship.weight" in model.weights:
            w = model.weights
            nsp_logits = model.F.linear(
                out.pooler_output, w["cls.seq_relationship.weight"], w["cls.seq_relationship.bias"]
            )  # [B, 2]
            y = b["next_sentence_label"]
            nsp_nll -= log_softmax(nsp_logits)[np.arange(len(y)), y].sum()
            nsp_correct += int((nsp_logits.argmax(-1) == y).sum())
            pairs += len(y)
    metrics = {"dev_mlm_loss": nll / tokens, "dev_mlm_accuracy": hits1 / tokens, f"dev_mlm_top{top_k}": hitsk / tokens}
    if pairs:
        metrics.update(dev_nsp_loss=nsp_nll / pairs, dev_nsp_accuracy=nsp_correct / pairs)
    return metrics


# ---------------------------------------------------------------------------------------
# Settings and saved state
# ---------------------------------------------------------------------------------------


@dataclass
class Settings:
    """Hyper-parameters of a run (saved with every checkpoint; a resumed run must use the same)."""

    epochs: float = 3.0
    max_steps: Optional[int] = None  # overrides epochs
    batch_size: int = 16
    lr: float = 5e-5
    warmup_ratio: float = 0.1  # fraction of the steps with a rising learning rate
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    max_length: int = 128
    seed: int = 0
    dropout: bool = True  # the config's dropout probabilities; False: deterministic (parity runs)
    save_steps: int = 500
    eval_steps: Optional[int] = None  # evaluate every N steps; default after each epoch
    max_minutes: Optional[float] = None  # stop (with a checkpoint) after this much time

    def total_steps(self, steps_per_epoch):
        return self.max_steps if self.max_steps else max(1, int(round(self.epochs * steps_per_epoch)))


# Settings that do not change what is computed: a resumed run may change them.
BOOKKEEPING = ("save_steps", "eval_steps", "max_minutes")


@dataclass
class Progress:
    step: int = 0  # optimiser steps done
    epoch: int = 0
    index: int = 0  # next batch within the epoch
    seconds: float = 0.0  # training time so far
    history: list = field(default_factory=list)


def _sha256(path):
    return file_sha256(path)


def save_state(out_dir, optimizer, progress, settings, model_sha256):
    """Write trainer_state.h5 (atomically): AdamW's moments, the progress, the settings."""
    import h5py

    path = Path(out_dir) / "trainer_state.h5"
    tmp = path.with_name(path.name + ".partial")
    with h5py.File(tmp, "w") as f:
        f.attrs["format"] = STATE_FORMAT
        f.attrs["format_version"] = STATE_VERSION
        f.attrs["model_sha256"] = model_sha256
        f.attrs["settings"] = json.dumps(asdict(settings))
        f.attrs["progress"] = json.dumps({k: v for k, v in asdict(progress).items() if k != "history"})
        f.attrs["history"] = json.dumps(progress.history)
        f.attrs["step_count"] = optimizer.step_count
        for key in ("exp_avg", "exp_avg_sq"):
            g = f.create_group(key)
            for name, value in getattr(optimizer, key).items():
                g.create_dataset(name, data=value)
    tmp.replace(path)


def check_resumable(out_dir):
    for name in ("trainer_state.h5", "model.h5"):
        if not (Path(out_dir) / name).is_file():
            raise TrainingError(
                f"{Path(out_dir) / name}: no trainer state to resume from",
                "start a new run (without --resume), or point --out at the directory of the run to continue",
            )


def load_state(out_dir):
    """(optimizer state dict, Progress, settings dict, model sha256) from trainer_state.h5."""
    import h5py

    path = Path(out_dir) / "trainer_state.h5"
    if not path.is_file():
        raise TrainingError(
            f"{path}: no trainer state to resume from",
            "start a new run (without --resume), or point --out at a run directory",
        )
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != STATE_FORMAT or int(f.attrs.get("format_version", -1)) != STATE_VERSION:
            raise TrainingError(f"{path}: not a minibert trainer state (version {STATE_VERSION})", "start a new run")
        state = {
            "step_count": int(f.attrs["step_count"]),
            "exp_avg": {n: d[()] for n, d in f["exp_avg"].items()},
            "exp_avg_sq": {n: d[()] for n, d in f["exp_avg_sq"].items()},
        }
        progress = Progress(**json.loads(f.attrs["progress"]), history=json.loads(f.attrs["history"]))
        return state, progress, json.loads(f.attrs["settings"]), str(f.attrs["model_sha256"])


# ---------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------


class StopRequest:
    """Turns the first Ctrl-C (SIGINT) into a request to stop after the current step."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        self.previous = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, self.handle)
        return self

    def handle(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, self.previous)  # a second Ctrl-C interrupts at once

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self.previous)


def fit(model, task, settings, out_dir, template, resume=False, log=None):
    """Train ``model`` (a head model from ``minibert.load(..., head=task.head)``) in place.

    ``template``: the WeightsFile the model was loaded from (config, vocab, heads of the
    checkpoints). Returns the Progress; ``progress.interrupted`` is True after a Ctrl-C.
    """
    log = log or (lambda message: print(message, file=sys.stderr))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    steps_per_epoch = task.steps_per_epoch()
    total_steps = settings.total_steps(steps_per_epoch)
    schedule = optim.linear_schedule_with_warmup(int(round(settings.warmup_ratio * total_steps)), total_steps)
    optimizer = optim.AdamW(model.weights, lr=settings.lr, weight_decay=settings.weight_decay)
    progress = Progress()
    if resume:
        state, progress, saved_settings, model_sha = load_state(out_dir)
        if model_sha != _sha256(out_dir / "model.h5"):
            raise TrainingError(
                f"{out_dir}: model.h5 is not the file trainer_state.h5 was saved with",
                "the run directory was changed by hand; start a new run",
            )
        changed = sorted(
            k for k in saved_settings if k not in BOOKKEEPING and saved_settings[k] != asdict(settings).get(k)
        )
        if changed:
            raise TrainingError(
                f"{out_dir}: the run was started with other settings ({', '.join(changed)})",
                "resume with the same options as the original run",
            )
        optimizer.load_state_dict(state, source=str(out_dir / "trainer_state.h5"))

    def checkpoint():
        path = save(out_dir / "model.h5", model_weights_file(model, template))
        save_state(out_dir, optimizer, progress, settings, _sha256(path))
        write_history(out_dir, progress.history)

    bar = progress_bar(total_steps, progress.step)
    stop = StopRequest()
    interrupted = False
    started = time.perf_counter() - progress.seconds  # training time, over every session of the run
    session_start = time.perf_counter()  # max_minutes counts this invocation only
    with stop:
        while progress.step < total_steps:
            tick = time.perf_counter()
            batch = task.batch(settings.seed, progress.epoch, progress.index)
            rng = np.random.default_rng([settings.seed, progress.step, 1]) if settings.dropout else None
            loss, grads = train.value_and_grad(model, **batch, rng=rng)
            grad_norm = optim.clip_grad_norm(grads, settings.max_grad_norm)
            lr = settings.lr * schedule(optimizer.step_count)
            optimizer.step(grads, lr=lr)
            progress.step += 1
            progress.index += 1
            seconds = time.perf_counter() - tick
            progress.seconds = time.perf_counter() - started
            tokens = int(np.asarray(batch["attention_mask"]).sum())
            record = {
                "step": progress.step,
                "epoch": progress.epoch,
                "loss": float(loss),
                "lr": lr,
                "grad_norm": grad_norm,
                "tokens_per_s": tokens / seconds,
                "seconds": progress.seconds,
            }
            progress.history.append(record)
            bar.update(record)
            epoch_done = progress.index >= steps_per_epoch
            if epoch_done:
                progress.epoch += 1
                progress.index = 0
            if (
                (settings.eval_steps and progress.step % settings.eval_steps == 0)
                or (not settings.eval_steps and epoch_done)
                or progress.step == total_steps
            ):
                metrics = task.evaluate(model)
                if metrics:
                    progress.history.append({"step": progress.step, "epoch": progress.epoch, **metrics})
                    bar.write(
                        f"step {progress.step} (epoch {progress.epoch}): "
                        + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
                    )
            if stop.requested:
                interrupted = True
                break
            if settings.max_minutes is not None and time.perf_counter() - session_start > 60 * settings.max_minutes:
                bar.write(f"time limit of {settings.max_minutes} min reached at step {progress.step}")
                break
            if progress.step % settings.save_steps == 0 and progress.step < total_steps:
                checkpoint()
        bar.close()
        checkpoint()
    plot_history(out_dir, progress.history, log)
    how = "interrupted" if interrupted else "finished" if progress.step == total_steps else "stopped"
    log(
        f"{how} at step {progress.step}/{total_steps}; checkpoint: {out_dir / 'model.h5'} (+ trainer_state.h5)"
        + ("" if how == "finished" else "; continue with --resume")
    )
    progress.interrupted = interrupted
    return progress


def start_run(out_dir, template, **run):
    """A new run directory: initial.h5 (the starting weights) and run.json (what started it)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    save(out_dir / "initial.h5", template)
    write_run(out_dir, **run)


def load_run(out_dir, head, resume, dtype, backend):
    """(model, tokenizer) of a run: its initial.h5, or the last checkpoint when resuming."""
    start = out_dir / ("model.h5" if resume else "initial.h5")
    return load(start, head=head, dtype=dtype, backend=backend), Tokenizer.from_file(start)


def write_run(out_dir, **run):
    """run.json: what started the run (inputs, settings), to rerun or replay it elsewhere."""
    (Path(out_dir) / "run.json").write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")


def write_history(out_dir, history):
    path = Path(out_dir) / "history.json"
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(history, indent=0))
    tmp.replace(path)


class progress_bar:
    """tqdm when installed (loss, lr, tokens/s in the postfix), else a line every 10 steps."""

    def __init__(self, total, initial):
        try:
            from tqdm import tqdm
        except ImportError:
            tqdm = None
        self.tqdm = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True) if tqdm else None

    def update(self, r):
        text = f"loss {r['loss']:.4f} lr {r['lr']:.2e} {r['tokens_per_s']:.0f} tok/s"
        if self.tqdm is not None:
            self.tqdm.set_postfix_str(text, refresh=False)
            self.tqdm.update(1)
        elif r["step"] % 10 == 0:
            print(f"step {r['step']}: {text}", file=sys.stderr)

    def write(self, message):
        if self.tqdm is not None:
            self.tqdm.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr)

    def close(self):
        if self.tqdm is not None:
            self.tqdm.close()


def plot_history(out_dir, history, log):
    """loss.png: the training loss of every step (and its moving average) and the dev losses."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("no loss.png: matplotlib is not installed (pip install 'minibert[viz]')")
        return None
    steps = [r["step"] for r in history if "loss" in r]
    losses = [r["loss"] for r in history if "loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, losses, lw=0.6, alpha=0.5, label="training loss (each step)")
    if len(losses) >= 20:
        k = max(5, len(losses) // 50)
        ax.plot(
            steps[k - 1 :],
            np.convolve(losses, np.ones(k) / k, mode="valid"),
            lw=1.5,
            label=f"moving average ({k} steps)",
        )
    for key in ("dev_loss", "dev_mlm_loss"):
        points = [(r["step"], r[key]) for r in history if key in r]
        if points:
            ax.plot(*zip(*points), "o-", label=key.replace("_", " "))
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(out_dir) / "loss.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------
# The two commands' bodies (cli.py parses, these build the run)
# ---------------------------------------------------------------------------------------


def finetune(
    model_path,
    train_path,
    out_dir,
    task="classification",
    dev_path=None,
    labels=None,
    settings=None,
    resume=False,
    dtype="float32",
    backend="numba",
    log=None,
):
    """``minibert finetune``: a classifier on top of ``model_path``'s encoder, trained on the file."""
    settings = settings or Settings()
    log = log or (lambda message: print(message, file=sys.stderr))
    train_examples = data.read_examples(train_path, task)
    label2id = data.label_set(train_examples, labels, path=str(train_path))
    dev_examples = data.read_examples(dev_path, task) if dev_path else []
    if dev_examples:
        data.label_set(dev_examples, list(label2id), path=str(dev_path))
    out_dir = Path(out_dir)
    if resume:
        check_resumable(out_dir)
        template = weights_format.load(out_dir / "model.h5")
        if list(template.config.id2label.values()) != list(label2id):
            raise TrainingError(
                f"{out_dir}/model.h5 has labels {list(template.config.id2label.values())}, the data {list(label2id)}",
                "resume with the same --labels and data",
            )
    else:
        source = weights_format.load(model_path)
        if not source.vocab:
            raise TrainingError(
                f"{model_path}: the file holds no vocabulary to tokenize the data with",
                "convert the model from a directory that has vocab.txt",
            )
        template = with_classification_head(source, list(label2id), settings.seed)
        start_run(out_dir, template, command="finetune", model=str(model_path), train=str(train_path),
                  dev=dev_path and str(dev_path), task=task, labels=list(label2id), settings=asdict(settings),
                  dtype=dtype, backend=backend)
    model, tokenizer = load_run(out_dir, "classification", resume, dtype, backend)
    log(
        f"fine-tuning {model_path} ({task}, labels {', '.join(label2id)}): {len(train_examples)} training examples, "
        f"{len(dev_examples)} dev; run directory {out_dir}"
    )
    t = ClassificationTask(train_examples, dev_examples, tokenizer, label2id, settings.batch_size, settings.max_length)
    return fit(model, t, settings, out_dir, template, resume=resume, log=log)


def pretrain(
    corpus_path,
    vocab_path,
    out_dir,
    preset="bert-tiny",
    dev_fraction=0.02,
    settings=None,
    resume=False,
    dtype="float32",
    backend="numba",
    log=None,
):
    """``minibert pretrain``: BERT of a preset shape from scratch, masked-LM + next-sentence on a corpus.

    The last ``dev_fraction`` of the documents (at least 2) are held out for the dev metrics.
    """
    settings = settings or Settings(lr=1e-4, warmup_ratio=0.01)
    log = log or (lambda message: print(message, file=sys.stderr))
    documents = data.read_corpus(corpus_path)
    n_dev = max(2, int(round(dev_fraction * len(documents)))) if dev_fraction > 0 else 0
    if len(documents) - n_dev < 2:
        raise TrainingError(
            f"{corpus_path}: {len(documents)} documents leave fewer than 2 for training after {n_dev} held out",
            "use a larger corpus or --dev-fraction 0",
        )
    train_docs, dev_docs = documents[: len(documents) - n_dev], documents[len(documents) - n_dev :]
    out_dir = Path(out_dir)
    if resume:
        check_resumable(out_dir)
        template = weights_format.load(out_dir / "model.h5")
    else:
        tokenizer = Tokenizer.from_file(vocab_path)  # checks the special tokens
        if str(vocab_path).endswith((".h5", ".hdf5")):
            vocab = read_vocab(vocab_path)[0]
        else:
            vocab = read_vocab_txt(vocab_path)
        config = BertConfig.preset(preset)
        config.vocab_size = len(vocab)
        config = BertConfig.from_dict(config.to_dict())  # re-validated
        template = new_model(
            config,
            vocab,
            tokenizer.do_lower_case,
            ["masked-lm", "next-sentence"],
            settings.seed,
            source=f"minibert pretrain --preset {preset} (seed {settings.seed})",
        )
        start_run(out_dir, template, command="pretrain", corpus=str(corpus_path), vocab=str(vocab_path), preset=preset,
                  dev_fraction=dev_fraction, settings=asdict(settings), dtype=dtype, backend=backend)
    model, tokenizer = load_run(out_dir, "pretraining", resume, dtype, backend)
    log(
        f"pretraining {preset} on {corpus_path}: {len(train_docs)} documents ({sum(map(len, train_docs))} sentences), "
        f"{len(dev_docs)} held out; run directory {out_dir}"
    )
    t = PretrainingTask(train_docs, dev_docs, tokenizer, settings.batch_size, settings.max_length, seed=settings.seed)
    return fit(model, t, settings, out_dir, template, resume=resume, log=log)


def evaluate_file(
    model_path, path, task="classification", batch_size=32, max_length=128, dtype="float32", backend="numba"
):
    """Accuracy and mean cross-entropy of a classifier (.h5 with a classification head) on a labelled file."""
    model = load(model_path, head="classification", dtype=dtype, backend=backend)
    label2id = {name: i for i, name in sorted(model.id2label.items())}
    examples = data.read_examples(path, task)
    data.label_set(examples, list(label2id), path=str(path))
    t = ClassificationTask([], examples, Tokenizer.from_file(model_path), label2id, batch_size, max_length)
    metrics = t.evaluate(model)
    return {"accuracy": metrics["dev_accuracy"], "loss": metrics["dev_loss"], "examples": len(examples)}
