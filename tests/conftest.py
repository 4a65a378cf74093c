"""Shared fixtures: the real MiniLM model, and seeded random models of the four preset shapes.

Helpers (inputs, model builders, the parity check) are in tests/helpers.py. The reference stack
(torch, transformers) is imported by the fixtures that need it; a test that uses one of them
(directly or through another fixture) is marked ``torch`` here, and a test that opens a page in
Chromium (the ``browser`` fixture of test_view.py) ``browser``, so that
``pytest -m "not torch and not tutorials and not browser"`` runs the suite with the core
dependencies only.
CI installs the reference stack, so parity tests never skip there.
"""

import pytest

import minibert

import grad_parity
from helpers import RECORDED, TUTORIAL_SECONDS, make_preset_model, minilm_directory

# Fixtures that build or load a PyTorch model: every test using them needs torch.
TORCH_FIXTURES = {"minilm_torch", "preset_model", "transformers_tokenizers"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if TORCH_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.torch)
        if "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def minilm_dir():
    return minilm_directory()


@pytest.fixture(scope="session")
def minilm_h5(minilm_dir, tmp_path_factory):
    """all-MiniLM-L6-v2 converted by our converter."""
    return minibert.convert(minilm_dir, tmp_path_factory.mktemp("minilm") / "minilm.h5")


@pytest.fixture(scope="session")
def minilm_torch(minilm_dir):
    transformers = pytest.importorskip("transformers")
    return transformers.BertModel.from_pretrained(minilm_dir, attn_implementation="eager").eval()


@pytest.fixture(scope="session")
def preset_model(tmp_path_factory):
    """A factory: preset_model("bert-tiny") -> (torch model, hf dir, .h5 path)."""
    root = tmp_path_factory.mktemp("presets")

    def factory(preset, model_class="BertModel", seed=0, **overrides):
        return make_preset_model(preset, root, model_class, seed, **overrides)

    return factory


@pytest.fixture(scope="module")
def tiny(preset_model):
    """The seeded random bert-tiny model, converted: its .h5 path."""
    _, _, h5 = preset_model("bert-tiny")
    return h5


def pytest_terminal_summary(terminalreporter):
    """Print the worst parity error per (test group, dtype) so it can be read off CI."""
    grad_parity.summary(terminalreporter)  # the gradient table (tests/grad_parity.py)
    if TUTORIAL_SECONDS:  # a figure to read, not a test: no absolute time limits on a shared machine
        terminalreporter.section("tutorials: wall seconds per test")
        for name, seconds in TUTORIAL_SECONDS.items():
            terminalreporter.write_line(f"{name:<60} {seconds:7.1f}")
        terminalreporter.write_line(f"{'total (CI budget: 300 s)':<60} {sum(TUTORIAL_SECONDS.values()):7.1f}")
    if not RECORDED:
        return
    worst = {}
    for label, name, dtype, err, scale, tol in RECORDED:
        key = (label, dtype)
        if key not in worst or err / tol > worst[key][1] / worst[key][3]:
            worst[key] = (name, err, scale, tol)
    tr = terminalreporter
    tr.section("parity: worst max|minibert - torch| per model and dtype")
    tr.write_line(f"{'model / case':<44} {'dtype':<8} {'worst tensor':<26} {'max abs err':>11} {'tolerance':>10}")
    for (label, dtype), (name, err, _scale, tol) in sorted(worst.items()):
        tr.write_line(f"{label:<44} {dtype:<8} {name:<26} {err:>11.2e} {tol:>10.1e}")
    tr.write_line(f"{len(RECORDED)} tensors compared")
