"""The ``gridbid`` command line.

Each sub-command is a thin shell over a package: it parses options, sets up logging,
calls the package's public API and prints a short result. No domain logic lives here.
"""

from pathlib import Path
from typing import Annotated

import typer

from gridbid import __version__
from gridbid.logs import setup_logging

__all__ = ["app"]

app = typer.Typer(
    name="gridbid",
    help="Decentralised, market-based voltage control of distribution grids.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
admin_app = typer.Typer(help="Operator commands for the coordinator service.", no_args_is_help=True)
app.add_typer(admin_app, name="admin")


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"gridbid {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Print the version."
        ),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Warnings and errors only.")] = False,
) -> None:
    """gridbid: agents bid flexibility in a local market to keep a feeder's voltages in band."""
    setup_logging(verbose=verbose, quiet=quiet)


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="Scenario YAML file.")],
    scenario: Annotated[
        str | None, typer.Option(help="Named scenario in the file (default: the first).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Output directory (default: results/FILE-SCENARIO).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Override the scenario's seed.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    backend: Annotated[
        str, typer.Option(help="Where the agents run: 'local' (this process) or 'ray'.")
    ] = "local",
    shards: Annotated[
        int, typer.Option(min=1, help="Ray backend: shard actors per population.")
    ] = 2,
    address: Annotated[
        str | None,
        typer.Option(help="Ray backend: cluster address (default RAY_ADDRESS, else local)."),
    ] = None,
    verbose: Annotated[bool, typer.Option(help="Ray backend: let Ray's own logs through.")] = False,
) -> None:
    """Simulate a scenario: agents self-optimise and bid; write results and a report."""
    from sim.run import run_scenario
    from sim.scenario import ScenarioError, load_scenario

    try:
        chosen = load_scenario(config, scenario)
    except ScenarioError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(code=2) from None
    if seed is not None:
        chosen = chosen.model_copy(update={"seed": seed})
    out = out or Path("results") / f"{config.stem}-{chosen.name}"
    if backend not in ("local", "ray"):
        typer.echo(f"--backend: unknown {backend!r}; known: local, ray", err=True)
        raise typer.Exit(code=2)
    if backend == "ray":
        from sim.ray_backend import run_sharded

        try:
            summary = run_sharded(
                chosen, out, shards=shards, address=address, progress=progress, verbose=verbose
            )
        except ConnectionError as error:
            typer.echo(f"--address: {error}", err=True)
            raise typer.Exit(code=2) from None
    else:
        summary = run_scenario(chosen, out, progress=progress)
    _print_summary(summary)
    typer.echo(f"results: {out}/ (summary.json, *.parquet); report: {out / 'report.html'}")


def _print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    cases = summary["cases"]
    table = Table(title=f"{summary['scenario']}: {summary['agents']} agents, "
                  f"{summary['rounds']} rounds, rule {summary['rule']}")
    table.add_column("metric")
    for case in cases:
        table.add_column(case, justify="right")
    for key in ("violation_bus_minutes", "worst_deviation_pu", "v_max_pu", "v_min_pu",
                "agents_cost_eur", "dso_cost_eur", "messages"):
        row = [key]
        for case in cases.values():
            value = case.get(key, "")
            row.append(f"{value:.4g}" if isinstance(value, float) else str(value))
        table.add_row(*row)
    console = Console()
    console.print(table)
    for key, value in summary["comparison"].items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        console.print(f"  {key}: {shown}")
    console.print(f"  wall time: {summary['wall_time_s']:.1f} s")


@app.command()
def compare(
    config: Annotated[Path, typer.Argument(help="Comparison YAML file.")],
    scenario: Annotated[
        str | None, typer.Option(help="Scenario of the referenced file (default: the file's).")
    ] = None,
    rules: Annotated[
        str | None, typer.Option(help="Comma-separated rules to run (default: all listed).")
    ] = None,
    seeds: Annotated[
        int | None, typer.Option(min=1, help="Seeds per variant (default: the file's).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Output directory (default: results/compare-FILE).")
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address (default RAY_ADDRESS, else local).")
    ] = None,
    verbose: Annotated[bool, typer.Option(help="Let Ray's own logs through.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Run a scenario under several market rules and seeds; compare them side by side."""
    from sim.compare import METRICS, CompareError, run_comparison

    out = out or Path("results") / f"compare-{config.stem}"
    chosen = [r.strip() for r in rules.split(",") if r.strip()] if rules else None
    try:
        table = run_comparison(config, out, scenario_name=scenario, rules=chosen, seeds=seeds,
                               address=address, verbose=verbose, progress=progress)
    except CompareError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(code=2) from None
    except ConnectionError as error:
        typer.echo(f"--address: {error}", err=True)
        raise typer.Exit(code=2) from None
    _print_comparison(table, METRICS)
    failed = table[(table["kind"] == "run") & (table["error"] != "")]
    for _, row in failed.iterrows():
        typer.echo(f"run {row['label']} seed {row['seed']} failed: {row['error']}", err=True)
    typer.echo(f"results: {out / 'comparison.parquet'}; report: {out / 'comparison.html'}")


def _print_comparison(table, metrics: tuple[str, ...]) -> None:
    from rich.console import Console
    from rich.table import Table

    means = table[table["kind"] == "mean"].set_index("label")
    low = table[table["kind"] == "ci_low"].set_index("label")
    high = table[table["kind"] == "ci_high"].set_index("label")
    shown = Table(title="mean [95 % CI] over seeds")
    shown.add_column("metric")
    for label in means.index:
        shown.add_column(str(label), justify="right")
    for metric in metrics:
        cells = []
        for label in means.index:
            m, lo, hi = means.at[label, metric], low.at[label, metric], high.at[label, metric]
            cells.append("–" if m != m else f"{m:.4g}" + ("" if lo != lo else
                                                         f" [{lo:.3g}, {hi:.3g}]"))
        shown.add_row(metric, *cells)
    Console().print(shown)


def _register_service_commands() -> None:
    """``gridbid serve``, ``agent``, ``admin create-participant`` and ``pilot-demo`` are the
    coordinator's own commands (:mod:`service.cli`), registered here unchanged."""
    from service.cli import agent, create_participant, pilot_demo, serve

    app.command("serve")(serve)
    app.command("agent")(agent)
    admin_app.command("create-participant")(create_participant)
    app.command("pilot-demo")(pilot_demo)


_register_service_commands()
