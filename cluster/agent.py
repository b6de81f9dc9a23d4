"""The app's agent protocol (tgpod app): what /call answers, as a CallResult.

The local platform reaches the agent over its Unix socket; the kind platform
through `kubectl exec ... tgpod agent`. Both read the answer here.
"""

from __future__ import annotations

from typing import Any

from cluster.platform import CallResult

APP_PORT = 8080


def call_request(url: str, canary: str, timeout: float) -> dict[str, Any]:
    return {"url": url, "headers": {"X-Trustgrid-Canary": canary}, "timeout": timeout}


def xfcc_ids(body: dict[str, Any]) -> tuple[str, ...]:
    """The server's and the client's SPIFFE IDs, from the X-Forwarded-Client-Cert the server saw."""
    headers = body.get("headers") or {}
    value = next((v[0] for k, v in headers.items() if k.lower() == "x-forwarded-client-cert"), "")
    ids = []
    for part in value.split(";"):
        key, _, item = part.partition("=")
        if key in ("By", "URI"):
            ids.append(item.strip('"'))
    return tuple(ids)


def call_result(answer: dict[str, Any]) -> CallResult:
    body = answer.get("body") or {}
    return CallResult(status=answer.get("status") or None, error=answer.get("error", ""),
                      elapsed=float(answer.get("elapsed", 0.0)), peer_ids=xfcc_ids(body),
                      detail=answer.get("detail", ""), body=body)
