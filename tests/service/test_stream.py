"""Server-sent award events over a real loopback socket (uvicorn in the test's event loop)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from datetime import timedelta

import httpx
import uvicorn
from svc_helpers import bid_body, request_body


async def test_award_stream_delivers_own_awards_only(market) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    app = market.transport.app
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    )
    serving = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        await asyncio.sleep(0.01)
    try:
        dso, alice, bob = (market.parties[n].client for n in ("dso", "alice", "bob"))
        assert (await dso.post("/v1/flex-requests", json=request_body())).status_code == 201
        assert (await alice.post("/v1/bids", json=bid_body())).status_code == 201
        assert (await bob.post("/v1/bids", json=bid_body("bob"))).status_code == 201
        market.clock.advance(timedelta(minutes=8))
        assert (await market.tick()).cleared == [1]

        events = []
        headers = market.parties["alice"].headers
        base = f"http://127.0.0.1:{port}"
        async with (
            httpx.AsyncClient(base_url=base, timeout=5) as client,
            client.stream("GET", "/v1/awards/stream", headers=headers) as stream,
        ):
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.aiter_lines()
            while not events:
                assert time.monotonic() < deadline + 10, "no award event"
                line = await asyncio.wait_for(anext(lines), timeout=5)
                if line.startswith("data: "):
                    events.append(json.loads(line.removeprefix("data: ")))
        assert [(e["participant_id"], e["bid_id"]) for e in events] == [("alice", "alice-b1")]
    finally:
        server.should_exit = True
        await serving
