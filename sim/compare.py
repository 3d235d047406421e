"""Market-rule comparisons: one scenario under several rules (and parameter grids) x seeds.

A comparison file (``configs/compare_rules.yaml``) names a scenario of a scenario file, the
rules with optional fixed ``params`` and a ``grid`` of parameter values to sweep, and the
number of seeds. It is parsed once into strict, frozen models (a typo fails naming the key
path). :func:`expand_jobs` turns it into runs; :func:`run_metrics` reduces one finished run
to a row; :func:`aggregate` gives each variant's mean and 95 % confidence interval
(Student's t over the seeds). Ray fans the runs out (:mod:`sim.ray_backend`); nothing here
imports it.

Metrics of a run (market case; ``no_control`` and ``optimum`` are its yardsticks):

* ``violation_minutes`` (any bus outside the band) and ``violation_bus_minutes``;
* ``dso_cost_eur``: what the DSO paid for flexibility;
* ``welfare_gain_eur``: total cost without control minus with the market (agents' energy
  cost plus the violation penalty; DSO payments are transfers and cancel);
* ``efficiency``: the optimum's resolving cost over the market's (``efficiency_vs_optimum``
  of the run's summary; needs ``optimum``);
* ``agents_surplus_eur``: the sellers' revenue minus their own cost of what they delivered,
  summed; and its spread over agents, ``surplus_std_eur`` (fairness: standard deviation of
  each agent's revenue minus flexibility cost);
* ``messages`` (requests + bids + awards), ``requests`` (the DSO's), ``clearing_rounds``,
  ``wall_time_s``.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from scipy import stats

from agents import DSOSettings
from market import available_rules, clear
from market.book import OrderBook
from sim.scenario import Scenario, ScenarioError, load_scenario

__all__ = [
    "METRICS",
    "CompareError",
    "Comparison",
    "RuleVariant",
    "aggregate",
    "comparison_table",
    "expand_jobs",
    "load_comparison",
    "run_comparison",
    "run_metrics",
]

METRICS = (
    "violation_minutes",
    "violation_bus_minutes",
    "dso_cost_eur",
    "welfare_gain_eur",
    "efficiency",
    "agents_surplus_eur",
    "surplus_std_eur",
    "messages",
    "requests",
    "clearing_rounds",
    "wall_time_s",
)


class CompareError(ValueError):
    """A comparison file that cannot be used; the message names the file and key path."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScenarioRef(_Strict):
    """Which scenario to compare: ``file`` (relative to the comparison file) and ``name``."""

    file: str
    name: str | None = None


class RuleVariant(_Strict):
    """A rule, its fixed ``params``, a ``grid`` of parameter values to sweep, and ``dso``:
    DSO settings that differ for this rule (how the buyer states its need is part of the
    market design, e.g. ``request_per: bus`` for the sensitivity-based rules)."""

    rule: str
    params: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, tuple[Any, ...]] = Field(default_factory=dict)
    dso: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known(self) -> Self:
        if self.rule not in available_rules():
            raise ValueError(f"rule: unknown {self.rule!r}; known: {sorted(available_rules())}")
        try:
            DSOSettings.model_validate(self.dso)
        except ValidationError as error:
            first = error.errors()[0]
            key = ".".join(str(part) for part in first["loc"])
            raise ValueError(f"dso.{key}: {first['msg']}") from None
        overlap = sorted(set(self.params) & set(self.grid))
        if overlap:
            raise ValueError(f"grid: {overlap} also fixed in params")
        for combination in self.combinations():
            try:  # the rule refuses unknown or bad params on an empty market
                clear(self.rule, [], _EMPTY_BOOK, combination)
            except ValueError as error:
                raise ValueError(f"params {combination}: {error}") from None
        return self

    def combinations(self) -> list[dict[str, Any]]:
        """``params`` merged with every point of the grid (one if there is no grid)."""
        keys = sorted(self.grid)
        return [
            {**self.params, **dict(zip(keys, values, strict=True))}
            for values in itertools.product(*(self.grid[k] for k in keys))
        ]


class Comparison(_Strict):
    """A comparison: a scenario, rule variants, seeds (``seed_start``, +1, ...)."""

    scenario: ScenarioRef
    rules: tuple[RuleVariant, ...] = Field(min_length=1)
    seeds: int = Field(10, ge=1)
    seed_start: int = Field(0, ge=0)
    yardsticks: tuple[Literal["no_control", "optimum"], ...] | None = None


_EMPTY_BOOK = OrderBook.from_arrays([], [], np.zeros(0, dtype=np.int64), [], [], [])


def load_comparison(
    path: str | Path, scenario_name: str | None = None
) -> tuple[Comparison, Scenario]:
    """Parse a comparison file and load its scenario (``scenario_name`` overrides)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as error:
        raise CompareError(f"{path}: no such file") from error
    except yaml.YAMLError as error:
        raise CompareError(f"{path}: not valid YAML: {error}") from error
    try:
        comparison = Comparison.model_validate(raw)
    except ValidationError as error:
        lines = [f"{path}: comparison is invalid:"]
        for item in error.errors():
            key = ".".join(str(part) for part in item["loc"]) or "(top level)"
            lines.append(f"  {key}: {item['msg']} (got {item.get('input')!r})")
        raise CompareError("\n".join(lines)) from None
    try:
        scenario = load_scenario(
            path.parent / comparison.scenario.file, scenario_name or comparison.scenario.name
        )
    except ScenarioError as error:
        raise CompareError(f"{path}: scenario: {error}") from None
    if comparison.yardsticks is not None:
        scenario = scenario.model_copy(update={"yardsticks": comparison.yardsticks})
    return comparison, scenario


def expand_jobs(
    comparison: Comparison, rules: list[str] | None = None, seeds: int | None = None
) -> list[dict[str, Any]]:
    """One job per variant x parameter point x seed: ``label``, ``rule``, ``params``,
    ``seed`` and ``update`` (the scenario's top-level fields to replace)."""
    chosen = [v for v in comparison.rules if rules is None or v.rule in rules]
    if rules is not None:
        unknown = sorted(set(rules) - {v.rule for v in comparison.rules})
        if unknown:
            raise CompareError(
                f"--rules: {unknown} not in the comparison's rules "
                f"{[v.rule for v in comparison.rules]}"
            )
    jobs = []
    for variant in chosen:
        for params in variant.combinations():
            label = variant.rule + (
                "[" + ",".join(f"{k}={params[k]}" for k in sorted(params)) + "]" if params else ""
            )
            if variant.dso:
                label += "{" + ",".join(f"{k}={variant.dso[k]}" for k in sorted(variant.dso)) + "}"
            for i in range(seeds or comparison.seeds):
                seed = comparison.seed_start + i
                jobs.append(
                    {
                        "label": label,
                        "rule": variant.rule,
                        "params": params,
                        "seed": seed,
                        "update": {
                            "market": {"rule": variant.rule, "params": params},
                            "seed": seed,
                        },
                        "dso": dict(variant.dso),
                    }
                )
    return jobs


def run_metrics(scenario: Scenario, out: Path) -> dict[str, Any]:
    """Run one scenario into ``out`` (no report) and reduce it to a comparison row."""
    from sim.run import run_scenario

    started = time.perf_counter()
    summary = run_scenario(scenario, out, progress=False, report=False)
    wall = time.perf_counter() - started
    cases, comparison = summary["cases"], summary["comparison"]
    market = cases["market"]
    row: dict[str, Any] = {
        "violation_minutes": market["violation_minutes"],
        "violation_bus_minutes": market["violation_bus_minutes"],
        "dso_cost_eur": market["dso_cost_eur"],
        "welfare_gain_eur": np.nan,
        "efficiency": comparison.get("efficiency_vs_optimum"),
        "agents_surplus_eur": comparison.get("sellers_surplus_eur"),
        "surplus_std_eur": np.nan,
        "messages": market["messages"],
        "requests": market["requests"],
        "clearing_rounds": np.nan,
        "wall_time_s": wall,
    }
    if "no_control_total_cost_eur" in comparison:
        row["welfare_gain_eur"] = (
            comparison["no_control_total_cost_eur"] - comparison["market_total_cost_eur"]
        )
    agents = pd.read_parquet(out / "agents.parquet")
    market_rows = agents[agents["case"] == "market"]
    per_agent = market_rows.groupby("agent_id")[["revenue_eur", "flex_cost_eur"]].sum()
    row["surplus_std_eur"] = float(
        (per_agent["revenue_eur"] - per_agent["flex_cost_eur"]).std(ddof=0)
    )
    timeseries = pd.read_parquet(out / "timeseries.parquet")
    row["clearing_rounds"] = int(
        timeseries.loc[timeseries["case"] == "market", "clearing_rounds"].sum()
    )
    return {k: (np.nan if v is None else v) for k, v in row.items()}


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """Per label: mean and 95 % confidence interval (t over seeds) of every metric.

    Returns rows of kind ``mean``, ``ci_low`` and ``ci_high`` per label (seed −1), with the
    same metric columns as the runs; a metric with fewer than two finite values has no
    interval (NaN). Failed runs (NaN metrics, their ``error`` set) are left out; ``error``
    of an aggregate row says how many failed.
    """
    rows = []
    for label, frame in runs.groupby("label", sort=False):
        first = frame.iloc[0]
        failures = int((frame["error"] != "").sum()) if "error" in frame else 0
        base = {
            "label": label,
            "rule": first["rule"],
            "params": first["params"],
            "seed": -1,
            "error": f"{failures} of {len(frame)} runs failed" if failures else "",
        }
        mean, low, high = (
            dict(base, kind="mean"),
            dict(base, kind="ci_low"),
            dict(base, kind="ci_high"),
        )
        for metric in METRICS:
            values = frame[metric].to_numpy(dtype=float)
            values = values[np.isfinite(values)]
            mean[metric] = float(values.mean()) if values.size else np.nan
            if values.size >= 2:
                half = (
                    stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size)
                )
                low[metric], high[metric] = mean[metric] - half, mean[metric] + half
            else:
                low[metric] = high[metric] = np.nan
        rows.extend([mean, low, high])
    return pd.DataFrame(rows)


def comparison_table(
    jobs: list[dict[str, Any]], results: dict[int, dict[str, Any]]
) -> pd.DataFrame:
    """Run rows (kind ``run``) followed by the aggregates, one tidy table.

    Columns: ``kind``, ``label``, ``rule``, ``params`` (JSON), ``seed``, the
    :data:`METRICS`, and ``error`` (empty for a run that finished).
    """
    runs = pd.DataFrame(
        [
            {
                "kind": "run",
                "label": job["label"],
                "rule": job["rule"],
                "params": json.dumps(job["params"], sort_keys=True),
                "seed": job["seed"],
                **results[i],
            }
            for i, job in enumerate(jobs)
            if i in results
        ]
    )
    table = pd.concat([runs, aggregate(runs)], ignore_index=True)
    return table[["kind", "label", "rule", "params", "seed", *METRICS, "error"]]


def run_comparison(
    path: str | Path,
    out: Path,
    *,
    scenario_name: str | None = None,
    rules: list[str] | None = None,
    seeds: int | None = None,
    address: str | None = None,
    verbose: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Run a comparison file over Ray; write ``comparison.parquet`` and ``comparison.html``.

    Each run writes its own tables into ``out/runs/LABEL/seed-N`` (on the node that ran
    it); the table and the report gather the runs' metrics.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from sim.compare_report import write_comparison_report
    from sim.ray_backend import ray_session, run_many

    comparison, scenario = load_comparison(path, scenario_name)
    jobs = expand_jobs(comparison, rules, seeds)
    for job in jobs:  # a variant's DSO settings are merged over the scenario's
        if job["dso"]:
            job["update"]["dso"] = {**scenario.dso.model_dump(), **job["dso"]}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[int, dict[str, Any]] = {}
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with (
        ray_session(address, verbose=verbose),
        Progress(*columns, disable=not progress, transient=True) as bar,
    ):
        task = bar.add_task(f"{scenario.name}: runs", total=len(jobs))

        def done(index: int, row: dict[str, Any]) -> None:
            results[index] = {**row, "error": ""}
            bar.advance(task)

        def failed(index: int, error: BaseException) -> None:
            cause = str(error).strip().splitlines()[-1] if str(error).strip() else repr(error)
            results[index] = {**dict.fromkeys(METRICS, np.nan), "error": cause[:500]}
            bar.advance(task)

        run_many(
            run_metrics,
            scenario,
            [
                (job["update"], out / "runs" / _safe(job["label"]) / f"seed-{job['seed']}")
                for job in jobs
            ],
            done,
            on_error=failed,
        )
    table = comparison_table(jobs, results)
    table.to_parquet(out / "comparison.parquet", index=False)
    write_comparison_report(out, table, scenario.name)
    return table


def _safe(label: str) -> str:
    """A label as a directory name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
