"""Questions to a Prometheus server's HTTP API, each kept with its answer as evidence.

Prometheus's own API (docs: querying/api.md): ``GET /api/v1/query?query=&time=`` answers a vector,
``GET /api/v1/query_range?query=&start=&end=&step=`` a matrix, both as
``{"status": "success", "data": {"resultType": ..., "result": [...]}}``, and a refusal as
``{"status": "error", "errorType": ..., "error": ...}``. Times are Unix seconds; sample values are strings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import requests

from cluster.errors import TrustgridError
from cluster.secrets import redact

TIMEOUT_S = 5.0


class PrometheusUnavailable(TrustgridError):
    """Prometheus did not answer, or refused the question (its own error text)."""


@dataclass(frozen=True)
class Series:
    """One time series of an answer: its ``labels`` and its ``points`` as (Unix seconds, value)."""

    labels: dict[str, str]
    points: tuple[tuple[float, float], ...]

    def as_json(self) -> dict[str, Any]:
        return {"labels": self.labels, "points": [list(p) for p in self.points]}


@dataclass(frozen=True)
class Asked:
    """A question and its answer as the timeline records them: the API (``query`` or ``query_range``),
    the PromQL, the times asked about, and the series answered (or Prometheus's error)."""

    api: str
    expr: str
    params: dict[str, float]
    series: tuple[Series, ...] = ()
    error: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"api": self.api, "expr": self.expr, "params": self.params,
                "series": [s.as_json() for s in self.series], "error": self.error}


def _value(text: object) -> float:
    try:
        return float(str(text))
    except ValueError:
        return math.nan


def parse_answer(body: object) -> tuple[Series, ...]:
    """The series of a successful answer (vector or matrix). Raises PrometheusUnavailable with Prometheus's
    own error for a refusal, or naming what was malformed."""
    if not isinstance(body, dict):
        raise PrometheusUnavailable("Prometheus answered something that is not a JSON object",
                                    fix="point --prometheus-url at a Prometheus server's base URL")
    if body.get("status") != "success":
        raise PrometheusUnavailable(f"Prometheus refused the query: {body.get('errorType')}: {body.get('error')}",
                                    fix="check the PromQL and the server's version")
    data = body.get("data") or {}
    found = []
    for item in data.get("result") or []:
        labels = {str(k): str(v) for k, v in (item.get("metric") or {}).items()}
        raw = item.get("values") if "values" in item else [item.get("value")]
        points = tuple((float(t), _value(v)) for t, v in (p for p in raw if p))
        found.append(Series(labels, points))
    return tuple(found)


@dataclass
class PrometheusApi:
    """A Prometheus server at ``url`` (its base, as ``http://127.0.0.1:9090``). Every question asked, and its
    answer, is appended to ``asked``; a question Prometheus refused is recorded and raised."""

    url: str
    timeout: float = TIMEOUT_S
    asked: list[Asked] = field(default_factory=list)
    session: requests.Session = field(default_factory=requests.Session)

    def _get(self, api: str, expr: str, params: dict[str, float]) -> tuple[Series, ...]:
        try:
            query: dict[str, str | float] = {"query": expr, **params}
            response = self.session.get(f"{self.url.rstrip('/')}/api/v1/{api}", params=query, timeout=self.timeout)
            series = parse_answer(response.json())
        except (requests.RequestException, ValueError) as err:
            problem = PrometheusUnavailable(f"Prometheus at {self.url} did not answer: {type(err).__name__}",
                                            fix="check that it runs, or pass --prometheus-url")
            self.asked.append(Asked(api, expr, params, error=redact(str(problem))))
            raise problem from None
        except PrometheusUnavailable as err:
            self.asked.append(Asked(api, expr, params, error=redact(str(err))))
            raise
        self.asked.append(Asked(api, expr, params, series))
        return series

    def instant(self, expr: str, at: float) -> tuple[Series, ...]:
        """``expr`` evaluated at Unix time ``at``."""
        return self._get("query", expr, {"time": round(at, 3)})

    def range(self, expr: str, start: float, end: float, step: float = 1.0) -> tuple[Series, ...]:
        """``expr`` evaluated every ``step`` seconds from ``start`` to ``end`` (Unix seconds)."""
        return self._get("query_range", expr, {"start": round(start, 3), "end": round(end, 3), "step": step})

    def ready(self) -> bool:
        """Prometheus's ``/-/ready`` answers 200 (its storage is open and it serves queries)."""
        try:
            return self.session.get(f"{self.url.rstrip('/')}/-/ready", timeout=self.timeout).status_code == 200
        except requests.RequestException:
            return False
