"""``report.html`` with PNG plots, next to a run's tables."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

__all__ = ["write_report"]

_COLOURS = {"market": "tab:blue", "no_control": "tab:red", "optimum": "tab:green"}


def _envelope(out: Path, volts: pd.DataFrame, band: tuple[float, float]) -> str:
    fig, ax = plt.subplots(figsize=(10, 4))
    for case, frame in volts.groupby("case"):
        grouped = frame.groupby("round")["vm_pu"]
        hi, lo = grouped.max(), grouped.min()
        colour = _COLOURS.get(str(case), "grey")
        ax.plot(hi.index, hi.to_numpy(), color=colour, label=f"{case} max")
        ax.plot(lo.index, lo.to_numpy(), color=colour, linestyle="--", label=f"{case} min")
    for limit in band:
        ax.axhline(limit, color="black", linewidth=0.8, linestyle=":")
    ax.set_xlabel("round (15-minute slot)")
    ax.set_ylabel("bus voltage (pu)")
    ax.set_title("Voltage envelope: highest and lowest bus per slot")
    ax.legend(ncol=3, fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "voltage_envelope.png", dpi=110)
    plt.close(fig)
    return "voltage_envelope.png"


def _heatmap(out: Path, volts: pd.DataFrame, band: tuple[float, float]) -> str:
    cases = [c for c in ("no_control", "market") if c in set(volts["case"])]
    fig, axes = plt.subplots(1, len(cases), figsize=(6 * len(cases), 4), squeeze=False)
    for ax, case in zip(axes[0], cases, strict=True):
        grid = volts[volts["case"] == case].pivot(index="bus", columns="round", values="vm_pu")
        image = ax.imshow(
            grid.to_numpy(),
            aspect="auto",
            cmap="coolwarm",
            vmin=band[0] - 0.02,
            vmax=band[1] + 0.02,
        )
        ax.set_title(f"bus voltages, {case}")
        ax.set_xlabel("round")
        ax.set_ylabel("bus (row)")
        fig.colorbar(image, ax=ax, label="pu")
    fig.tight_layout()
    fig.savefig(out / "voltage_heatmap.png", dpi=110)
    plt.close(fig)
    return "voltage_heatmap.png"


def _prices(out: Path, awards: pd.DataFrame, series: pd.DataFrame) -> str:
    fig, ax = plt.subplots(figsize=(10, 3.5))
    market = series[series["case"] == "market"]
    ax.bar(market["round"], market["awarded_kw"], color="tab:blue", label="awarded kW")
    ax.set_xlabel("round")
    ax.set_ylabel("awarded flexibility (kW)")
    if len(awards):
        price = awards.groupby("round").apply(
            lambda f: np.average(f["price_eur_per_kwh"], weights=f["p_kw"] + 1e-12),
            include_groups=False,
        )
        twin = ax.twinx()
        twin.plot(
            price.index, price.to_numpy(), "o", color="tab:orange", markersize=3, label="mean price"
        )
        twin.set_ylabel("award price (EUR/kWh)")
    ax.set_title("Flexibility bought and its price")
    fig.tight_layout()
    fig.savefig(out / "prices_volumes.png", dpi=110)
    plt.close(fig)
    return "prices_volumes.png"


def _revenue(out: Path, agents: pd.DataFrame) -> str:
    market = agents[agents["case"] == "market"].groupby("kind")["revenue_eur"].sum()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(market.index.astype(str), market.to_numpy(), color="tab:blue")
    ax.set_ylabel("revenue from flexibility (EUR)")
    ax.set_title("Revenue per agent type")
    fig.tight_layout()
    fig.savefig(out / "revenue_by_type.png", dpi=110)
    plt.close(fig)
    return "revenue_by_type.png"


def _table(cases: dict[str, dict[str, Any]]) -> str:
    keys = [
        "violation_bus_minutes",
        "violation_minutes",
        "worst_deviation_pu",
        "v_max_pu",
        "v_min_pu",
        "agents_cost_eur",
        "dso_cost_eur",
        "agents_revenue_eur",
        "messages",
    ]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cases)
    rows = []
    for key in keys:
        cells = []
        for case in cases.values():
            value = case.get(key, "")
            cells.append(
                f"<td>{value:.4g}</td>"
                if isinstance(value, float)
                else f"<td>{html.escape(str(value))}</td>"
            )
        rows.append(f"<tr><th>{key}</th>{''.join(cells)}</tr>")
    return f"<table><tr><th></th>{head}</tr>{''.join(rows)}</table>"


def write_report(out: Path, summary: dict[str, Any], frames: dict[str, pd.DataFrame]) -> Path:
    """Write the PNG plots and ``report.html`` into ``out``; return the report's path."""
    volts = frames["bus_voltages"]
    scenario_band = tuple(summary["band_pu"])
    images = [
        _envelope(out, volts, scenario_band),
        _heatmap(out, volts, scenario_band),
        _prices(out, frames["awards"], frames["timeseries"]),
        _revenue(out, frames["agents"]),
    ]
    comparison = "".join(
        f"<li>{html.escape(k)}: {v:.4g}</li>"
        if isinstance(v, float)
        else f"<li>{html.escape(k)}: {html.escape(str(v))}</li>"
        for k, v in summary["comparison"].items()
    )
    body = (
        f"<h1>gridbid run: {html.escape(summary['scenario'])}</h1>"
        f"<p>grid {html.escape(summary['grid'])}, rule {html.escape(summary['rule'])}, "
        f"{summary['agents']} agents, {summary['buses']} buses, {summary['rounds']} rounds, "
        f"seed {summary['seed']}, config {summary['config_hash']}</p>"
        f"{_table(summary['cases'])}<h2>Comparison</h2><ul>{comparison}</ul>"
        + "".join(f'<p><img src="{name}" alt="{name}"></p>' for name in images)
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>gridbid report</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
        "td,th{padding:2px 8px;text-align:right}</style></head>"
        f"<body>{body}</body></html>"
    )
    path = out / "report.html"
    path.write_text(page)
    return path
