"""No report prints a negative zero: a CLIP-ICM that trails CLIP by 0.0001 reads Δ +0.000 in the run report, the
headline, the trend artifact and the reproduction table, never -0.000 (a loss the table does not show)."""
import re

import pandas as pd
import pytest
from conftest import hand_made_record, hand_made_selection, hand_made_summary, write_hand_made_run

from tasks.report.numbers import fixed
from tasks.report.reproduce import reproduce_markdown
from tasks.report.run_report import DELTA, run_headline, run_report
from tasks.report.trend import trend_markdown, trend_table

NEGATIVE_ZERO = re.compile(r"-0\.0+(?![0-9])")


@pytest.mark.parametrize("value, decimals, signed, shown", [
    (-0.0001, 3, True, "+0.000"), (-0.0001, 3, False, "0.000"), (-0.0, 3, True, "+0.000"), (-0.00004, 4, False, "0.0000"),
    (0.0001, 3, True, "+0.000"), (-0.0006, 3, True, "-0.001"), (-0.0006, 3, False, "-0.001"), (0.25, 4, True, "+0.2500"),
    (-1.23456, 1, False, "-1.2"),
])
def test_fixed_rounds_then_signs_and_a_zero_is_never_negative(value, decimals, signed, shown):
    assert fixed(value, decimals, signed) == shown


def a_tiny_loss() -> pd.DataFrame:
    """The hand-made summary with every CLIP-ICM accuracy 0.0001 below its CLIP baseline's."""
    summary = hand_made_summary()
    for method in ("zero_shot", "linear_probe"):
        icm, clip = summary["method"] == f"clip_icm_{method}", summary["method"] == f"clip_{method}"
        for column in ("accuracy", "base_accuracy", "novel_accuracy", "harmonic_mean"):
            summary.loc[icm, column] = summary.loc[clip, column].to_numpy() - 0.0001
    return summary


def test_a_difference_that_rounds_to_zero_is_plus_zero_in_the_report_the_headline_and_the_trend(memory_root):
    summary, record = a_tiny_loss(), hand_made_record("openai")
    report = run_report(summary, hand_made_selection(), record)
    headline = run_headline(summary, hand_made_selection(), record)
    folder = f"{memory_root}/runs/office"
    write_hand_made_run(memory_root, entry="20261201T020000Z-01234567-first", summary=summary)
    trend = trend_markdown(trend_table(folder), record, folder)
    for text in (report, headline, trend):
        assert not NEGATIVE_ZERO.search(text), text
        assert "+0.000" in text
    assert f"({DELTA} +0.000)" in headline
    assert report.count("+0.000") >= 9  # every Δ of both tables and the headline's table


def test_a_reproduction_that_moved_by_a_hair_prints_plus_zero():
    changes = pd.DataFrame({"protocol": "domain-shift", "target": ["art", "mean"], "method": "clip_zero_shot",
                            "old_accuracy": 0.5, "new_accuracy": 0.49999, "difference": -0.00001,
                            "changed_predictions": 0})
    markdown = reproduce_markdown(changes, "differs", "/old", "/new")
    assert not NEGATIVE_ZERO.search(markdown) and markdown.count("+0.0000") == 2
    art = next(line for line in markdown.splitlines() if "| art" in line)
    assert [cell.strip() for cell in art.strip("|").split("|")] == [
        "domain-shift", "art", "clip_zero_shot", "0.5000", "0.5000", "+0.0000", "0"]
