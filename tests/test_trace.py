"""Step-through debugging: capture, save/load, patch, break, compare, the PyTorch reference, CLI.

Most tests use the seeded random bert-tiny (fast); the command-line parity tests run on the
real all-MiniLM-L6-v2, converted by our converter.
"""

import inspect
import re
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

import minibert
from minibert import Trace, compare, ops, reference
from minibert.cli import ALIAS_BEGIN, ALIAS_END, DOC_BEGIN, DOC_END, alias_table, hook_table, main
from minibert.errors import InputError
from minibert.hooks import hook_points
from minibert.inputs import DEFAULT_BACKEND, check_inputs
from minibert.trace import Recorder, resolve_name

from helpers import FIXTURES, padded_inputs

DOC = Path(__file__).resolve().parent.parent / "docs" / "debugging.md"
DTYPES = ["float32", "float64"]


# ---------------------------------------------------------------------------------------
# Hook points
# ---------------------------------------------------------------------------------------


def test_hook_points_are_the_steps_of_the_forward_pass(tiny):
    model = minibert.load(tiny)
    t = model.trace(*padded_inputs())
    points = hook_points(model.config)
    assert [name for name, _ in points] == list(t)  # same names, same execution order
    B, T = 2, 7
    H, A, I = 128, 2, 512
    sizes = {"B": B, "T": T, "H": H, "A": A, "D": H // A, "I": I, "1": 1}
    for name, symbolic in points:
        expected = tuple(sizes[s] for s in symbolic.strip("[]").split(", "))
        assert t.shapes[name] == expected, name
    assert len(points) == 5 + 12 * model.config.num_hidden_layers + 2
    assert dict(points)["encoder.layer.1.attention.self.probs"] == "[B, A, T, T]"
    assert dict(points)["encoder.layer.0.intermediate.gelu"] == "[B, T, I]"


def test_doc_hook_table_is_generated_from_the_code():
    """docs/debugging.md holds exactly hook_table().

    Regenerate with `python -m minibert hooks --write-doc docs/debugging.md`."""
    text = DOC.read_text(encoding="utf-8")
    table = text.split(DOC_BEGIN, 1)[1].split(DOC_END, 1)[0].strip()
    assert table == hook_table()
    aliases = text.split(ALIAS_BEGIN, 1)[1].split(ALIAS_END, 1)[0].strip()
    assert aliases == alias_table()


def test_transformerlens_aliases_resolve():
    assert resolve_name("blocks.0.attn.hook_pattern") == "encoder.layer.0.attention.self.probs"
    assert resolve_name("blocks.*.attn.hook_z") == "encoder.layer.*.attention.self.context"
    assert resolve_name("blocks.3.mlp.hook_post") == "encoder.layer.3.intermediate.gelu"
    assert resolve_name("embed.hook_embed") == "embeddings.word_embeddings"
    assert resolve_name("embed.hook_pos_embed") == "embeddings.position_embeddings"
    assert resolve_name("blocks.2.ln1.hook_normalized") == "encoder.layer.2.attention.output.LayerNorm"
    assert resolve_name("blocks.0.hook_resid_mid") == "blocks.0.hook_resid_mid"  # TL's sum before LayerNorm: no twin
    assert resolve_name("encoder.layer.0.*") == "encoder.layer.0.*"  # our names pass through


# ---------------------------------------------------------------------------------------
# Capture
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_trace_values_are_the_model_outputs(tiny, dtype):
    model = minibert.load(tiny, dtype=dtype)
    inputs = padded_inputs()
    out = model(*inputs, output_hidden_states=True, output_attentions=True)
    t = model.trace(*inputs)
    np.testing.assert_array_equal(t["embeddings.LayerNorm"], out.hidden_states[0])
    for i in range(model.config.num_hidden_layers):
        np.testing.assert_array_equal(t[f"encoder.layer.{i}.output.LayerNorm"], out.hidden_states[i + 1])
        np.testing.assert_array_equal(t[f"encoder.layer.{i}.attention.self.probs"], out.attentions[i])
    np.testing.assert_array_equal(t["pooler"], out.pooler_output)
    assert all(v.dtype == np.dtype(dtype) for v in t.values.values())
    assert t.meta["dtype"] == dtype and t.meta["producer"] == "minibert"
    assert t.meta["source_file"].endswith("model.py")


def test_only_keeps_matching_steps_in_order(tiny):
    model = minibert.load(tiny)
    full = model.trace(*padded_inputs())
    layer0 = model.trace(*padded_inputs(), only=["encoder.layer.0.*"])
    assert list(layer0) == [n for n in full if n.startswith("encoder.layer.0.")]
    assert len(layer0) == 12
    probs = model.trace(*padded_inputs(), only="blocks.*.attn.hook_pattern")  # TransformerLens alias
    assert list(probs) == ["encoder.layer.0.attention.self.probs", "encoder.layer.1.attention.self.probs"]
    np.testing.assert_array_equal(probs["blocks.1.attn.hook_pattern"], full["encoder.layer.1.attention.self.probs"])
    with pytest.raises(InputError, match="names no step"):
        model.trace(*padded_inputs(), only=["encoder.layer.0.attention.self.probz"])
    with pytest.raises(KeyError, match="not in this trace"):
        layer0["pooler"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_save_load_round_trip_is_exact(tiny, tmp_path, dtype):
    model = minibert.load(tiny, dtype=dtype)
    t = model.trace(*padded_inputs(), only=["embeddings.*", "encoder.layer.1.*", "pooler"])
    path = t.save(tmp_path / "trace.h5")
    back = Trace.load(path)
    assert list(back) == list(t)
    for name in t:
        assert back[name].dtype == t[name].dtype
        np.testing.assert_array_equal(back[name], t[name])
    assert {k: v for k, v in back.meta.items() if k != "inputs"} == {k: v for k, v in t.meta.items() if k != "inputs"}
    for name, a in t.meta["inputs"].items():
        np.testing.assert_array_equal(back.meta["inputs"][name], a)
        assert back.meta["inputs"][name].dtype == a.dtype
    assert back.meta["model_file"] == str(tiny)


def test_load_rejects_other_files(tiny, tmp_path):
    with pytest.raises(InputError, match="not a minibert trace"):
        Trace.load(tiny)  # a weights file, not a trace
    with pytest.raises(InputError, match="not found"):
        Trace.load(tmp_path / "nothing.h5")


def test_summary_is_a_readable_table(tiny):
    t = minibert.load(tiny).trace(*padded_inputs(), only=["pooler"])
    text = t.summary()
    header, row = text.splitlines()
    assert header.split()[:6] == ["name", "shape", "mean", "std", "min", "max"]
    p = t["pooler"].astype(np.float64)
    assert row.startswith("pooler") and "(2, 128)" in row
    for stat in (p.mean(), p.std(), p.min(), p.max(), p.ravel()[0]):
        assert f"{stat:.4g}" in row


# ---------------------------------------------------------------------------------------
# Intervene
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_zeroing_one_head_changes_the_layer_exactly_as_computed_by_hand(tiny, dtype):
    model = minibert.load(tiny, dtype=dtype, backend="numpy")  # the hand computation below uses ops, bit for bit
    w, cfg, p = model.weights, model.config, "encoder.layer.0."
    head = 1

    def zero_head(probs):  # [B, A, T, T]
        probs = probs.copy()
        probs[:, head] = 0.0
        return probs

    clean = model.trace(*padded_inputs())
    t = model.trace(*padded_inputs(), patch={p + "attention.self.probs": zero_head})
    assert t.meta["patched"] == [p + "attention.self.probs"]
    # Everything before the patched step is untouched; the patched value is what flows on.
    for name in list(clean)[: list(clean).index(p + "attention.self.probs")]:
        np.testing.assert_array_equal(t[name], clean[name])
    np.testing.assert_array_equal(t[p + "attention.self.probs"][:, head], 0.0)
    np.testing.assert_array_equal(t[p + "attention.self.probs"][:, 0], clean[p + "attention.self.probs"][:, 0])

    # The rest of layer 0, recomputed in NumPy from the patched value with ops:
    x = t["embeddings.LayerNorm"]  # [B, T, H]
    v = ops.split_heads(t[p + "attention.self.value"], cfg.num_attention_heads)  # [B, A, T, D]
    context = ops.merge_heads(ops.attention_context(t[p + "attention.self.probs"], v))  # [B, T, H]
    D = cfg.head_size
    np.testing.assert_array_equal(context[..., head * D : (head + 1) * D], 0.0)  # the zeroed head adds nothing
    h = ops.linear(context, w[p + "attention.output.dense.weight"], w[p + "attention.output.dense.bias"])
    x = ops.add_layer_norm(
        h, x, w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], cfg.layer_norm_eps
    )
    h = ops.gelu(ops.linear(x, w[p + "intermediate.dense.weight"], w[p + "intermediate.dense.bias"]))
    h = ops.linear(h, w[p + "output.dense.weight"], w[p + "output.dense.bias"])
    y = ops.add_layer_norm(h, x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], cfg.layer_norm_eps)

    np.testing.assert_array_equal(t[p + "attention.self.context"], context)
    np.testing.assert_array_equal(t[p + "attention.output.LayerNorm"], x)
    np.testing.assert_array_equal(t[p + "output.LayerNorm"], y)
    assert np.abs(y - clean[p + "output.LayerNorm"]).max() > 1e-2  # and the head mattered


def test_patching_in_another_inputs_activation(tiny):
    """Paste sentence B's embeddings into sentence A's run: every later step becomes B's."""
    model = minibert.load(tiny)
    a = np.array([[101, 2054, 2003, 1996, 3007, 102]])
    b = np.array([[101, 7592, 2088, 999, 1029, 102]])
    tb = model.trace(b)
    patched = model.trace(a, patch={"embeddings.LayerNorm": lambda value: tb["embeddings.LayerNorm"]})
    ta = model.trace(a)
    assert not np.array_equal(ta["embeddings.LayerNorm"], tb["embeddings.LayerNorm"])
    np.testing.assert_array_equal(patched["embeddings.word_embeddings"], ta["embeddings.word_embeddings"])
    for name in list(tb)[list(tb).index("embeddings.LayerNorm") :]:
        np.testing.assert_array_equal(patched[name], tb[name])
    np.testing.assert_array_equal(patched.output.last_hidden_state, tb.output.last_hidden_state)


def test_patch_by_glob_and_alias_applies_to_every_matching_step(tiny):
    model = minibert.load(tiny)
    t = model.trace(*padded_inputs(), patch={"blocks.*.attn.hook_pattern": lambda p: np.zeros_like(p)})
    assert t.meta["patched"] == ["encoder.layer.0.attention.self.probs", "encoder.layer.1.attention.self.probs"]
    for i in range(2):
        np.testing.assert_array_equal(t[f"encoder.layer.{i}.attention.self.context"], 0.0)  # no head attends


def test_patch_errors_are_clear(tiny):
    model = minibert.load(tiny)
    with pytest.raises(InputError, match="returned shape"):
        model.trace(*padded_inputs(), patch={"pooler": lambda v: v[:1]})
    with pytest.raises(InputError, match="names no step"):
        model.trace(*padded_inputs(), patch={"pooler.tanh": lambda v: v})


# ---------------------------------------------------------------------------------------
# Step: MINIBERT_BREAK
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["encoder.layer.1.attention.self.probs", "blocks.1.attn.hook_pattern"])
def test_break_fires_at_the_named_step_with_the_forward_pass_in_scope(tiny, monkeypatch, target):
    model = minibert.load(tiny)
    stops = []

    def hook(*args, **kwargs):  # stands in for pdb: look at the frames it would show
        tap_frame = sys._getframe(1)  # where breakpoint() was called
        forward_frame = tap_frame.f_back  # what `up` shows in pdb
        stops.append(
            (
                tap_frame.f_locals["name"],
                tap_frame.f_locals["value"].copy(),
                forward_frame.f_code.co_name,
                dict(forward_frame.f_locals),
            )
        )

    monkeypatch.setattr(sys, "breakpointhook", hook)
    monkeypatch.setenv("MINIBERT_BREAK", target)
    t = model.trace(*padded_inputs())
    assert len(stops) == 1
    name, value, function, local_vars = stops[0]
    assert name == "encoder.layer.1.attention.self.probs"
    np.testing.assert_array_equal(value, t["encoder.layer.1.attention.self.probs"])
    assert function == "layer" and local_vars["i"] == 1  # `up`: BertModel.layer of layer 1
    np.testing.assert_array_equal(local_vars["scores"], t["encoder.layer.1.attention.self.scores"])


def test_no_break_without_the_variable(tiny, monkeypatch):
    monkeypatch.delenv("MINIBERT_BREAK", raising=False)
    monkeypatch.setattr(sys, "breakpointhook", lambda *a, **k: pytest.fail("breakpoint() was called"))
    minibert.load(tiny).trace(*padded_inputs())
    assert Recorder(break_at=None).break_at is None


# ---------------------------------------------------------------------------------------
# Compare
# ---------------------------------------------------------------------------------------


def test_compare_uses_the_project_tolerance_and_names_the_first_failure(tiny):
    t = minibert.load(tiny).trace(*padded_inputs())
    same = compare(t, Trace(dict(t.values), t.meta))
    assert same.passed and same.first_failure is None and len(same.rows) == len(t)
    # Nudge two steps: one just within tolerance, a later one just beyond.
    values = {name: v.copy() for name, v in t.values.items()}
    q, gelu = "encoder.layer.0.attention.self.query", "encoder.layer.1.intermediate.gelu"
    tol_q = 1e-5 * max(1.0, float(np.abs(t[q]).max()))
    tol_g = 1e-5 * max(1.0, float(np.abs(t[gelu]).max()))
    values[q][0, 0, 0] += np.float32(0.5 * tol_q)
    values[gelu][1, 2, 3] += np.float32(3 * tol_g)
    result = compare(Trace(values, t.meta), t)
    assert result.first_failure.name == gelu
    assert [r.name for r in result.failures] == [gelu]
    row = {r.name: r for r in result.rows}[gelu]
    assert row.tolerance == pytest.approx(tol_g) and row.max_abs_error > row.tolerance
    assert f"first failing point: {gelu}" in result.table()


def test_compare_reports_missing_steps_and_nan(tiny):
    t = minibert.load(tiny).trace(*padded_inputs())
    partial = Trace({n: v for n, v in t.values.items() if n != "pooler.dense"}, t.meta)
    assert compare(partial, t).first_failure.name == "pooler.dense"
    assert compare(partial, t).first_failure.status == "missing"
    values = dict(t.values)
    values["embeddings.sum"] = np.full_like(t["embeddings.sum"], np.nan)
    assert compare(Trace(values, t.meta), t).first_failure.name == "embeddings.sum"


# ---------------------------------------------------------------------------------------
# The PyTorch reference
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_reference_trace_matches_ours_at_every_hook_point(tiny, preset_model, dtype):
    """The reference is built from the .h5 alone and agrees with transformers' own outputs."""
    import torch

    torch_model, _, _ = preset_model("bert-tiny")
    ids, mask, types = padded_inputs()
    ref = reference.trace(tiny, ids, mask, types, dtype=dtype)
    ours = minibert.load(tiny, dtype=dtype).trace(ids, mask, types)
    assert list(ref) == list(ours)  # same names in the same execution order
    result = compare(ours, ref)
    assert result.passed, result.table()
    assert all(v.dtype == np.dtype(dtype) for v in ref.values.values())

    # The hooked values are transformers' own: compare with the original torch model's outputs.
    m = torch_model.double() if dtype == "float64" else torch_model.float()
    with torch.inference_mode():
        out = m(
            input_ids=torch.as_tensor(ids),
            attention_mask=torch.as_tensor(mask),
            token_type_ids=torch.as_tensor(types),
            output_hidden_states=True,
            output_attentions=True,
        )
    np.testing.assert_array_equal(ref["encoder.layer.1.output.LayerNorm"], out.last_hidden_state.numpy())
    np.testing.assert_array_equal(ref["encoder.layer.0.attention.self.probs"], out.attentions[0].numpy())
    np.testing.assert_array_equal(ref["embeddings.LayerNorm"], out.hidden_states[0].numpy())
    np.testing.assert_array_equal(ref["pooler"], out.pooler_output.numpy())
    # Recomputed scores reproduce the probabilities transformers returned.
    s = torch.from_numpy(ref["encoder.layer.0.attention.self.scores"])
    bias = torch.from_numpy(ops.attention_mask_bias(mask, np.dtype(dtype)))
    np.testing.assert_allclose(torch.softmax(s + bias, -1).numpy(), out.attentions[0].numpy(), rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.torch
def test_cli_parity_passes_every_hook_point_on_minilm(minilm_h5, capsys, dtype):
    pytest.importorskip("torch")
    code = main(["parity", str(minilm_h5), "The capital of France is Paris.", "--pair", "Hello!", "--dtype", dtype])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "79/79 hook points within tolerance" in out
    assert "first failing point" not in out
    assert "FAIL" not in out


def test_cli_parity_exits_1_and_names_the_first_divergence(tiny, monkeypatch, capsys):
    def tanh_gelu(x):  # the approximate GELU, a classic porting bug
        return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))

    monkeypatch.setattr(ops, "gelu", tanh_gelu)
    code = main(["parity", str(tiny), "--ids", "101,2054,2003,102", "--backend", "numpy"])
    out = capsys.readouterr().out
    assert code == 1
    assert "first failing point: encoder.layer.0.intermediate.gelu" in out


def test_cli_parity_errors_are_for_people(tiny, capsys):
    assert main(["parity", str(tiny), "--ids", "101,x"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --ids") and "fix:" in err


def png_size(path):
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_cli_trace_saves_and_plots(minilm_h5, tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="--plot needs the viz extra (CI installs it)")
    out_h5, plots = tmp_path / "trace.h5", tmp_path / "plots"
    code = main(["trace", str(minilm_h5), "Hello world!", "--out", str(out_h5), "--plot", str(plots)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "encoder.layer.5.attention.self.probs" in printed  # the summary table
    saved = Trace.load(out_h5)
    assert len(saved) == 79
    np.testing.assert_array_equal(saved.meta["inputs"]["input_ids"], [[101, 7592, 2088, 999, 102]])
    again = minibert.load(minilm_h5).trace(saved.meta["inputs"]["input_ids"])
    np.testing.assert_array_equal(saved["pooler"], again["pooler"])
    pngs = sorted(plots.glob("*.png"))
    assert [p.name for p in pngs] == [f"attention-layer-{i}.png" for i in range(6)]
    for p in pngs:  # 12 heads: 3 rows x 4 panels of 3 x 3 inches at 100 dpi
        assert png_size(p) == (1200, 900)


def test_plot_size_follows_the_head_count(tiny, tmp_path):
    from minibert.plot import plot_attention

    t = minibert.load(tiny).trace(*padded_inputs(), only="*.probs")
    paths = plot_attention(t, tmp_path)
    assert [png_size(p) for p in paths] == [(600, 300), (600, 300)]  # 2 heads: 1 row x 2 panels
    assert re.fullmatch(r"attention-layer-\d\.png", paths[0].name)


# ---------------------------------------------------------------------------------------
# One check of the inputs per pass; one default backend
# ---------------------------------------------------------------------------------------


def test_a_traced_pass_checks_its_inputs_once(monkeypatch):
    checked = []

    def counting_check(*args, **kwargs):
        checked.append(args[1])
        return check_inputs(*args, **kwargs)

    for module in (minibert.model, minibert.trace, minibert.heads):
        monkeypatch.setattr(module, "check_inputs", counting_check)
    model = minibert.load(FIXTURES / "tiny_model.h5", backend="numpy")
    t = model.trace([[5, 6, 7]])
    assert len(checked) == 1 and t["pooler"].shape == (1, 32)
    model([[5, 6, 7]])
    assert len(checked) == 2


def test_bert_model_and_load_share_the_default_backend():
    default = inspect.signature(minibert.load).parameters["backend"].default
    assert default == inspect.signature(minibert.BertModel).parameters["backend"].default == DEFAULT_BACKEND
    assert minibert.load(FIXTURES / "tiny_model.h5").backend == DEFAULT_BACKEND == "numba"
