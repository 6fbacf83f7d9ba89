"""The plots of a run and a leaderboard, as PNG bytes for the store: accuracy per target, M's eigen-spectrum,
the CLIP-ICM gain per dataset. matplotlib is imported on first use, headless (workers have no display)."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd

from tasks.report.run_report import OPEN_CLASS_METRICS, _cell, method_table, open_class_table, run_title
from tasks.vocabulary import BASELINES, DOMAIN_SHIFT, METHOD_PAIRS, STABLE, model_label, protocol_title


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


def accuracy_figure(summary: pd.DataFrame, record: dict):
    """Accuracy per target (domain shift) and base/novel/HM (open class), CLIP vs CLIP-ICM.

    Each CLIP/CLIP-ICM pair shares a hue (light: CLIP, dark: CLIP-ICM); the dashed line is chance."""
    plt = pyplot()

    paired = plt.get_cmap("Paired").colors  # (light, dark) pairs: blue, green, ...
    colours = {"zero-shot": paired[0:2], "linear probe": paired[2:4]}
    panels = []
    domain_shift = method_table(summary, DOMAIN_SHIFT)
    if not domain_shift.empty:
        columns = [(pair, who) for pair in METHOD_PAIRS for who in ("CLIP", "CLIP-ICM") if f"{who} {pair}" in domain_shift]
        panels.append(("domain shift: accuracy per held-out target", domain_shift.index,
                       {f"{who} {pair}": (domain_shift[f"{who} {pair}"], colours[pair][who == "CLIP-ICM"])
                        for pair, who in columns}))
    open_class = open_class_table(summary)
    if "mean" in open_class.index:
        means = open_class.loc["mean"]
        panels.append(("open class: zero-shot, mean over targets", list(OPEN_CLASS_METRICS),
                       {f"{who} zero-shot": ([means[f"{who} {label}"] for label in OPEN_CLASS_METRICS],
                                             colours["zero-shot"][who == "CLIP-ICM"]) for who in ("CLIP", "CLIP-ICM")}))
    chance = 1 / len(record["dataset"]["classes"])
    widths = [max(len(groups), 2) for _, groups, _ in panels]
    figure, axes_row = plt.subplots(1, len(panels), figsize=(2 + 1.4 * sum(widths), 4.5), squeeze=False,
                                    gridspec_kw={"width_ratios": widths})
    for axes, (title, groups, bars) in zip(axes_row[0], panels):
        positions, width = np.arange(len(groups)), 0.8 / len(bars)
        for offset, (label, (values, colour)) in enumerate(bars.items()):
            values = np.asarray(values, dtype=float)
            drawn = axes.bar(positions + (offset - (len(bars) - 1) / 2) * width, np.nan_to_num(values), width,
                             label=label, color=colour)
            axes.bar_label(drawn, labels=[_cell(value) if not np.isnan(value) else "" for value in values],
                           fontsize=6, rotation=90, padding=2)
        axes.axhline(chance, color="grey", linestyle="--", linewidth=1, label=f"chance (1/{len(record['dataset']['classes'])})")
        axes.set_xticks(positions, groups)
        axes.set_ylim(0, 1.12)
        axes.set_ylabel("accuracy")
        axes.set_title(title, fontsize=9)
        axes.legend(fontsize=7, loc="upper left", ncols=2)
    figure.suptitle(f"CLIP vs CLIP-ICM: {run_title(record)}")
    figure.tight_layout()
    return figure


def accuracy_plot_png(summary: pd.DataFrame, record: dict) -> bytes:
    return figure_png(accuracy_figure(summary, record))


def panel_per_protocol(protocols) -> tuple:
    """(figure, [(axis, protocol), ...]): one 6 x 4 panel per protocol, titled with its name."""
    figure, axes = pyplot().subplots(1, max(1, len(protocols)), figsize=(6 * max(1, len(protocols)), 4), squeeze=False)
    for axis, protocol in zip(axes[0], protocols):
        axis.set_title(protocol_title(protocol))
    return figure, list(zip(axes[0], protocols))


def titled_png(figure, title: str) -> bytes:
    figure.suptitle(title)
    figure.tight_layout()
    return figure_png(figure)


def spectrum_plot_png(spectra: pd.DataFrame, title: str) -> bytes:
    """One panel per protocol: M's eigenvalues by rank for each target, the chosen k marked."""
    figure, panels = panel_per_protocol(sorted(spectra["protocol"].unique()))
    for axis, protocol in panels:
        for target, curve in spectra[spectra["protocol"] == protocol].groupby("target", sort=True):
            line, = axis.plot(curve["rank"], curve["eigenvalue"], label=f"{target} (λ={curve['lam'].iat[0]:g})")
            axis.axvline(curve["kept"].sum() + 0.5, color=line.get_color(), linestyle=":", linewidth=1)
        axis.axhline(0, color="grey", linewidth=0.8)
        axis.set_xlabel("rank (kept first; dotted: chosen k)")
        axis.set_ylabel("eigenvalue of M")
        axis.legend(fontsize=8)
    return titled_png(figure, title)


def gain_plot_png(board: pd.DataFrame, title: str) -> bytes:
    """CLIP-ICM − CLIP (percentage points) per dataset, one bar per model and CLIP-ICM method."""
    gains = board[board["method"].isin(list(BASELINES))]
    figure, panels = panel_per_protocol(sorted(gains["protocol"].unique()))
    for axis, protocol in panels:
        rows = gains[gains["protocol"] == protocol].assign(
            series=lambda f: [f"{model_label(m, p)} {method.removeprefix('clip_icm_')}" + ("" if s == STABLE else f" [{s} split]")
                              for m, p, method, s in zip(f["model"], f["pretrained"], f["method"], f["split"])])
        means = rows.pivot(index="dataset", columns="series", values="delta") * 100
        errors = rows.pivot(index="dataset", columns="series", values="delta_se").fillna(0) * 100
        means.plot.bar(ax=axis, yerr=errors, rot=0, capsize=3)
        axis.axhline(0, color="black", linewidth=0.8)
        axis.set_ylabel("CLIP-ICM − CLIP (points)")
        axis.legend(fontsize=7)
    return titled_png(figure, title)
