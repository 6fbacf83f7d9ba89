"""Matplotlib figures as PNG bytes for the store: one place for the headless backend and the format."""
from __future__ import annotations

import io


def pyplot():
    """matplotlib.pyplot on the headless Agg backend (workers have no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_png(figure) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    plt = pyplot()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    return buffer.getvalue()
