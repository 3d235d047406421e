"""``POST /v1/bids``, the hot path, as a small ASGI middleware in front of the app.

Bids are the one request that arrives by the thousand per second. Through FastAPI's routing
and dependency injection a bid cost ~700 µs of server CPU, most of it the framework's
per-request work (resolving and unwrapping dependencies, request and response objects, four
layers of middleware), not the bid's. :class:`BidIntake` answers ``POST /v1/bids`` itself
and passes every other request on to the app. It does the same steps as the routes do, in
the same order and with the same answers: the body-size limit (413), bearer key →
participant (cached, :func:`service.auth.resolve_key`), role check (403), the market's
``Bid`` validated from the raw JSON in one pydantic-core call (422 naming the field), the
batched, group-committed store (:class:`service.batching.BidBatcher`: 201 only after the
commit), and the answer serialised once. Errors are the API's problem bodies
(:func:`service.problems.problem`); anything unexpected propagates to the server-error
middleware outside, as from any route.

FastAPI documents only its own routes, so :func:`document` adds this operation to the
OpenAPI spec from the same models.
"""

from __future__ import annotations

import inspect
from typing import Any

from pydantic import ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from market import Bid as MarketBid
from service.auth import Role, bearer_token, resolve_key
from service.problems import FieldError, ProblemError, from_pydantic, problem
from service.schemas import BidAck

__all__ = ["PATH", "REPLAYED", "BidIntake", "bid_ack", "document"]

PATH = "/v1/bids"
REPLAYED = "Idempotent-Replayed"


def bid_ack(row: Any) -> BidAck:
    """The answer for a stored bid version (a :class:`~service.bids.StoredBid` or ORM row)."""
    return BidAck(
        bid_id=row.bid_id,
        version=row.version,
        round_id=row.round_id,
        asset_id=row.asset_id,
        accepted_at=row.created_at,
        bid=row.body,
    )


class BidIntake:
    """Answers ``POST /v1/bids``; everything else goes to ``app``.

    Args:
        app: the wrapped ASGI app (the FastAPI app's inner stack).
        state: the app's :class:`~service.state.ServiceState`.
    """

    def __init__(self, app: ASGIApp, state: Any) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        try:
            status, body, replayed = await self._bid(scope, receive)
        except ProblemError as exc:
            response = problem(exc.status, exc.title, exc.detail, exc.errors, exc.headers)
            await response(scope, receive, send)
            return
        except _ClientGoneError:
            return
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        if replayed:
            headers.append((REPLAYED.lower().encode(), b"true"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _bid(self, scope: Scope, receive: Receive) -> tuple[int, bytes, bool]:
        """Submit a bid version for one of your assets; durable before the answer (201).

        The same body again answers the same (with ``Idempotent-Replayed: true``); a
        different body under the same ``bid_id`` and ``version`` answers 409; a higher
        version replaces the earlier ones until gate closure.
        """
        authorization = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
        principal = await resolve_key(self.state, bearer_token(authorization))
        if principal.role != Role.PROSUMER:
            raise ProblemError(
                403, "Forbidden", f"role {principal.role} may not do this (prosumer)"
            )
        raw = await _read_body(scope, receive, self.state.config.max_body_bytes)
        try:
            bid = MarketBid.model_validate_json(raw)
        except ValidationError as exc:
            errors = [from_pydantic(err, prefix=("body",)) for err in exc.errors()]
            detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
            raise ProblemError(422, "Invalid request", detail, errors) from None
        # No check_wire here: the market's Bid already refuses non-finite numbers and naive
        # datetimes (allow_inf_nan=False, AwareDatetime); test_validation.py sends both.
        accepted = await self.state.bids.submit(principal, bid)
        return 201, bid_ack(accepted.row).model_dump_json().encode(), not accepted.created


class _ClientGoneError(Exception):
    """The client disconnected before its body arrived: nothing to answer."""


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes (declared or streamed) with 413."""
    for name, value in scope["headers"]:
        if name == b"content-length" and (not value.isdigit() or int(value) > limit):
            raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGoneError
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _too_large(limit: int) -> ProblemError:
    return ProblemError(
        413,
        "Payload too large",
        f"request body exceeds {limit} bytes",
        [FieldError(field="body", message=f"larger than {limit} bytes")],
    )


def document(schema: dict[str, Any]) -> dict[str, Any]:
    """Add ``POST /v1/bids`` (request ``Bid``, answer ``BidAck``, problems) to a spec."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    refs = {}
    for model in (MarketBid, BidAck, FieldError):
        body = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(body.pop("$defs", {}))
        components.setdefault(model.__name__, body)
        refs[model.__name__] = {"$ref": f"#/components/schemas/{model.__name__}"}
    problem = {
        "content": {
            "application/problem+json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "errors": {"type": "array", "items": refs["FieldError"]},
                    },
                }
            }
        }
    }
    responses: dict[str, Any] = {
        "201": {
            "description": "Stored (or replayed: header Idempotent-Replayed: true)",
            "content": {"application/json": {"schema": refs["BidAck"]}},
        }
    }
    for code, what in (
        ("401", "Missing, unknown or revoked key"),
        ("403", "Not a prosumer"),
        ("404", "Unknown or foreign asset"),
        ("409", "Bid id reused with another body, stale version, or gate closed"),
        ("413", "Body too large"),
        ("422", "Invalid bid (the field is named)"),
    ):
        responses[code] = {"description": what, **problem}
    schema.setdefault("paths", {}).setdefault(PATH, {})["post"] = {
        "tags": ["market"],
        "summary": "Submit a bid",
        "description": inspect.cleandoc(BidIntake._bid.__doc__ or ""),
        "operationId": "post_bid_v1_bids_post",
        "security": [{"HTTPBearer": []}],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": refs["Bid"]}},
        },
        "responses": responses,
    }
    return schema
