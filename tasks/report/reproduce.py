"""Compare a re-execution with the run it reproduces: per target and method the old and new
accuracy, how many predictions changed, and what changed between them (data per domain, code,
weights, libraries)."""
from __future__ import annotations

import pandas as pd

from tasks.report.numbers import fixed

KEYS = ["protocol", "target", "method"]


def accuracy_changes(old_summary: pd.DataFrame, new_summary: pd.DataFrame,
                     old_predictions: pd.DataFrame, new_predictions: pd.DataFrame) -> pd.DataFrame:
    """One row per protocol x target x method (incl. the `mean` rows): old and new accuracy, their
    difference, and the number of samples whose prediction changed, appeared or disappeared."""
    table = old_summary[[*KEYS, "accuracy"]].merge(
        new_summary[[*KEYS, "accuracy"]], on=KEYS, how="outer", suffixes=("_old", "_new"))
    table = table.rename(columns={"accuracy_old": "old_accuracy", "accuracy_new": "new_accuracy"})
    table["difference"] = table["new_accuracy"] - table["old_accuracy"]
    samples = old_predictions[[*KEYS, "sample_id", "prediction"]].merge(
        new_predictions[[*KEYS, "sample_id", "prediction"]], on=[*KEYS, "sample_id"], how="outer",
        suffixes=("_old", "_new"))
    samples["changed"] = samples["prediction_old"].ne(samples["prediction_new"])  # NaN on one side counts
    per_target = samples.groupby(KEYS)["changed"].sum().reset_index()
    per_method = samples.groupby(["protocol", "method"])["changed"].sum().reset_index().assign(target="mean")
    changed = pd.concat([per_target, per_method], ignore_index=True).rename(columns={"changed": "changed_predictions"})
    table = table.merge(changed, on=KEYS, how="left")
    table["changed_predictions"] = table["changed_predictions"].fillna(0).astype("int64")
    return table.sort_values(KEYS, key=lambda c: c.replace("mean", "~")).reset_index(drop=True)


def _changed(old: dict, new: dict) -> list[str]:
    return sorted(key for key in set(old) | set(new) if old.get(key) != new.get(key))


def what_changed(old: dict, new: dict) -> list[str]:
    """The recorded inputs that differ between two run.json records, one phrase each."""
    changes = []
    old_data, new_data = old["dataset"], new["dataset"]
    if old_data["fingerprint"] != new_data["fingerprint"]:
        domains = _changed(old_data.get("domain_fingerprints", {}), new_data.get("domain_fingerprints", {}))
        where = f"domains whose files changed: {', '.join(domains)}" if domains else "per-domain fingerprints not recorded"
        changes.append(f"dataset fingerprint {old_data['fingerprint']} → {new_data['fingerprint']} ({where})")
    if "provenance" not in old:
        changes.append("the old run records no code, weights or library versions (made before run history)")
        return changes
    old_code, new_code = old["provenance"], new["provenance"]
    if (old_code["package_version"], old_code["source_hash"]) != (new_code["package_version"], new_code["source_hash"]):
        changes.append(f"code version {old_code['package_version']}/{old_code['source_hash']} → "
                       f"{new_code['package_version']}/{new_code['source_hash']}")
    if old_code["weights_id"] != new_code["weights_id"]:
        changes.append(f"weights hash {old_code['weights_id']} → {new_code['weights_id']}")
    libraries = _changed(old_code["libraries"], new_code["libraries"])
    if libraries:
        changes.append("library versions " + ", ".join(
            f"{name} {old_code['libraries'].get(name)} → {new_code['libraries'].get(name)}" for name in libraries))
    return changes


def verdict(changes: pd.DataFrame, inputs: list[str]) -> str:
    """'identical' only when every recorded input and every prediction is the same."""
    per_target = changes[changes["target"] != "mean"]
    n_changed = int(per_target["changed_predictions"].sum())
    if not inputs and n_changed == 0 and (changes["difference"].fillna(1) == 0).all():
        return "identical: same data, code, weights and libraries; every prediction is the same"
    results = (f"{n_changed} prediction(s) changed, largest accuracy difference "
               f"{changes['difference'].abs().max():.4f}" if n_changed else "every prediction is the same")
    cause = "; ".join(inputs) if inputs else "no recorded input changed (non-determinism: device kernels, threads)"
    return f"differs: {cause}; {results}"


def reproduce_markdown(changes: pd.DataFrame, line: str, old_url: str, new_url: str) -> str:
    """The verdict and the table: accuracies at 4 places, the difference signed (never -0.0000)."""
    shown = changes.assign(**{column: changes[column].map(lambda value, signed=column == "difference": fixed(
        value, 4, signed)) for column in changes.select_dtypes("float").columns})
    aligned = ["right" if pd.api.types.is_numeric_dtype(changes[column]) else "left" for column in changes]
    return (f"# Reproduction of `{old_url}`\n\nNew run: `{new_url}`\n\n**Verdict: {line}**\n\n"
            + shown.to_markdown(index=False, disable_numparse=True, colalign=aligned) + "\n")
