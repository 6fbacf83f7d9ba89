"""The two presets on the synthetic causal model, where the invariant subspace is known.

default: L2-normalised embeddings, eigenvectors of the largest eigenvalues, normalise-then-project
zero-shot, LinearProbe. released: the authors' released code (raw embeddings, smallest
eigenvalues, its zero-shot and probe). Also the largest order on raw embeddings, to separate the
two differences. Fit on two training environments where style predicts the class; test on one
where it misleads. Prints a table and writes it to bench/results/presets_synthetic.md (--results FOLDER elsewhere).

    python bench/presets_synthetic.py [--dim 64] [--k 20] [--n 5000] [--lam 1000] [--smoke]
"""
from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: import this checkout

from icm_core import (
    InterventionMoments,
    InvariantProjection,
    LinearProbe,
    accuracy,
    l2_normalize,
    zero_shot_predict,
)
from icm_core.synthetic import SyntheticSCM, largest_principal_angle_deg
from harness import bench_parser, parse, write_table
RECIPES = {  # name: (normalise embeddings, eigenvector order, zero-shot, probe)
    "default": (True, "largest", zero_shot_predict, LinearProbe),
    "released": (False, "released", partial(zero_shot_predict, normalize_images=False),
                 partial(LinearProbe, solver="sklearn")),
    "largest, raw embeddings": (False, "largest", zero_shot_predict, LinearProbe),
}


def measure(dim: int, k: int, n: int, lam: float, seed: int = 0) -> pd.DataFrame:
    scm = SyntheticSCM(dim=dim, n_invariant=k, seed=seed)
    envs = scm.environments(n)
    train = [envs["train0"], envs["train1"]]
    rows = []
    for name, (normalize, order, zero_shot, probe) in RECIPES.items():
        prepare = l2_normalize if normalize else np.asarray
        Z = prepare(np.concatenate([env.Z for env in train]))
        Z_twin = prepare(np.concatenate([env.Z_intervened for env in train]))
        y = np.concatenate([env.labels for env in train])
        test, y_test = prepare(envs["test"].Z), envs["test"].labels
        projection = InvariantProjection(k, lam, order).fit_moments(InterventionMoments.from_pairs(Z, Z_twin))
        rows.append({
            "recipe": name, "normalize": normalize, "order": order,
            "angle_to_invariant_deg": largest_principal_angle_deg(projection.components_, scm.invariant_subspace),
            "zero_shot_clip": accuracy(y_test, zero_shot(test, scm.class_embeddings)),
            "zero_shot_clip_icm": accuracy(y_test, zero_shot(test, scm.class_embeddings, projection)),
            "probe_clip": accuracy(y_test, probe(None).fit(Z, y).predict(test)),
            "probe_clip_icm": accuracy(y_test, probe(projection).fit(Z, y).predict(test)),
        })
    return pd.DataFrame(rows)


def main() -> None:
    parser = bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--lam", type=float, default=1000.0)
    args = parse(parser, smoke={"dim": 16, "k": 4, "n": 300})
    table = measure(args.dim, args.k, args.n, args.lam)
    header = (f"SyntheticSCM(dim={args.dim}, n_invariant={args.k}, seed=0), n={args.n} per environment, "
              f"k={args.k}, lambda={args.lam:g}; test environment: style misleads (agreement 0.1)")
    text = f"{header}\n\n{table.to_markdown(index=False, floatfmt='.3f')}\n"
    print(text)
    write_table(args, "presets_synthetic.md", text)


if __name__ == "__main__":
    main()
