"""Problem details (RFC 9457) for every error the API returns.

Every 4xx/5xx body is ``application/problem+json`` with ``type``, ``title``, ``status``,
``detail`` and, when the request was at fault, ``errors``: a list of ``{field, message,
value}`` naming the offending field (dotted path from the body's root) and its value.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = [
    "FieldError",
    "ProblemError",
    "check_wire",
    "from_pydantic",
    "install_problem_handlers",
    "problem",
]

MEDIA_TYPE = "application/problem+json"


class FieldError(BaseModel):
    """One reason a request was refused, naming the field."""

    field: str
    message: str
    value: Any = None


class ProblemError(Exception):
    """Raise to answer with a problem body.

    Args:
        status: HTTP status code.
        title: short, fixed summary of the problem type.
        detail: human-readable explanation of this occurrence.
        errors: offending fields, if the request body was at fault.
        headers: extra response headers.
    """

    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail or title
        self.errors = errors or []
        self.headers = headers

    @classmethod
    def field(cls, status: int, title: str, field: str, message: str, value: Any) -> ProblemError:
        """A problem caused by one named field."""
        error = FieldError(field=field, message=message, value=_jsonable(value))
        return cls(status, title, f"{field}: {message} (got {error.value!r})", [error])


def problem(
    status: int,
    title: str,
    detail: str,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """Build a problem+json response."""
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    body["detail"] = detail
    if errors:
        body["errors"] = [e.model_dump() for e in errors]
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def install_problem_handlers(app: FastAPI) -> None:
    """Route FastAPI's and Starlette's errors and :class:`ProblemError` to problem bodies."""

    @app.exception_handler(ProblemError)
    async def _problem(_request: Request, exc: ProblemError) -> JSONResponse:
        return problem(exc.status, exc.title, exc.detail, exc.errors, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [from_pydantic(err) for err in exc.errors()]
        detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
        return problem(422, "Invalid request", detail, errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = {401: "Unauthorized", 403: "Forbidden", 404: "Not found"}.get(
            exc.status_code, "HTTP error"
        )
        return problem(exc.status_code, title, str(exc.detail), headers=exc.headers)


def check_wire(value: Any, prefix: str = "body") -> None:
    """Refuse non-finite numbers and naive datetimes anywhere in a parsed body.

    Raises:
        ProblemError: 422 naming the first offending field.
    """
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            check_wire(getattr(value, name), f"{prefix}.{name}")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_wire(item, f"{prefix}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_wire(item, f"{prefix}.{index}")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ProblemError.field(422, "Invalid request", prefix, "must be a finite number", value)
    elif isinstance(value, datetime) and value.tzinfo is None:
        raise ProblemError.field(
            422, "Invalid request", prefix, "must be timezone-aware (UTC offset)", value
        )


def from_pydantic(err: Any, prefix: tuple[str, ...] = ()) -> FieldError:
    """One pydantic error as a :class:`FieldError` (``prefix``: where the model sits, e.g.
    ``("body",)`` as FastAPI reports it)."""
    loc = [str(part) for part in (*prefix, *err.get("loc", ()))]
    if err.get("type") == "json_invalid":
        reason = (err.get("ctx") or {}).get("error", "invalid JSON")
        where = f" at character {loc[1]}" if len(loc) > 1 else ""
        return FieldError(field="body", message=f"malformed JSON{where}: {reason}")
    return FieldError(
        field=".".join(loc) or "body",
        message=err.get("msg", "invalid"),
        value=_jsonable(err.get("input")),
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str | int | float | bool) or value is None:
        return value if not isinstance(value, str) else value[:200]
    return repr(value)[:200]
