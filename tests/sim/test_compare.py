"""Comparison files: rule variants, their parameter grids and DSO settings become jobs.

(Running a comparison needs Ray: tests/sim/test_ray.py runs one on a tiny scenario.)
"""

from pathlib import Path

import pytest

from sim.compare import CompareError, expand_jobs, load_comparison

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_the_shipped_comparison_expands_to_variants_times_seeds() -> None:
    comparison, scenario = load_comparison(CONFIGS / "compare_rules.yaml")
    jobs = expand_jobs(comparison)
    labels = sorted({job["label"] for job in jobs})
    assert len(jobs) == len(labels) * comparison.seeds == 5 * 10
    assert "locational" in labels
    assert "pay_as_bid{request_per=zone}" in labels
    assert "iterative_price[step=0.3]{request_per=zone}" in labels
    by_label = {job["label"]: job for job in jobs}
    assert by_label["pay_as_clear{request_per=zone}"]["dso"] == {"request_per": "zone"}
    assert by_label["locational"]["dso"] == {}
    assert scenario.dso.request_per == "bus"  # the Idrija pilot's own setting


def test_a_bad_dso_override_is_refused_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "cmp.yaml"
    path.write_text(
        f"scenario: {{file: {CONFIGS / 'idrija.yaml'}, name: tiny}}\n"
        "rules: [{rule: pay_as_bid, dso: {request_per: feeder}}]\n"
    )
    with pytest.raises(CompareError, match=r"rules\.0.*dso\.request_per"):
        load_comparison(path)
