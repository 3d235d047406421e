"""``AgentClient``: runs an agent against a live coordinator over HTTP.

The agent is anything that satisfies :class:`ClientAgent` (the same decision code as in the
simulator, wrapped as a population of one). The client registers its assets, reads the
DSO's requests for each open round, declares the agent's baselines for that slot and submits
its bids (both before gate closure: delivery is settled against that baseline), hands it
its awards and reports its meter values after each slot.

Retries are safe: a bid is idempotent by ``(participant, bid_id, version)``, so re-sending
the same body after a timeout or a dropped connection either stores it once or returns the
stored answer. Baselines, meter readings and asset registrations are idempotent the same
way. Only
transport errors, 429 and 5xx are retried (with exponential back-off); any other 4xx is a
problem in the request and is raised as :class:`ServiceError` with the problem body.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

import httpx

from market import Award, Bid, FlexRequest

__all__ = ["AgentClient", "AssetSpec", "ClientAgent", "ServiceError"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AssetSpec:
    """An asset to register: id, pandapower bus, kind and rating in kW."""

    asset_id: str
    bus: int
    p_max_kw: float
    kind: str = "other"


@runtime_checkable
class ClientAgent(Protocol):
    """What :class:`AgentClient` needs from an agent (a population of one)."""

    participant_id: str

    def assets(self) -> Sequence[AssetSpec]:
        """The assets this agent bids with."""
        ...

    def bids_for(self, requests: Sequence[FlexRequest], t_start: datetime) -> list[Bid]:
        """Bids for the slot starting at ``t_start`` given the DSO's requests for it."""
        ...

    def baselines(self, t_start: datetime) -> dict[str, float]:
        """Planned mean power (kW, positive = consumption) of each asset over the slot at
        ``t_start``: declared before gate closure, and what delivery is measured against.
        Called after :meth:`bids_for` for the same slot."""
        ...

    def on_awards(self, awards: Sequence[Award]) -> None:
        """Take note of awards (to dispatch them)."""
        ...

    def meter(self, t_start: datetime) -> dict[str, float]:
        """Metered mean power (kW) of each asset over the slot starting at ``t_start``."""
        ...


class ServiceError(Exception):
    """The coordinator refused a request (a 4xx other than 429).

    Attributes:
        status: HTTP status.
        problem: the problem+json body (``title``, ``detail``, ``errors``...).
    """

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(f"{status} {problem.get('title')}: {problem.get('detail')}")
        self.status = status
        self.problem = problem


class AgentClient:
    """An async HTTP client of the coordinator for one participant.

    Args:
        base_url: the coordinator, e.g. ``http://127.0.0.1:8000``.
        api_key: the participant's key.
        timeout_s: per-request timeout.
        retries: attempts after the first for retryable failures.
        backoff_s: first back-off; doubles per attempt.
        transport: an httpx transport (tests pass ``httpx.ASGITransport(app)``).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout_s: float = 5.0,
        retries: int = 5,
        backoff_s: float = 0.1,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.retries = retries
        self.backoff_s = backoff_s
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout_s,
            transport=transport,
        )
        self._award_cursor = 0
        self._bid_rounds: set[int] = set()
        self._slots: dict[datetime, datetime] = {}
        self._metered: set[datetime] = set()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def request(self, method: str, path: str, json: Any = None) -> Any:
        """Send a request, retrying transport errors, 429 and 5xx; return the JSON body.

        Raises:
            ServiceError: on any other 4xx, or when retries are exhausted on 5xx/429.
            httpx.TransportError: when retries are exhausted on transport errors.
        """
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = await self._http.request(method, path, json=json)
            except httpx.TransportError:
                if last:
                    raise
                log.debug("%s %s: transport error, retrying", method, path)
            else:
                if response.status_code < 400:
                    return response.json()
                retryable = response.status_code == 429 or response.status_code >= 500
                if not retryable or last:
                    raise ServiceError(response.status_code, _problem(response))
            await asyncio.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    async def now(self) -> datetime:
        """The coordinator's clock (which may run accelerated)."""
        body = await self.request("GET", "/health")
        return datetime.fromisoformat(body["now"])

    async def register(self, assets: Sequence[AssetSpec]) -> None:
        """Register assets (idempotent)."""
        for a in assets:
            await self.request(
                "POST",
                "/v1/assets",
                {
                    "asset_id": a.asset_id,
                    "bus": a.bus,
                    "kind": a.kind,
                    "p_max_kw": a.p_max_kw,
                },
            )

    async def open_rounds(self) -> list[dict[str, Any]]:
        """Open rounds, earliest slot first."""
        rounds = await self.request("GET", "/v1/rounds?status=open")
        return sorted(rounds, key=lambda r: r["slot_start"])

    async def flex_requests(self, round_id: int) -> list[FlexRequest]:
        """The DSO's requests in a round."""
        rows = await self.request("GET", f"/v1/flex-requests?round_id={round_id}")
        return [FlexRequest.model_validate(r["request"]) for r in rows]

    async def submit(self, bid: Bid) -> dict[str, Any]:
        """Submit one bid version (safe to retry)."""
        ack: dict[str, Any] = await self.request("POST", "/v1/bids", bid.model_dump(mode="json"))
        return ack

    async def new_awards(self) -> list[Award]:
        """Awards since the last call."""
        rows = await self.request("GET", f"/v1/awards?after={self._award_cursor}")
        awards = [Award.model_validate(r["award"]) for r in rows]
        if rows:
            self._award_cursor = max(self._award_cursor, *(int(r["id"]) for r in rows))
        return awards

    async def declare(self, t_start: datetime, baselines: dict[str, float]) -> None:
        """Declare each asset's baseline for the slot at ``t_start`` (before its gate)."""
        for asset_id, p_kw in baselines.items():
            await self.request(
                "POST",
                "/v1/baselines",
                {"asset_id": asset_id, "t_start": t_start.isoformat(), "p_kw": p_kw},
            )

    async def report(self, t_start: datetime, values: dict[str, float]) -> None:
        """Report each asset's metered mean power over the slot starting at ``t_start``."""
        for asset_id, p_kw in values.items():
            await self.request(
                "POST",
                "/v1/meter-readings",
                {"asset_id": asset_id, "t_start": t_start.isoformat(), "p_kw": p_kw},
            )

    async def step(self, agent: ClientAgent, *, bid_before_gate_s: float = 0.0) -> None:
        """One pass: bid in rounds not yet bid on, collect awards, report ended slots.

        Every slot whose round the client has seen open is metered once it has ended.

        Args:
            agent: the agent deciding bids and metering.
            bid_before_gate_s: only bid in a round once its gate is this close (simulated
                seconds), so that the DSO's requests are in; 0 bids as soon as it opens.
        """
        now = await self.now()
        for rnd in await self.open_rounds():
            gate = datetime.fromisoformat(rnd["gate_closure"])
            start = datetime.fromisoformat(rnd["slot_start"])
            self._slots[start] = datetime.fromisoformat(rnd["slot_end"])
            if rnd["id"] in self._bid_rounds or gate <= now:
                continue
            if bid_before_gate_s and (gate - now).total_seconds() > bid_before_gate_s:
                continue
            requests = await self.flex_requests(rnd["id"])
            # Planning can take 100 ms: off the event loop, so other clients keep going.
            bids = await asyncio.to_thread(agent.bids_for, requests, start)
            try:
                await self.declare(start, agent.baselines(start))
            except ServiceError as exc:
                log.warning("baseline for %s refused: %s", start, exc)
            for bid in bids:
                try:
                    await self.submit(bid)
                except ServiceError as exc:
                    log.warning("bid %s refused: %s", bid.bid_id, exc)
            self._bid_rounds.add(rnd["id"])
        awards = await self.new_awards()
        if awards:
            agent.on_awards(awards)
        for start, end in sorted(self._slots.items()):
            if end <= now and start not in self._metered:
                await self.report(start, await asyncio.to_thread(agent.meter, start))
                self._metered.add(start)

    async def run(
        self,
        agent: ClientAgent,
        *,
        until: datetime,
        poll_s: float = 0.5,
        bid_before_gate_s: float = 0.0,
    ) -> None:
        """Register the agent's assets, then :meth:`step` every ``poll_s`` until ``until``
        (coordinator time)."""
        await self.register(agent.assets())
        while await self.now() < until:
            await self.step(agent, bid_before_gate_s=bid_before_gate_s)
            await asyncio.sleep(poll_s)


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {"title": "HTTP error", "detail": response.text[:500]}
    return body if isinstance(body, dict) else {"title": "HTTP error", "detail": str(body)}
