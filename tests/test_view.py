"""The attention page (minibert/view.py): its embedded data, and the page itself driven in Chromium.

The browser is the system Chromium (Debian package `chromium`, at /usr/bin/chromium), driven
by Playwright for Python; Playwright's own browser download is not used. Each test that opens
the page checks what it draws against the trace it was built from: the real all-MiniLM-L6-v2
on a sentence pair with two padding tokens.

Screenshots of the three views are written to $MINIBERT_VIEW_SCREENSHOTS (default: a temporary
directory). The README's pictures are made with:
    MINIBERT_VIEW_SCREENSHOTS=docs/img python -m pytest tests/test_view.py
"""

import html
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

import minibert
from minibert.cli import main
from minibert.errors import InputError
from minibert.view import (
    ATTENTION_MAX_ERROR,
    ATTENTION_SCALE,
    DEFAULT_THRESHOLD,
    HISTOGRAM_BINS,
    ViewSizeWarning,
    check_size,
    decode_attention,
    read_data,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
TEXT, PAIR = "The animal didn't cross the street because it was too tired.", "It slept."
N_PAD = 2
THR = DEFAULT_THRESHOLD


# ---------------------------------------------------------------------------------------
# Fixtures: one trace, its page, one browser
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(minilm_h5):
    return minibert.load(minilm_h5, backend="numpy")


@pytest.fixture(scope="module")
def tokenizer(minilm_h5):
    return minibert.Tokenizer.from_file(minilm_h5)


@pytest.fixture(scope="module")
def trace(model, tokenizer):
    """The traced pair, padded with N_PAD [PAD] tokens (attention_mask 0)."""
    n = len(tokenizer.encode(TEXT, PAIR)["input_ids"])
    enc = tokenizer.encode(TEXT, PAIR, max_length=n + N_PAD, padding="max_length")
    return model.trace(*(np.array([enc[k]]) for k in ("input_ids", "attention_mask", "token_type_ids")))


def probs(trace, layer):  # -> [A, T, T]
    return trace[f"encoder.layer.{layer}.attention.self.probs"][0].astype(np.float64)


@pytest.fixture(scope="module")
def page_path(trace, tmp_path_factory):
    return minibert.view(trace).save(tmp_path_factory.mktemp("view") / "view.html")


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory):
    directory = Path(os.environ.get("MINIBERT_VIEW_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():  # a failure, not a skip: CI installs it
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium), as .ci/run does")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),  # a fresh user-data-dir
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 860},
        )
        yield context
        context.close()


class Opened:
    """A page opened in the browser, with its console errors and its request log."""

    def __init__(self, browser, path, wait=True):
        self.page = browser.new_page()
        self.errors, self.requests = [], []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.url = Path(path).resolve().as_uri()
        self.page.goto(self.url)
        if wait:
            self.page.wait_for_function("window.minibertView !== undefined")

    def lines(self):
        """(head, query, key, opacity, colour) of every line drawn in the head view."""
        return self.page.eval_on_selector_all(
            "#head-lines line",
            "els => els.map(e => [+e.dataset.h, +e.dataset.q, +e.dataset.k, +e.getAttribute('stroke-opacity'),"
            " e.getAttribute('stroke')])",
        )

    def close(self):
        self.page.close()


@pytest.fixture
def opened(browser, page_path):
    o = Opened(browser, page_path)
    yield o
    assert o.errors == []  # no console error in any test
    o.close()


def expected_lines(trace, layer, heads, q=None, k=None, threshold=THR):
    """{(head, query, key): weight} of the weights >= threshold, from the trace.

    The page compares the stored weight (rounded to 1/ATTENTION_SCALE) with the threshold,
    so the same rounding is applied here; it decides only weights within 7.6e-6 of it.
    """
    p = probs(trace, layer)
    stored = np.rint(p * ATTENTION_SCALE) / ATTENTION_SCALE
    return {(h, i, j): p[h, i, j] for h in heads for i, j in np.argwhere(stored[h] >= threshold)
            if (q is None or i == q) and (k is None or j == k)}


# ---------------------------------------------------------------------------------------
# The embedded data (Python side)
# ---------------------------------------------------------------------------------------


def test_attention_round_trips_within_the_stated_rounding(trace, tokenizer):
    page = minibert.view(trace)
    data = read_data(page.html)
    ids = trace.meta["inputs"]["input_ids"][0]
    T, L, A = len(ids), 6, 12
    assert data["tokens"] == tokenizer.convert_ids_to_tokens(ids.tolist())
    assert data["tokens"][-N_PAD:] == ["[PAD]"] * N_PAD
    assert data["attention_mask"] == trace.meta["inputs"]["attention_mask"][0].tolist()
    assert data["token_type_ids"] == trace.meta["inputs"]["token_type_ids"][0].tolist()
    assert [entry["layer"] for entry in data["attention"]] == list(range(L))
    worst = 0.0
    for entry in data["attention"]:
        decoded = decode_attention(entry["data"], A, T)
        worst = max(worst, float(np.abs(decoded - probs(trace, entry["layer"])).max()))
    assert 0 < worst <= ATTENTION_MAX_ERROR + 1e-7  # 1e-7: float32 probabilities, float64 decoding
    assert worst > ATTENTION_MAX_ERROR / 4  # the rounding is the one stated (not finer, not coarser)


def test_steps_hold_the_trace_summary_and_histograms(trace):
    data = minibert.view(trace).data
    assert [s["name"] for s in data["steps"]] == list(trace)  # every step, in execution order
    for step in data["steps"]:
        x = trace[step["name"]].astype(np.float64)
        assert step["shape"] == list(x.shape)
        for key, value in (("mean", x.mean()), ("std", x.std()), ("min", x.min()), ("max", x.max())):
            assert step[key] == pytest.approx(value, rel=1e-6, abs=1e-30), (step["name"], key)
        counts, _ = np.histogram(x, bins=HISTOGRAM_BINS, range=(x.min(), x.max()))
        assert step["hist"]["counts"] == counts.tolist()
        assert sum(step["hist"]["counts"]) == x.size and step["nonfinite"] == 0


def test_text_path_equals_trace_path(model, tokenizer):
    from_text = minibert.view(model, TEXT, pair=PAIR).data
    enc = {k: np.array([v]) for k, v in tokenizer.encode(TEXT, PAIR).items()}
    from_trace = minibert.view(model.trace(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])).data
    assert from_text["tokens"] == from_trace["tokens"] and from_text["token_type_ids"] == from_trace["token_type_ids"]
    assert [e["data"] for e in from_text["attention"]] == [e["data"] for e in from_trace["attention"]]
    assert from_text["text"] == TEXT and from_text["pair"] == PAIR


def test_a_saved_trace_shows_the_same_page(trace, tmp_path):
    loaded = minibert.Trace.load(trace.save(tmp_path / "t.h5"))
    assert minibert.view(loaded).html == minibert.view(trace).html


def test_any_text_stays_inside_the_data_block(model):
    nasty = ['</script><script>alert(1)</script>', '{{data}}', '<!--', '"quoted" & <b>bold</b>', 'ünï ✓']
    ids = [101] + [1000 + i for i in range(len(nasty))] + [102]
    labels = ["[CLS]"] + nasty + ["[SEP]"]
    page = minibert.view(model, ids, tokens=labels, title=nasty[0])
    assert page.html.count("</script>") == 2  # the data block's and the script's own
    assert page.html.count("{{data}}") == 1  # only as a token, inside the JSON: not replaced
    assert read_data(page.html)["tokens"] == labels
    assert read_data(page.html)["title"] == nasty[0]


def test_page_is_self_contained_and_small_at_T_128(model, tokenizer):
    """The issue's size target: < 5 MB for MiniLM at T = 128 (6 layers x 12 heads)."""
    text = " ".join(["The quick brown fox jumps over the lazy dog while the cat sleeps."] * 12)
    enc = tokenizer.encode(text, max_length=128, truncation=True)
    assert len(enc["input_ids"]) == 128
    page = minibert.view(model, {k: [v] for k, v in enc.items()})
    assert page.nbytes < 5e6, page.nbytes
    assert page.nbytes > 6 * 12 * 128**2 * 2 * 4 / 3  # it does hold every layer's attention
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page.html)  # nothing fetched from elsewhere
    assert "@font-face" not in page.html and "@import" not in page.html
    assert "default-src 'none'" in page.html  # the browser refuses any request the page could make


@pytest.fixture(scope="module")
def small_model():
    """A bert-tiny-shaped encoder with seeded random weights, built in NumPy (no file, no torch)."""
    from minibert.weights import encoder_shapes

    config = minibert.BertConfig.preset("bert-tiny")
    rng = np.random.default_rng(0)
    weights = {name: (np.ones(shape) if name.endswith("LayerNorm.weight") else 0.05 * rng.standard_normal(shape))
               for name, shape in encoder_shapes(config).items()}
    return minibert.BertModel(config, weights, backend="numpy")


def test_too_long_text_is_refused_with_the_truncate_fix(model, tokenizer, small_model):
    text = "word " * 600
    with pytest.raises(InputError) as e:
        minibert.view(model, text)
    assert "602 tokens" in e.value.message and "512" in e.value.message and "--truncate" in e.value.hint
    with pytest.raises(InputError, match="no vocabulary to tokenize the text with"):
        minibert.view(small_model, text, truncate=True)
    page = minibert.view(small_model, text, truncate=True, tokenizer=tokenizer)
    tokens = page.data["tokens"]
    assert len(tokens) == 512 and tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and tokens[1:-1] == ["word"] * 510


def test_big_pages_are_refused_naming_the_layers_that_fit(model):
    """MiniLM at T = 512: 6 layers x 12 heads x 512^2 values x 2 bytes, base64: 50 MB."""
    with pytest.raises(InputError) as e:
        check_size(range(6), 12, 512)
    assert "50.3 MB" in e.value.message and "--layers 0 1" in e.value.hint  # 8.4 MB a layer, 25 MB allowed
    with pytest.raises(InputError) as e:  # refused before the model runs
        minibert.view(model, "word " * 600, truncate=True)
    assert "--layers 0 1" in e.value.hint
    with pytest.raises(InputError, match="use a shorter text"):
        check_size([0], 12, 512, max_mb=5)
    with pytest.warns(ViewSizeWarning, match="8.4 MB"):
        check_size([5], 12, 512)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_size(range(6), 12, 128)  # T = 128: 3.1 MB, no warning


def test_bad_inputs_are_clear_errors(trace, model):
    with pytest.raises(InputError, match="not the input of this trace"):
        minibert.view(trace, "Another text.")
    with pytest.raises(InputError, match="no attention probabilities"):
        minibert.view(model.trace([[101, 7592, 102]], only="pooler"))
    with pytest.raises(InputError, match=r"layer\(s\) \[7\] not in the trace"):
        minibert.view(trace, layers=[0, 7])
    doubled = model.trace([[101, 7592, 102]], patch={"encoder.layer.1.attention.self.probs": lambda p: 2 * p})
    with pytest.raises(InputError, match="not probabilities"):
        minibert.view(doubled)
    minibert.view(doubled, layers=[0])  # the unpatched layer is fine


def test_cli_writes_the_page_and_refuses_long_text(minilm_h5, tmp_path, capsys):
    out = tmp_path / "v.html"
    assert main(["view", str(minilm_h5), TEXT, "--pair", PAIR, "--layers", "0", "3", "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    data = read_data(out.read_text(encoding="utf-8"))
    assert [e["layer"] for e in data["attention"]] == [0, 3] and data["tokens"][0] == "[CLS]" and data["pair"] == PAIR
    assert main(["view", str(minilm_h5), "word " * 600, "--out", str(tmp_path / "long.html")]) == 1
    err = capsys.readouterr().err
    assert "error: the text is 602 tokens long" in err and "fix: pass --truncate" in err
    assert not (tmp_path / "long.html").exists()


# ---------------------------------------------------------------------------------------
# The page in Chromium
# ---------------------------------------------------------------------------------------


def test_page_loads_with_no_errors_and_no_network(opened, trace, screenshots):
    page = opened.page
    assert opened.requests == [opened.url] and opened.errors == []  # the file itself, nothing else
    assert page.text_content("#title") == "minibert attention"
    assert page.locator(".swatch").count() == 12
    assert page.locator("#layer option").count() == 6
    # Segments A/B in two colours, padding greyed in both columns.
    T = trace.meta["inputs"]["input_ids"].shape[1]
    assert page.locator("#head-svg .tok").count() == 2 * T
    assert page.locator("#head-svg .tok.pad").count() == 2 * N_PAD
    fills = page.eval_on_selector_all("#head-svg .tok[data-side=q] rect", "els => els.map(e => e.getAttribute('fill'))")
    types = trace.meta["inputs"]["token_type_ids"][0]
    pad = trace.meta["inputs"]["attention_mask"][0] == 0
    assert len({f for f, t, p in zip(fills, types, pad) if t == 0 and not p}) == 1
    assert len({f for f, t, p in zip(fills, types, pad) if t == 1 and not p}) == 1
    assert len(set(fills)) == 3
    # The README's picture: layer 3, pointer on "it", heat map of head 1 (it -> animal).
    page.select_option("#layer", "3")
    page.select_option("#heat-head", "1")
    page.hover("#head-svg .tok[data-side=q][data-i='10']")
    page.screenshot(path=str(screenshots / "view-head.png"))
    assert opened.requests == [opened.url]


def test_head_view_draws_the_lines_of_the_trace(opened, trace):
    page = opened.page
    all_heads = expected_lines(trace, 0, range(12))
    assert page.locator("#head-lines line").count() == len(all_heads)  # initially: layer 0, every head

    page.click("#heads-none")
    assert page.locator("#head-lines line").count() == 0
    page.click(".swatch[data-head='0']")
    lines = opened.lines()
    want = expected_lines(trace, 0, [0])
    assert 0 < len(lines) == len(want)
    assert {(h, q, k) for h, q, k, _, _ in lines} == set(want)
    for h, q, k, opacity, _ in lines:  # opacity = the weight (written with 4 decimals)
        assert abs(opacity - want[h, q, k]) <= 5e-5 + ATTENTION_MAX_ERROR
    pad = trace.meta["inputs"]["attention_mask"][0] == 0
    assert {c for _, q, _, _, c in lines if pad[q]} == {"#9a9a9a"}  # lines from padding queries in grey
    assert len({c for _, q, _, _, c in lines if not pad[q]}) == 1  # the rest in head 0's colour

    page.select_option("#layer", "1")  # same head, another layer: that layer's lines
    assert {tuple(line[:3]) for line in opened.lines()} == set(expected_lines(trace, 1, [0]))
    page.click(".swatch[data-head='3']")  # and head 3 added
    lines = opened.lines()
    assert {tuple(line[:3]) for line in lines} == set(expected_lines(trace, 1, [0, 3]))
    colours = {h: {c for h2, q, _, _, c in lines if h2 == h and not pad[q]} for h in (0, 3)}
    assert len(colours[0]) == len(colours[3]) == 1 and colours[0] != colours[3]  # one colour per head
    page.dblclick(".swatch[data-head='5']")  # double-click: only head 5
    assert {tuple(line[:3]) for line in opened.lines()} == set(expected_lines(trace, 1, [5]))
    page.fill("#threshold", "0.3")  # the threshold control redraws
    assert page.locator("#head-lines line").count() == len(expected_lines(trace, 1, [5], threshold=0.3)) > 0


def test_hovering_a_token_leaves_only_its_lines(opened, trace):
    page = opened.page
    page.select_option("#layer", "2")
    for side, index in (("q", 10), ("k", 2)):
        page.hover(f"#head-svg .tok[data-side={side}][data-i='{index}']")
        got = {tuple(line[:3]) for line in opened.lines()}
        want = expected_lines(trace, 2, range(12), **{side: index})
        assert got == set(want) and len(want) > 0
    page.hover("#title")  # pointer away: every line again
    assert page.locator("#head-lines line").count() == len(expected_lines(trace, 2, range(12)))


def test_model_view_cell_opens_that_head(opened, trace, screenshots):
    page = opened.page
    page.click(".tab[data-view=model]")
    assert page.is_visible("#view-model") and not page.is_visible("#view-head")
    assert page.locator(".thumb").count() == 6 * 12
    page.screenshot(path=str(screenshots / "view-model.png"))
    # A thumbnail's pixels are the head's attention through the colour map: the brightest
    # pixel of layer 2, head 5 sits where the trace's largest weight is.
    pixels = page.evaluate("""() => {
        const c = document.querySelector(".thumb[data-layer='2'][data-head='5']");
        return Array.from(c.getContext("2d").getImageData(0, 0, c.width, c.height).data); }""")
    p = probs(trace, 2)[5]
    pad = trace.meta["inputs"]["attention_mask"][0] == 0
    live = p[np.ix_(~pad, ~pad)]
    rgba = np.array(pixels).reshape(p.shape[0], p.shape[1], 4)
    green = rgba[np.ix_(~pad, ~pad)][..., 1]  # viridis: green rises with the value
    assert green[np.unravel_index(live.argmax(), live.shape)] == green.max() > green.min()

    page.click(".thumb[data-layer='2'][data-head='5']")
    assert page.is_visible("#view-head") and not page.is_visible("#view-model")
    assert page.input_value("#layer") == "2" and page.input_value("#heat-head") == "5"
    assert page.eval_on_selector_all(".swatch:not(.off)", "els => els.map(e => +e.dataset.head)") == [5]
    assert {tuple(line[:3]) for line in opened.lines()} == set(expected_lines(trace, 2, [5]))
    assert page.text_content("#heat-title").startswith("layer 2, head 5")
    # The full heat map: hovering cell (query 10, key 2) shows its value and tokens.
    heat = page.evaluate("window.minibertView.heat")
    box = page.locator("#heatmap").bounding_box()
    page.mouse.move(box["x"] + heat["margin"] + 2.5 * heat["cell"], box["y"] + heat["margin"] + 10.5 * heat["cell"])
    tip = page.text_content("#heat-tip")
    assert tip == f'"it" (10) \u2192 "animal" (2): {p[10, 2]:.4f}'


def test_step_view_table_and_histogram(opened, trace, screenshots):
    page = opened.page
    page.click(".tab[data-view=steps]")
    assert page.locator("#steps tbody tr").count() == len(trace)
    name = "encoder.layer.0.attention.self.probs"
    row = page.locator("#steps tbody tr").nth(list(trace).index(name))
    cells = row.locator("td").all_text_contents()
    x = trace[name].astype(np.float64)
    assert cells[0] == name and cells[1] == str(list(x.shape))
    assert float(cells[2]) == pytest.approx(x.mean(), rel=1e-3) and float(cells[3]) == pytest.approx(x.std(), rel=1e-3)
    row.click()
    assert page.text_content("#hist-title") == name
    counts = page.eval_on_selector_all("#histogram rect.bar", "els => els.map(e => +e.dataset.count)")
    assert counts == np.histogram(x, bins=HISTOGRAM_BINS, range=(x.min(), x.max()))[0].tolist()
    heights = page.eval_on_selector_all("#histogram rect.bar", "els => els.map(e => +e.getAttribute('height'))")
    assert heights.index(max(heights)) == counts.index(max(counts))
    page.fill("#step-filter", "layer.5.output")
    assert page.locator("#steps tbody tr:visible").count() == 2  # output.dense, output.LayerNorm
    page.fill("#step-filter", "")
    page.screenshot(path=str(screenshots / "view-steps.png"))


def test_jupyter_repr_is_the_same_page_in_a_frame(browser, trace, tmp_path):
    view = minibert.view(trace, layers=[0, 1])
    frame_html = view._repr_html_()
    srcdoc = re.fullmatch(r'<iframe srcdoc="(.*?)" title=.*</iframe>', frame_html, re.DOTALL).group(1)
    assert html.unescape(srcdoc) == view.html
    notebook = tmp_path / "notebook.html"
    notebook.write_text(f"<!DOCTYPE html><html><body><p>cell output:</p>{frame_html}</body></html>", encoding="utf-8")
    o = Opened(browser, notebook, wait=False)
    frame = o.page.frames[1]
    frame.wait_for_function("window.minibertView !== undefined")
    assert frame.locator("#head-lines line").count() == len(expected_lines(trace, 0, range(12)))
    assert frame.locator(".thumb").count() == 2 * 12
    assert [u for u in o.requests if not u.startswith("about:")] == [o.url] and o.errors == []
    o.close()
