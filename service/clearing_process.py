"""Clearing a large round in a child process, with JSON over its pipes.

A round's clearing parses its bids, keeps their latest versions, builds the order book and
runs the rule: for 10^5 bids that is seconds of CPU. In a thread of the server process it
holds the GIL for all of it, and the event loop, which gives the GIL up at every socket
call and must wait up to a switch interval (5 ms) to get it back each time, then answers
bids hundreds of milliseconds late. A child process shares only the cores, which the OS
shares fairly. The child gets the rule, its parameters, the requests and the bids' stored
JSON (one per line; never pickled) on stdin and writes the result as one JSON object; the
rule is the same pure function :func:`~service.market_ops.run_clearing` calls in-process.

Run as ``python -m service.clearing_process``; :func:`clear_in_child` is the server's side.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from market import Bid, ClearingResult, FlexRequest
from service.market_ops import latest_versions, run_clearing

__all__ = ["clear_in_child", "main"]


async def clear_in_child(
    rule: str,
    requests: Sequence[FlexRequest],
    bid_texts: Sequence[str],
    params: dict[str, Any],
) -> tuple[int, ClearingResult]:
    """Clear in a child process; returns (latest bid versions cleared, the result).

    Raises:
        RuntimeError: the child failed (its stderr's end is in the message), as a rule that
            raises would.
    """
    header = {
        "rule": rule,
        "params": params,
        "requests": [r.model_dump(mode="json") for r in requests],
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service.clearing_process",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    payload = "\n".join([json.dumps(header), *bid_texts]).encode()
    out, err = await proc.communicate(payload)
    if proc.returncode != 0:
        tail = err.decode(errors="replace")[-1500:]
        raise RuntimeError(f"clearing process exited {proc.returncode}: {tail}")
    answer = json.loads(out)
    return int(answer["n_bids"]), ClearingResult.model_validate(answer["result"])


def main() -> None:
    """The child: read the header line and the bid lines from stdin, write the result.

    Anything a library prints while clearing (a solver's banner) goes to stderr, so stdout
    carries the answer only.
    """
    answer_fd = os.dup(1)
    os.dup2(2, 1)
    header = json.loads(sys.stdin.readline())
    bids = latest_versions([Bid.model_validate_json(line) for line in sys.stdin if line.strip()])
    requests = [FlexRequest.model_validate(r) for r in header["requests"]]
    result = run_clearing(header["rule"], requests, bids, header["params"])
    answer = json.dumps({"n_bids": len(bids), "result": result.model_dump(mode="json")})
    sys.stdout.flush()
    with os.fdopen(answer_fd, "w") as out:
        out.write(answer)


if __name__ == "__main__":
    main()
