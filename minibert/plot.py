"""Pictures of a trace: each layer's attention probabilities as heat maps, one PNG per layer.

matplotlib is imported when a picture is drawn (the ``viz`` extra), never at ``import minibert``.
"""

import re
from pathlib import Path

from .errors import InputError, MinibertError

__all__ = ["PANEL_INCHES", "PLOT_DPI", "plot_attention", "plot_grid"]

PLOT_DPI = 100
PANEL_INCHES = 3.0  # each head's panel is PANEL_INCHES x PANEL_INCHES


def plot_grid(num_heads):
    """(rows, cols) of the per-head panels: at most 4 panels per row."""
    cols = min(4, num_heads)
    return -(-num_heads // cols), cols


def plot_attention(trace, out_dir, tokens=None, batch_index=0):
    """Write one PNG per layer: every head's attention probabilities, tokens on the axes.

    Figure size is (cols * PANEL_INCHES) x (rows * PANEL_INCHES) inches at PLOT_DPI, with
    rows, cols = plot_grid(A). Returns the list of paths written.
    """
    try:
        import matplotlib
    except ImportError:
        raise MinibertError(
            "plotting needs matplotlib", "pip install 'minibert[viz]' (or: pip install matplotlib)"
        ) from None
    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    layers = [n for n in trace if re.fullmatch(r"encoder\.layer\.\d+\.attention\.self\.probs", n)]
    if not layers:
        raise InputError(
            "the trace holds no attention probabilities", "trace without only=, or include '*.attention.self.probs'"
        )
    paths = []
    for name in layers:
        probs = trace[name][batch_index]  # [A, T, T]
        A, T, _ = probs.shape
        labels = list(tokens) if tokens is not None else [str(t) for t in range(T)]
        rows, cols = plot_grid(A)
        fig, axes = plt.subplots(
            rows, cols, figsize=(cols * PANEL_INCHES, rows * PANEL_INCHES), dpi=PLOT_DPI, squeeze=False
        )
        fontsize = max(3, min(8, 160 // T))
        for h, ax in enumerate(axes.flat):
            if h >= A:
                ax.axis("off")
                continue
            ax.imshow(probs[h], vmin=0.0, vmax=1.0, cmap="viridis")  # [T queries, T keys], dark 0 .. yellow 1
            ax.set_title(f"head {h}", fontsize=9)
            # Token labels on the outer panels only: the panels share their axes.
            last_in_column = h + cols >= A
            ax.set_xticks(range(T), labels if last_in_column else [], rotation=90, fontsize=fontsize)
            ax.set_yticks(range(T), labels if h % cols == 0 else [], fontsize=fontsize)
        layer = name.split(".")[2]
        fig.suptitle(
            f"layer {layer} attention probabilities (rows: queries, columns: keys; dark 0, yellow 1)", fontsize=10
        )
        fig.subplots_adjust(left=0.1, right=0.98, bottom=0.14, top=0.9, wspace=0.15, hspace=0.25)
        path = out_dir / f"attention-layer-{layer}.png"
        fig.savefig(path, dpi=PLOT_DPI)  # no bbox_inches="tight": the size stays as set
        plt.close(fig)
        paths.append(path)
    return paths
