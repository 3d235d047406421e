"""``POST /v1/bids``, the hot path, as a plain Starlette endpoint.

Bids are the one request that arrives by the thousand per second. Through FastAPI's
dependency injection a bid cost ~700 µs of server CPU, most of it the framework's
per-request work (resolving and unwrapping dependencies, re-validating the answer), not the
bid's. This endpoint does the same steps by hand, in the same order and with the same
answers: bearer key → participant (cached, :func:`service.auth.resolve_key`), role check,
the market's ``Bid`` validated from the raw JSON in one pydantic-core call, the batched and
group-committed store (:class:`service.batching.BidBatcher`), and the answer serialised once.
Errors are the same problem bodies as everywhere else (raised as
:class:`~service.problems.ProblemError`, rendered by the app's handler).

FastAPI documents only its own routes, so :func:`document` adds this operation to the
OpenAPI spec from the same models.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from market import Bid as MarketBid
from service.auth import Role, bearer_token, resolve_key
from service.problems import FieldError, ProblemError, from_pydantic
from service.schemas import BidAck
from service.state import ServiceState

__all__ = ["PATH", "REPLAYED", "bid_ack", "document", "post_bid"]

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


async def post_bid(request: Request) -> Response:
    """Submit a bid version for one of your assets; durable before the answer (201).

    The same body again answers the same (with ``Idempotent-Replayed: true``); a different
    body under the same ``bid_id`` and ``version`` answers 409; a higher version replaces the
    earlier ones until gate closure.
    """
    state: ServiceState = request.app.state.service
    principal = await resolve_key(state, bearer_token(request.headers.get("authorization")))
    if principal.role != Role.PROSUMER:
        raise ProblemError(403, "Forbidden", f"role {principal.role} may not do this (prosumer)")
    try:
        raw = await request.body()
    except ClientDisconnect:  # gone, or cut off by the body-size limit (which answered 413)
        return Response(status_code=400)
    try:
        bid = MarketBid.model_validate_json(raw)
    except ValidationError as exc:
        errors = [from_pydantic(err, prefix=("body",)) for err in exc.errors()]
        detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
        raise ProblemError(422, "Invalid request", detail, errors) from None
    # No check_wire here: the market's Bid already refuses non-finite numbers and naive
    # datetimes (allow_inf_nan=False, AwareDatetime); tests/service/test_validation.py
    # sends both.
    accepted = await state.bids.submit(principal, bid)
    return Response(
        bid_ack(accepted.row).model_dump_json(),
        status_code=201,
        media_type="application/json",
        headers=None if accepted.created else {REPLAYED: "true"},
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
        "description": (post_bid.__doc__ or "").strip(),
        "operationId": "post_bid_v1_bids_post",
        "security": [{"HTTPBearer": []}],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": refs["Bid"]}},
        },
        "responses": responses,
    }
    return schema
