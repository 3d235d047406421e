"""``gridbid pilot-demo``: the Idrija sites as the scenario file defines them, and a short run."""

from __future__ import annotations

import pytest

from service.demo import idrija_sites, run_demo


def test_idrija_sites_come_from_the_scenario_with_their_overrides() -> None:
    sites, settings = idrija_sites(homes_per_population=2)
    by_id = {s.participant_id: s for s in sites}
    # configs/idrija.yaml: school@60, sports centre@90, heating plant@30, battery@120
    assert {(k, by_id[k].bus) for k in ("school", "sports_centre", "heating_plant")} == {
        ("school", 60),
        ("sports_centre", 90),
        ("heating_plant", 30),
    }
    assert by_id["community_battery"].bus == 120
    assert by_id["heating_plant"].spec.tank.capacity_kwh == 1160.0  # the scenario's override
    assert by_id["home_all_1"].spec.ev.p_max_kw == 11.0
    assert [s.preset for s in sites].count("home_heat_pump") == 2
    assert len({s.bus for s in sites}) == len(sites)
    assert settings["time"]["start"]


def test_unknown_scenario_is_named(tmp_path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("scenarios: {}\n")
    with pytest.raises(ValueError, match="summer"):
        idrija_sites(path)


@pytest.mark.slow
def test_short_demo_clears_and_settles_with_declared_baselines(capsys) -> None:
    """Four simulated hours (06:00 is not reached: no DSO requests yet, so no awards) at
    0.4 s per slot: every site declares baselines, rounds clear and settle."""
    result = run_demo(homes_per_population=1, slot_seconds=0.4, hours=4)
    assert result["rounds"]["settled"] >= 10, result
    assert result["baselines declared"] >= 6 * 10, result  # six sites, ten slots each
    assert "pilot demo: 6 Idrija sites" in capsys.readouterr().out
