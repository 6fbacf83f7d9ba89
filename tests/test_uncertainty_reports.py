"""Every Δ's interval and McNemar p where a run shows its Δ: the headline (and the run page's one line), the run report's
tables, the trend and the leaderboard; runs written before them still render (tests/test_ui.py, tests/test_history.py)."""
import numpy as np
import pandas as pd
from conftest import hand_made_record, hand_made_selection, hand_made_summary, write_hand_made_run

from icm_core.uncertainty import LEVEL
from tasks.report.leaderboard import aggregate, leaderboard_latex, leaderboard_markdown, paper_tables
from tasks.report.run_report import (
    CI, DELTA, MISSING, mean_comparison, p_text, run_headline, run_report, signed_text,
)
from tasks.report.trend import trend_markdown, trend_table

# (protocol, CLIP-ICM method, target) -> (ci_low, ci_high, mcnemar_p); Δ is read off the accuracies
UNCERTAINTY = {
    ("domain-shift", "clip_icm_zero_shot", "art"): (0.1, 0.4, 0.0004),
    ("domain-shift", "clip_icm_zero_shot", "photo"): (-0.05, 0.55, 0.2),
    ("domain-shift", "clip_icm_zero_shot", "mean"): (0.12, 0.38, 0.00001),
    ("domain-shift", "clip_icm_linear_probe", "art"): (-0.3, 0.1, 0.5),
    ("domain-shift", "clip_icm_linear_probe", "photo"): (-0.0004, 0.1, 1.0),  # a lower end that rounds to zero
    ("domain-shift", "clip_icm_linear_probe", "mean"): (-0.2, 0.15, 0.75),
    ("open-class", "clip_icm_zero_shot", "art"): (-0.1, 0.3, 0.4),
    ("open-class", "clip_icm_zero_shot", "photo"): (0.01, 0.29, 0.04),
    ("open-class", "clip_icm_zero_shot", "mean"): (0.02, 0.23, 0.03),
}


def summary_with_uncertainty() -> pd.DataFrame:
    """The hand-made summary as a run writes it today: delta, ci_low, ci_high, mcnemar_p on the CLIP-ICM rows."""
    summary = hand_made_summary()
    accuracy = summary.set_index(["protocol", "method", "target"])["accuracy"]
    baseline = {"clip_icm_zero_shot": "clip_zero_shot", "clip_icm_linear_probe": "clip_linear_probe"}
    rows = [{"protocol": protocol, "method": method, "target": target, "ci_low": low, "ci_high": high, "mcnemar_p": p,
             "delta": accuracy[(protocol, method, target)] - accuracy[(protocol, baseline[method], target)]}
            for (protocol, method, target), (low, high, p) in UNCERTAINTY.items()]
    return summary.merge(pd.DataFrame(rows), on=["protocol", "method", "target"], how="left")


def test_numbers_are_written_signed_without_negative_zero_and_p_below_a_thousandth_as_a_bound():
    assert [signed_text(value) for value in (0.021, -0.0004, -0.0, 0.0004, -0.02)] == [
        "+0.021", "+0.000", "+0.000", "+0.000", "-0.020"]
    assert [p_text(value) for value in (0.0, 0.00099, 0.001, 0.0234, 1.0, np.nan)] == [
        "< 0.001", "< 0.001", "0.001", "0.023", "1.000", MISSING]
    assert CI == f"{LEVEL:.0%} CI"


def test_the_headline_and_the_run_page_carry_each_interval_and_p():
    summary = summary_with_uncertainty()
    report = run_report(summary, hand_made_selection(), hand_made_record("openai"))
    lines = report.splitlines()
    assert lines[2] == (
        "**CLIP-ICM − CLIP**, mean over targets: domain shift: zero-shot +0.250 (95% CI [+0.120, +0.380], McNemar "
        "p < 0.001), linear probe -0.025 (95% CI [-0.200, +0.150], McNemar p = 0.750); open class: zero-shot +0.125 "
        "(95% CI [+0.020, +0.230], McNemar p = 0.030), zero-shot HM (base, novel) +0.202")
    assert ("| domain shift | linear probe               |  0.500 |      0.475 | -0.025 | [-0.200, +0.150] |       "
            "0.750 |") in report
    assert "| open class   | zero-shot HM (base, novel) |  0.293 |      0.495 | +0.202 |                — |           — |" in report
    assert run_headline(summary, hand_made_selection(), hand_made_record("openai")) == (
        "Office_Home · ViT-B-16 (openai) · CLIP → CLIP-ICM, mean over targets: "
        "domain shift: zero-shot 0.375 → 0.625 (Δ +0.250, 95% CI [+0.120, +0.380], McNemar p < 0.001), "
        "linear probe 0.500 → 0.475 (Δ -0.025, 95% CI [-0.200, +0.150], McNemar p = 0.750), (λ, k) = (10, 8) on 2 targets; "
        "open class: zero-shot 0.350 → 0.475 (Δ +0.125, 95% CI [+0.020, +0.230], McNemar p = 0.030), "
        "zero-shot HM (base, novel) 0.293 → 0.495 (Δ +0.202), (λ, k) = (10, 8) on 2 targets")
    assert "-0.000" not in report and "nan" not in report.lower()


def test_the_exported_models_zero_shot_has_its_delta_over_clips_in_the_run_report():
    summary = summary_with_uncertainty()
    recipe = summary[(summary["protocol"] == "domain-shift") & (summary["method"] == "clip_icm_zero_shot")]
    exported = recipe.assign(method="clip_icm_zero_shot_open_clip", accuracy=recipe["accuracy"] - 0.125,
                             delta=recipe["delta"] - 0.125, ci_low=-0.1, ci_high=0.3, mcnemar_p=0.5)
    report = run_report(pd.concat([summary, exported], ignore_index=True), hand_made_selection(),
                        hand_made_record("openai"))
    heading = "## domain shift: Δ per target, its 95% CI (paired bootstrap over the images) and McNemar p"
    table = report.split(heading)[1].split("##")[0].strip().splitlines()
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in table]
    assert [row for row in cells[2:] if row[0] == "mean"] == [
        ["mean", "zero-shot", "+0.250", "[+0.120, +0.380]", "< 0.001"],
        ["mean", "linear probe", "-0.025", "[-0.200, +0.150]", "0.750"],
        ["mean", "exported zero-shot (open_clip order)", "+0.125", "[-0.100, +0.300]", "0.500"],
    ]


def test_the_run_report_has_every_targets_interval_per_protocol():
    report = run_report(summary_with_uncertainty(), hand_made_selection(), hand_made_record("openai"))
    heading = "## domain shift: Δ per target, its 95% CI (paired bootstrap over the images) and McNemar p"
    table = report.split(heading)[1].split("##")[0].strip().splitlines()
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in table]
    assert cells[0] == ["target", "comparison", DELTA, CI, "McNemar p"]
    assert cells[2:] == [
        ["art", "zero-shot", "+0.250", "[+0.100, +0.400]", "< 0.001"],
        ["art", "linear probe", "-0.100", "[-0.300, +0.100]", "0.500"],
        ["photo", "zero-shot", "+0.250", "[-0.050, +0.550]", "0.200"],
        ["photo", "linear probe", "+0.050", "[+0.000, +0.100]", "1.000"],
        ["mean", "zero-shot", "+0.250", "[+0.120, +0.380]", "< 0.001"],
        ["mean", "linear probe", "-0.025", "[-0.200, +0.150]", "0.750"],
    ]
    assert "## open class: Δ per target" in report
    # a run written before the intervals has no such section
    assert "per target, its 95% CI" not in run_report(hand_made_summary(), hand_made_selection(), hand_made_record())


def test_mean_comparison_takes_the_mean_rows_interval_and_none_for_the_harmonic_mean():
    comparison = mean_comparison(summary_with_uncertainty())
    assert comparison["ci_low"].tolist()[:3] == [0.12, -0.2, 0.02] and np.isnan(comparison["ci_low"].iloc[3])
    assert comparison["mcnemar_p"].tolist()[:3] == [0.00001, 0.75, 0.03]
    assert "ci_low" not in mean_comparison(hand_made_summary())


def test_the_trend_shows_intervals_of_new_runs_beside_old_runs_without(memory_root):
    folder = f"{memory_root}/runs/office"
    write_hand_made_run(memory_root, entry="20261201T020000Z-01234567-old")
    write_hand_made_run(memory_root, entry="20261202T020000Z-01234567-new", summary=summary_with_uncertainty())
    newer = summary_with_uncertainty()
    newer.loc[newer["method"] == "clip_icm_linear_probe", ["ci_low", "ci_high"]] = [0.01, 0.2]
    write_hand_made_run(memory_root, entry="20261203T020000Z-01234567-newer", summary=newer)
    trend = trend_table(folder)
    assert trend["ci_low"].iloc[:4].isna().all() and trend["ci_low"].iloc[4:].tolist()[:2] == [0.12, -0.2]
    markdown = trend_markdown(trend, hand_made_record("openai"), folder)
    assert "| 2026-12-02 02:00:00 | 01234567 | 0.1.0 · fedcba98 | domain shift | zero-shot                  |  0.375 " \
           "|      0.625 | +0.250 | [+0.120, +0.380] |     < 0.001 |" in markdown
    sparklines = [line for line in markdown.split("## Trend, last 3 executions")[1].splitlines() if line.startswith("| ")]
    excluded = {line.split("|")[2].strip(): line.split("|")[-2].strip() for line in sparklines[1:] if "domain" in line}
    # zero-shot's interval excluded 0 in both executions that had one; the probe's only in the newest
    assert excluded == {"zero-shot": "2 of 2", "linear probe": "1 of 2"}


def test_the_leaderboard_marks_cells_whose_interval_excludes_zero_and_counts_trials():
    def trial(run, dataset, icm_accuracy, low, high):
        return [[run, dataset, "clip_zero_shot", 0.5, np.nan, np.nan],
                [run, dataset, "clip_icm_zero_shot", icm_accuracy, low, high]]

    rows = (trial("r1", "PACS", 0.6, 0.02, 0.18) + trial("r2", "PACS", 0.55, -0.03, 0.13)
            + trial("r3", "PACS", 0.65, 0.05, 0.25) + trial("r4", "VLCS", 0.45, -0.09, -0.01)
            + trial("r5", "Office", 0.52, -0.05, 0.09) + trial("r6", "Old", 0.7, np.nan, np.nan))
    trials = pd.DataFrame(rows, columns=["run", "dataset", "method", "accuracy", "ci_low", "ci_high"]).assign(
        model="M", pretrained="none", split="stable", split_seed=0, intervention_seed=0, protocol="domain-shift")
    board = aggregate(trials).set_index(["dataset", "method"])
    assert board.loc[("PACS", "clip_icm_zero_shot"), ["ci_excludes_zero", "n_intervals"]].tolist() == [2, 3]
    assert board.loc[("VLCS", "clip_icm_zero_shot"), ["ci_excludes_zero", "n_intervals"]].tolist() == [1, 1]
    assert board.loc[("Old", "clip_icm_zero_shot"), "n_intervals"] == 0  # a run written before the intervals
    table = paper_tables(aggregate(trials))["domain-shift", "stable"].set_index("Method")
    assert table.loc["clip_icm_zero_shot", ["PACS", "VLCS", "Office", "Old"]].tolist() == [
        "60.0 ± 2.9 (2/3)", "45.0*", "52.0", "70.0"]  # a worse CLIP-ICM is marked too: the interval excludes 0
    assert table.loc["clip_zero_shot", "PACS"] == "50.0 ± 0.0"
    assert "excludes 0" in leaderboard_markdown(aggregate(trials), "t")
    assert "60.0 $\\pm$ 2.9 (2/3)" in leaderboard_latex(aggregate(trials), "t")


def test_the_sweep_artifact_gives_each_cells_difference_with_its_interval():
    from tasks.report.publish import sweep_markdown

    sweep = pd.DataFrame({
        "target": ["art", "art"], "lam": [1.0, 10.0], "n_components": [4, 8], "val_accuracy": [0.5, 0.75],
        "target_zero_shot_accuracy": [0.6, 0.7], "target_linear_probe_accuracy": [0.8, 0.85], "selected": [False, True],
        "target_zero_shot_delta": [-0.00004, 0.1], "target_zero_shot_ci_low": [-0.05, 0.04],
        "target_zero_shot_ci_high": [0.05, 0.16], "target_linear_probe_delta": [0.0, 0.05],
        "target_linear_probe_ci_low": [0.0, -0.01], "target_linear_probe_ci_high": [0.0, 0.11],
    })
    lines = sweep_markdown(sweep).splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == ["target", "lam", "n_components", "val_accuracy", "target zero-shot", "Δ zero-shot [95% CI]",
                      "target linear probe", "Δ linear probe [95% CI]", "selected"]
    assert [cell.strip() for cell in lines[3].strip("|").split("|")][4:8] == [
        "0.7000", "+0.100 [+0.040, +0.160]", "0.8500", "+0.050 [-0.010, +0.110]"]
    assert "+0.000 [-0.050, +0.050]" in lines[2] and "-0.000" not in "\n".join(lines)
