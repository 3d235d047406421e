"""``comparison.html``: one PNG per metric (mean and 95 % interval per rule, seeds as dots)
and the aggregate table."""

from __future__ import annotations

import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from sim.compare import METRICS

__all__ = ["write_comparison_report"]

_UNITS = {
    "violation_minutes": "minutes with a bus outside the band",
    "violation_bus_minutes": "bus-minutes outside the band",
    "dso_cost_eur": "EUR paid by the DSO",
    "welfare_gain_eur": "EUR, total cost without control minus with the market",
    "efficiency": "optimum total cost / market total cost",
    "agents_surplus_eur": "EUR, revenue minus cost of resolving",
    "surplus_std_eur": "EUR, spread of per-agent surplus",
    "messages": "requests + bids + awards",
    "clearing_rounds": "clearing iterations",
    "wall_time_s": "seconds per run",
}


def _plot(out: Path, table: pd.DataFrame, metric: str) -> str | None:
    runs = table[table["kind"] == "run"]
    labels = list(dict.fromkeys(runs["label"]))
    by_kind = {
        kind: table[table["kind"] == kind].set_index("label")[metric]
        for kind in ("mean", "ci_low", "ci_high")
    }
    if not np.isfinite(runs[metric].to_numpy(dtype=float)).any():
        return None
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(labels)), 3.6))
    x = np.arange(len(labels))
    mean = by_kind["mean"].reindex(labels).to_numpy(dtype=float)
    low = by_kind["ci_low"].reindex(labels).to_numpy(dtype=float)
    high = by_kind["ci_high"].reindex(labels).to_numpy(dtype=float)
    error = np.nan_to_num(np.vstack([mean - low, high - mean]))
    ax.bar(x, mean, color="tab:blue", alpha=0.5, yerr=error, capsize=6, label="mean, 95 % CI")
    for i, label in enumerate(labels):
        values = runs.loc[runs["label"] == label, metric].to_numpy(dtype=float)
        ax.scatter(np.full(values.size, i), values, color="black", s=12, zorder=3)
    ax.set_xticks(x, labels, rotation=15, ha="right", fontsize=8)
    ax.set_ylabel(_UNITS.get(metric, metric), fontsize=8)
    ax.set_title(metric)
    fig.tight_layout()
    name = f"comparison_{metric}.png"
    fig.savefig(out / name, dpi=100)
    plt.close(fig)
    return name


def write_comparison_report(out: Path, table: pd.DataFrame, scenario: str) -> Path:
    """Write ``comparison.html`` and its PNGs into ``out``; return the HTML's path."""
    means = table[table["kind"] == "mean"].set_index("label")
    low = table[table["kind"] == "ci_low"].set_index("label")
    high = table[table["kind"] == "ci_high"].set_index("label")
    n_runs = int((table["kind"] == "run").sum())
    head = "".join(f"<th>{html.escape(m)}</th>" for m in METRICS)
    body = []
    for label in means.index:
        cells = []
        for metric in METRICS:
            m, lo, hi = means.at[label, metric], low.at[label, metric], high.at[label, metric]
            interval = f" [{lo:.4g}, {hi:.4g}]" if np.isfinite(lo) else ""
            cells.append(f"<td>{m:.4g}{interval}</td>" if np.isfinite(m) else "<td>–</td>")
        body.append(f"<tr><th>{html.escape(str(label))}</th>{''.join(cells)}</tr>")
    plots = [name for metric in METRICS if (name := _plot(out, table, metric))]
    images = "".join(f'<img src="{name}" alt="{name}">' for name in plots)
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>gridbid comparison: {html.escape(scenario)}</title>
<style>body{{font-family:sans-serif}}td,th{{padding:2px 6px;font-size:12px;text-align:right}}
img{{max-width:48%}}</style></head><body>
<h1>Market rules on {html.escape(scenario)}</h1>
<p>{n_runs} runs; per rule the mean over seeds and its 95&nbsp;% confidence interval
(Student's t). Raw rows: comparison.parquet.</p>
<table><tr><th>rule</th>{head}</tr>{"".join(body)}</table>
{images}</body></html>
"""
    path = out / "comparison.html"
    path.write_text(page)
    return path
