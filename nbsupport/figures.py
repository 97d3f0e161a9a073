"""Diagrams drawn with matplotlib for the notebooks: GPT-2's block beside Llama's, and grouped-query attention."""

import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

KEPT, CHANGED, REMOVED = "#dbe4f0", "#f6c28b", "#eeeeee"


def _box(ax, x, y, text, color, w=2.6, h=0.55):
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.04", fc=color, ec="#444444"))
    ax.text(x, y, text, ha="center", va="center", fontsize=8.5)


def _arrow(ax, x0, y0, x1, y1):
    ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=9, color="#444444", lw=1))


def _column(ax, x, title, rows):
    """rows: (text, color) from bottom to top; each row is a box, joined by arrows; '+' rows are additions."""
    ax.text(x, len(rows) * 0.85 + 0.35, title, ha="center", fontsize=11, weight="bold")
    for i, (text, color) in enumerate(rows):
        y = 0.5 + i * 0.85
        if text == "+":  # the shortcut: the block's input added to its output
            ax.add_patch(plt.Circle((x, y), 0.18, fc="white", ec="#444444"))
            ax.text(x, y, "+", ha="center", va="center", fontsize=10)
            y0 = y - 3 * 0.85 + 0.425
            ax.plot([x, x - 1.5, x - 1.5], [y0, y0, y], color="#444444", lw=1)
            _arrow(ax, x - 1.5, y, x - 0.18, y)
        else:
            _box(ax, x, y, text, color)
        if i:
            _arrow(ax, x, y - 0.85 + (0.18 if rows[i - 1][0] == "+" else 0.3), x, y - (0.18 if text == "+" else 0.3))


def gpt2_vs_llama_blocks():
    """GPT-2's model beside Llama 2's, bottom to top; orange marks what Llama changes."""
    gpt = [("token embedding\n+ learned position embedding", KEPT), ("dropout", KEPT),
           ("LayerNorm", KEPT), ("multi-head attention\n(biases, dropout)", KEPT), ("+", KEPT),
           ("LayerNorm", KEPT), ("feed-forward\nLinear → GELU → Linear", KEPT), ("+", KEPT),
           ("final LayerNorm", KEPT), ("output head\n(tied to the embedding)", KEPT)]
    llama = [("token embedding\n(no position embedding)", CHANGED), ("(no dropout)", REMOVED),
             ("RMSNorm", CHANGED), ("multi-head attention\nRoPE on queries and keys", CHANGED), ("+", KEPT),
             ("RMSNorm", CHANGED), ("SwiGLU feed-forward\nSiLU(x W1) ⊙ (x W3) → W2", CHANGED), ("+", KEPT),
             ("final RMSNorm", CHANGED), ("output head\n(its own weights)", CHANGED)]
    fig, ax = plt.subplots(figsize=(8, 6.2))
    _column(ax, 1.8, "GPT-2", gpt)
    _column(ax, 5.8, "Llama 2", llama)
    for x in (1.8, 5.8):  # the repeated block
        ax.add_patch(FancyBboxPatch((x - 1.7, 1.75), 3.2, 5.0, boxstyle="round,pad=0.05", fill=False, ls="--", ec="#888888"))
        ax.text(x + 1.62, 4.3, "× n_layers", rotation=90, va="center", fontsize=8, color="#555555")
    ax.text(3.8, -0.25, "orange: changed in Llama    grey: removed", ha="center", fontsize=8.5, color="#555555")
    ax.set_xlim(-0.1, 7.7)
    ax.set_ylim(-0.5, 9.4)
    ax.axis("off")
    return fig


def grouped_query_attention(n_heads=8):
    """Query heads and the key/value heads they read, for multi-head, grouped-query and multi-query attention."""
    fig, axes = plt.subplots(1, 3, figsize=(11, 2.6))
    for ax, (title, n_kv) in zip(axes, [("multi-head: n_kv_groups = n_heads", n_heads),
                                        (f"grouped-query: n_kv_groups = {n_heads // 4}", n_heads // 4),
                                        ("multi-query: n_kv_groups = 1", 1)]):
        group = n_heads // n_kv
        for h in range(n_heads):
            _box(ax, h, 2, f"q{h}", KEPT, w=0.7, h=0.5)
        for g in range(n_kv):
            x = g * group + (group - 1) / 2  # above the middle of its group
            _box(ax, x, 0, f"k{g}, v{g}", CHANGED, w=min(0.9 * group, 1.6), h=0.5)
            for h in range(g * group, (g + 1) * group):
                ax.plot([h, x], [1.73, 0.27], color="#666666", lw=0.8)
        ax.set_title(title, fontsize=9.5)
        ax.set_xlim(-0.7, n_heads - 0.3)
        ax.set_ylim(-0.5, 2.5)
        ax.axis("off")
    fig.suptitle(f"{n_heads} query heads; each reads the key/value head of its group (the KV cache stores only those)",
                 fontsize=10)
    fig.tight_layout()
    return fig
