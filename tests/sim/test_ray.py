"""The Ray backend: sharded runs equal local runs, a killed shard recovers, compare's table.

Peer: the local backend (:func:`sim.run.run_scenario` in this process) on the Idrija
``tiny`` scenario (16 rounds, no-control yardstick only, to skip the optimum LP). Sharded
runs must reproduce its ``summary.json`` (minus wall times) and parquet files exactly
(tolerance 0: rows never read each other and the order book keeps the local row order).
One Ray instance (2 CPUs, no dashboard) serves the whole session.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

ray = pytest.importorskip("ray")

from sim.build import build  # noqa: E402
from sim.compare import METRICS, run_comparison  # noqa: E402
from sim.engine import RoundEngine  # noqa: E402
from sim.ray_backend import (  # noqa: E402
    ShardedFactory,
    ShardedPopulation,
    ShardFailedError,
    run_sharded,
    shard_bounds,
    shard_rows,
)
from sim.run import run_scenario  # noqa: E402
from sim.scenario import Scenario, load_scenario  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="session")
def ray_instance():
    """One local Ray instance for every test of the session."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny() -> Scenario:
    """Idrija's four-hour morning with only the no-control yardstick."""
    scenario = load_scenario(CONFIGS / "idrija.yaml", "tiny")
    return scenario.model_copy(update={"yardsticks": ("no_control",)})


@pytest.fixture(scope="module")
def local_run(tiny: Scenario, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The peer: the local backend's results."""
    out = tmp_path_factory.mktemp("local")
    run_scenario(tiny, out, progress=False, report=False)
    return out


def _without_wall_times(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_wall_times(v) for k, v in value.items() if "wall_time" not in k}
    return value


def assert_same_results(expected: Path, actual: Path) -> None:
    """Same summary (minus wall times) and the same parquet tables (minus timings)."""
    summary = [_without_wall_times(json.loads((d / "summary.json").read_text()))
               for d in (expected, actual)]
    assert summary[0] == summary[1]
    names = sorted(p.name for p in expected.glob("*.parquet") if p.stem != "timings")
    assert names == sorted(p.name for p in actual.glob("*.parquet") if p.stem != "timings")
    assert "agents.parquet" in names
    for name in names:
        left, right = pd.read_parquet(expected / name), pd.read_parquet(actual / name)
        timing = [c for c in left.columns if c.startswith("time_") and c.endswith("_s")]
        pd.testing.assert_frame_equal(left.drop(columns=timing), right.drop(columns=timing),
                                      check_exact=True)


def test_shard_bounds_cut_where_the_bus_changes() -> None:
    import numpy as np

    bus = np.repeat([1, 2, 3], [40, 45, 15])
    assert shard_bounds(bus, np.ones(100), 2) == [(0, 40), (40, 100)]
    weight = np.r_[np.full(40, 3.0), np.ones(60)]  # the first bus's sites own assets
    assert shard_bounds(bus, weight, 2) == [(0, 40), (40, 100)]
    assert shard_bounds(bus, np.ones(100), 4) == [(0, 25), (25, 50), (50, 75), (75, 100)]
    assert shard_bounds(bus[:10], np.ones(10), 20) == [(i, i + 1) for i in range(10)]


def test_shard_rows_keep_each_bus_on_one_shard_and_mix_the_populations() -> None:
    """Rows come population by population (here 60 cheap homes, then 20 costly EV homes),
    each spread over the same 10 buses: a cut in bus order gives each shard both kinds and
    about half the weight, a bus never split, every row once."""
    import numpy as np

    bus = np.r_[np.tile(np.arange(10), 6), np.tile(np.arange(10), 2)]
    weight = np.r_[np.full(60, 0.2), np.full(20, 10.2)]
    rows = shard_rows(bus, weight, 2)
    assert sorted(np.concatenate(rows).tolist()) == list(range(80))
    assert all((np.diff(r) > 0).all() for r in rows)
    assert not set(bus[rows[0]].tolist()) & set(bus[rows[1]].tolist())
    for r in rows:
        assert (r < 60).any() and (r >= 60).any()
        assert abs(weight[r].sum() - weight.sum() / 2) <= 2 * 10.4


RAY_LOG_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [DIWEF] \d+ \d+\]")
"""The prefix of a line from Ray's C++ logging ([date time,ms LEVEL pid tid])."""


@pytest.mark.parametrize("shards", [1, 2])
def test_sharded_run_equals_local_run(
    ray_instance, tiny: Scenario, local_run: Path, tmp_path: Path, shards: int, capfd
) -> None:
    run_sharded(tiny, tmp_path, shards=shards, progress=False, report=False)
    # Ray's core once wrote an error line per run about restartable actors with
    # constructor arguments in the object store; the shards load their sites by a call.
    ray_lines = [line for line in capfd.readouterr().err.splitlines() if RAY_LOG_LINE.match(line)]
    assert not ray_lines, ray_lines[:3]
    assert_same_results(local_run, tmp_path)


class _KillOnce(ShardedPopulation):
    """Kills shard 0 (Ray may restart it) when planning round 5; then once more in
    round 9 right after its bids were gathered (the actor has plan and bids to lose)."""

    def plan(self, horizon, base_kw_true, pv_kw_per_kwp_true):
        if horizon.first_slot == 5:
            ray.kill(self.actors[0], no_restart=False)
        return super().plan(horizon, base_kw_true, pv_kw_per_kwp_true)

    def bids(self, baseline, requests, t_start, t_end, round_id):
        table = super().bids(baseline, requests, t_start, t_end, round_id)
        if round_id == 12:
            ray.kill(self.actors[0], no_restart=False)
        return table


@pytest.fixture(scope="module")
def tiny_cadence4(tiny: Scenario) -> Scenario:
    """The same, with sites that plan their whole horizon only every 4 slots."""
    return tiny.model_copy(
        update={"time": tiny.time.model_copy(update={"replan_every_slots": 4})}
    )


@pytest.fixture(scope="module")
def local_run_cadence4(tiny_cadence4: Scenario, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("local4")
    run_scenario(tiny_cadence4, out, progress=False, report=False)
    return out


@pytest.mark.parametrize("cadence", [1, 4])
def test_killed_shard_recovers_with_identical_results(
    ray_instance, request: pytest.FixtureRequest, tmp_path: Path, cadence: int
) -> None:
    """Round 5 re-decides against round 4's plan when the cadence is 4: the restarted
    shard must rebuild that plan's cost to go to give the same results."""
    suffix = "" if cadence == 1 else "_cadence4"
    scenario = request.getfixturevalue(f"tiny{suffix}")
    expected = request.getfixturevalue(f"local_run{suffix}")
    factory = ShardedFactory(2, max_restarts=4, cpus_per_shard=0.5,
                             population_class=_KillOnce)
    try:
        run_scenario(scenario, tmp_path, progress=False, report=False,
                     population_factory=factory)
    finally:
        factory.close()
    market = factory.made[0]
    assert market.restarts[0] == 2, market.restarts
    assert market.restarts[1] == 0
    assert_same_results(expected, tmp_path)


def test_exhausted_restarts_fail_the_run_clearly(ray_instance, tiny: Scenario) -> None:
    setup = build(tiny)
    population = ShardedPopulation(setup, shards=2, max_restarts=0, cpus_per_shard=0.5)
    engine = RoundEngine(setup, market=True, population=population)
    try:
        engine.step()
        ray.kill(population.actors[0], no_restart=False)
        with pytest.raises(ShardFailedError, match=r"shard 0 .* restarts are exhausted"):
            engine.step()
    finally:
        population.close()


def test_compare_two_rules_two_seeds_writes_the_table(ray_instance, tmp_path: Path) -> None:
    config = tmp_path / "compare.yaml"
    config.write_text(
        f"scenario: {{file: {CONFIGS / 'idrija.yaml'}, name: tiny}}\n"
        "rules: [{rule: pay_as_bid, dso: {request_per: zone}}, {rule: pay_as_clear}]\n"
        "seeds: 2\n"
        "yardsticks: [no_control]\n"
    )
    out = tmp_path / "out"
    table = run_comparison(config, out, progress=False)
    stored = pd.read_parquet(out / "comparison.parquet")
    assert list(stored.columns) == ["kind", "label", "rule", "params", "seed", *METRICS,
                                    "error"]
    runs = stored[stored["kind"] == "run"]
    assert sorted(zip(runs["rule"], runs["seed"], strict=True)) == [
        ("pay_as_bid", 0), ("pay_as_bid", 1), ("pay_as_clear", 0), ("pay_as_clear", 1)]
    assert (runs["error"] == "").all(), runs["error"].tolist()
    assert runs["messages"].gt(0).all()
    for metric in ("welfare_gain_eur", "agents_surplus_eur", "surplus_std_eur", "dso_cost_eur"):
        assert runs[metric].notna().all(), metric
    labels = {"pay_as_bid": "pay_as_bid{request_per=zone}", "pay_as_clear": "pay_as_clear"}
    for kind in ("mean", "ci_low", "ci_high"):
        assert sorted(stored.loc[stored["kind"] == kind, "label"]) == sorted(labels.values())
    means = stored[stored["kind"] == "mean"].set_index("label")
    for rule, label in labels.items():
        assert means.at[label, "messages"] == pytest.approx(
            runs.loc[runs["rule"] == rule, "messages"].mean())
    # The zone override reached the runs: pay_as_bid's DSO asked per zone, so never more
    # requests than pay_as_clear's per-bus DSO in the same seed.
    for seed in (0, 1):
        one = runs[runs["seed"] == seed].set_index("rule")
        assert one.at["pay_as_bid", "requests"] <= one.at["pay_as_clear", "requests"]
    assert len(table) == len(stored)
    page = (out / "comparison.html").read_text()
    assert "comparison_dso_cost_eur.png" in page
    assert (out / "comparison_violation_minutes.png").stat().st_size > 0


_RAY_CURRENT_CLUSTER = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
"""Where a local ``ray.init()`` looks for a running cluster to join."""


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_run_connects_to_an_existing_cluster(tmp_path: Path) -> None:
    """`gridbid run --backend ray --address` on a one-node cluster started with `ray start`
    (token authentication on, as Ray starts clusters by default): the run completes on the
    cluster's workers, and without the token mode it fails with the hint, not a traceback."""
    import shutil
    import subprocess
    import sys
    import time

    bin_dir = Path(sys.executable).parent
    port = _free_port()
    # Its own temp dir (short: Ray's socket paths must fit 107 bytes), so the head's
    # "current cluster" file does not send later local ray.init() calls to a dead cluster.
    temp_dir = tempfile.mkdtemp(prefix="gbray")
    env = os.environ | {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}
    head = subprocess.Popen(  # noqa: S603 - our own venv's ray CLI
        [str(bin_dir / "ray"), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
         f"--temp-dir={temp_dir}", "--include-dashboard=false", "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        import yaml

        document = yaml.safe_load((CONFIGS / "idrija.yaml").read_text())
        document["scenarios"]["small"] = {  # 4 rounds of tiny, no yardsticks
            "extends": "tiny",
            "time": {"start": "2026-06-15", "start_hour": 8, "rounds": 4},
            "yardsticks": [],
        }
        config = tmp_path / "small.yaml"
        config.write_text(yaml.safe_dump(document))
        address = f"127.0.0.1:{port}"
        cmd = [str(bin_dir / "gridbid"), "run", str(config), "--scenario",
               "small", "--backend", "ray", "--shards", "2", "--address", address,
               "--no-progress", "--out", str(tmp_path / "out")]
        deadline = time.monotonic() + 120
        while True:  # the head takes a few seconds to accept drivers
            done = subprocess.run(cmd, env=env, capture_output=True, text=True,  # noqa: S603
                                  timeout=600)
            if done.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert done.returncode == 0, done.stderr[-2000:]
        ray_lines = [
            line for line in done.stderr.splitlines()
            if "logging.cc" in line or " INFO " in line or " WARNING " in line
        ]
        assert not ray_lines, ray_lines[:5]  # Ray's own logs stay off the terminal
        summary = json.loads((tmp_path / "out" / "summary.json").read_text())
        assert summary["rounds"] > 0 and "market" in summary["cases"]
        refused = subprocess.run(cmd, env=env | {"RAY_AUTH_MODE": "disabled"},  # noqa: S603
                                 capture_output=True, text=True, timeout=300)
        assert refused.returncode == 2
        assert "RAY_AUTH_MODE=token" in refused.stderr and "Traceback" not in refused.stderr
    finally:
        head.terminate()
        head.wait(timeout=60)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert not _RAY_CURRENT_CLUSTER.exists() or _current_cluster_alive()


def _current_cluster_alive() -> bool:
    """Whether the cluster named in Ray's default "current cluster" file still answers."""
    import socket

    text = _RAY_CURRENT_CLUSTER.read_text().split()[0]
    host, port = text.rsplit(":", 1)
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, int(port))) == 0
