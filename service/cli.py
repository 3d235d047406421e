"""Command-line entry points of the coordinator, as plain functions and a typer sub-app.

``gridbid/cli.py`` wires these as ``gridbid serve``, ``gridbid admin create-participant`` and
``gridbid pilot-demo``; ``python -m service.cli ...`` runs them directly.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated

import httpx
import typer
from fastapi import FastAPI
from pydantic import ValidationError

from service.auth import Role
from service.client import ServiceError
from service.config import load_config
from service.db import Database, default_sqlite_url
from service.participants import create_participant as _create_participant
from service.schemas import ParticipantIn

__all__ = ["agent", "app", "app_from_env", "create_participant", "pilot_demo", "serve"]

DEFAULT_DB = default_sqlite_url("gridbid.sqlite")

app = typer.Typer(
    help="The gridbid coordinator service.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command("serve")
def serve(
    db: Annotated[
        str | None, typer.Option(help="Database URL (default: ./gridbid.sqlite).")
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    config: Annotated[Path | None, typer.Option(help="Service config (YAML).")] = None,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Worker processes sharing the port.")
    ] = 1,
    keep_alive: Annotated[
        int, typer.Option(min=1, help="Seconds an idle agent connection is kept open.")
    ] = 75,
) -> None:
    """Run the coordinator's HTTP API with uvicorn until interrupted.

    With ``--workers N`` uvicorn runs N processes on one socket. Each runs the scheduler as
    well: opening, clearing and settling a round are guarded by the database (a row lock on
    the round and the primary keys of ``clearings`` and ``settlement_runs``), so whichever
    process comes first does it, exactly once.
    """
    import uvicorn

    from service.app import create_app

    settings = load_config(config)  # fail here, once, on a bad config
    # Agents poll every few seconds over one connection; uvicorn's default keep-alive (5 s)
    # would close it between polls and make each agent reconnect.
    options = {"log_level": "warning", "access_log": False, "timeout_keep_alive": keep_alive}
    if workers == 1:
        application = create_app(db or DEFAULT_DB, config=settings, freeze_gc=True)
        uvicorn.run(application, host=host, port=port, **options)  # type: ignore[arg-type]
        return
    os.environ[_ENV_DB] = db or DEFAULT_DB
    os.environ[_ENV_CONFIG] = str(config) if config is not None else ""
    uvicorn.run(
        "service.cli:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        **options,  # type: ignore[arg-type]
    )


_ENV_DB, _ENV_CONFIG = "GRIDBID_SERVE_DB", "GRIDBID_SERVE_CONFIG"


def app_from_env() -> FastAPI:
    """The app of one ``serve --workers N`` process (uvicorn calls this in each worker)."""
    from service.app import create_app

    return create_app(
        os.environ[_ENV_DB],
        config=load_config(os.environ[_ENV_CONFIG] or None),
        freeze_gc=True,
    )


@app.command("create-participant")
def create_participant(
    name: Annotated[str, typer.Argument(help="Participant id.")],
    role: Annotated[str, typer.Option(help="prosumer | dso | operator | observer")] = "prosumer",
    db: Annotated[
        str | None, typer.Option(help="Database URL (default: ./gridbid.sqlite).")
    ] = None,
) -> str:
    """Create a participant and print its API key, which is shown this once only."""
    try:
        admitted = ParticipantIn(id=name, role=role)  # type: ignore[arg-type]
    except ValidationError as exc:
        for err in exc.errors():
            field = ".".join(str(part) for part in err["loc"])
            typer.echo(f"{field}: {err['msg']} (got {err.get('input')!r})", err=True)
        raise typer.Exit(code=2) from None
    key = asyncio.run(_admit(db or DEFAULT_DB, admitted.id, admitted.role))
    typer.echo(key)
    return key


async def _admit(url: str, name: str, role: Role) -> str:
    from service.clock import SystemClock
    from service.problems import ProblemError

    database = Database(url)
    try:
        await database.create_schema()
        try:
            _, key = await _create_participant(database, name, role, SystemClock().now())
        except ProblemError as exc:
            typer.echo(f"create-participant: {exc.detail}", err=True)
            raise typer.Exit(code=1) from None
        return key
    finally:
        await database.dispose()


@app.command("agent")
def agent(
    config: Annotated[Path, typer.Option(help="Agent YAML (participant_id, bus, preset...).")],
    url: Annotated[str, typer.Option(help="Coordinator URL, e.g. http://127.0.0.1:8000.")],
    key: Annotated[str, typer.Option(help="The participant's API key.")],
) -> None:
    """Run one building, storage or heating-plant agent against a live coordinator."""
    from service.site_agent import load_agent_config, run_agent

    try:
        parsed = load_agent_config(config)
    except ValueError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(code=2) from None
    try:
        asyncio.run(run_agent(parsed, url, key))
    except (httpx.HTTPError, ServiceError) as error:
        typer.echo(f"gridbid agent: coordinator at {url}: {error}", err=True)
        raise typer.Exit(code=1) from None


@app.command("pilot-demo")
def pilot_demo(
    homes: Annotated[
        int, typer.Option(min=0, help="Homes from each of the scenario's home populations.")
    ] = 1,
    slot_seconds: Annotated[
        float, typer.Option(min=0.1, help="Wall-clock seconds per 15-minute slot.")
    ] = 0.5,
    hours: Annotated[float, typer.Option(min=1, max=24, help="Simulated hours.")] = 24.0,
) -> None:
    """Start a coordinator and the Idrija pilot's agents on loopback for an accelerated day."""
    from service.demo import run_demo

    run_demo(homes_per_population=homes, slot_seconds=slot_seconds, hours=hours)


if __name__ == "__main__":
    app()
