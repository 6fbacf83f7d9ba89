"""Diagnostics of each fitted projection (what it keeps, how clear the cut at k is) and the eigen-spectrum plot."""
from __future__ import annotations


import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from icm_core import Selection, eigengap, movement_kept, movement_kept_by_family, positive_eigenvalues, variance_kept
from tasks.embed import INTERVENED, ORIGINAL
from tasks.catalog import EmbeddingCatalog
from tasks.selection import total_moments
from tasks.storage import join, write_bytes
from tasks.figures import figure_png, pyplot


@task(name="diagnose-projection", cache_policy=NO_CACHE)
def diagnose_projection(index: EmbeddingCatalog, selection: Selection, per_domain: dict, text, sources, classes) -> dict:
    """What the chosen projection keeps: intervention movement on the sources' held-out validation
    pairs (all, and per intervention family), data variance, and how clear the cut at k is."""
    projection = selection.projection
    originals, Z = index.load(sources, "val", classes, ORIGINAL)
    intervened, Z_intervened = index.load(sources, "val", classes, INTERVENED)
    twin = pd.Series(np.arange(len(intervened)), index=intervened["sample_id"])
    paired = originals["sample_id"].map(twin)
    has_twin = paired.notna().to_numpy()
    twins = paired[has_twin].astype(int).to_numpy()
    diagnostics = {
        "variance_kept": variance_kept(total_moments(per_domain, sources, text).second_moment(), projection.components_),
        "positive_eigenvalues": positive_eigenvalues(selection.eigenvalues[selection.lam]),
        "eigengap": eigengap(selection.eigenvalues[selection.lam], selection.n_components),
        "movement_kept_train": projection.retained_intervention_,
        "movement_kept_val": float("nan"),
    }
    if has_twin.any():
        pairs = (Z[has_twin], Z_intervened[twins])
        diagnostics["movement_kept_val"] = movement_kept(*pairs, projection.components_)
        families = intervened["view"].to_numpy()[twins]
        for family, share in movement_kept_by_family(*pairs, families, projection.components_).items():
            diagnostics[f"movement_kept_val_{family}"] = share
    return diagnostics


def spectrum_plot_png(spectra: pd.DataFrame, title: str) -> bytes:
    """One panel per protocol: M's eigenvalues by rank for each target, the chosen k marked."""
    plt = pyplot()

    protocols = sorted(spectra["protocol"].unique())
    figure, axes = plt.subplots(1, len(protocols), figsize=(6 * len(protocols), 4), squeeze=False)
    for axis, protocol in zip(axes[0], protocols):
        for target, curve in spectra[spectra["protocol"] == protocol].groupby("target", sort=True):
            line, = axis.plot(curve["rank"], curve["eigenvalue"], label=f"{target} (λ={curve['lam'].iat[0]:g})")
            axis.axvline(curve["kept"].sum() + 0.5, color=line.get_color(), linestyle=":", linewidth=1)
        axis.axhline(0, color="grey", linewidth=0.8)
        axis.set_xlabel("rank (kept first; dotted: chosen k)")
        axis.set_ylabel("eigenvalue of M")
        axis.set_title(protocol.replace("_", " "))
        axis.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    return figure_png(figure)


@task(name="write-spectrum-plot", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def write_spectrum_plot(spectra: pd.DataFrame, run_url: str, title: str) -> str:
    return write_bytes(join(run_url, "eigen_spectrum.png"), spectrum_plot_png(spectra, title))
