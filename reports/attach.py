"""Evidence attached to Allure results; every attachment is redacted first.

allure.attach and allure.step are no-ops when no Allure results directory
is configured, so scenarios and suites may call these unconditionally.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import allure

from cluster.secrets import redact
from reports.plot import timeline_svg

LOG_TAIL_LINES = 300


class _Dumps(Protocol):
    def dump(self, into: Path) -> None: ...


@contextlib.contextmanager
def step(title: str) -> Iterator[None]:
    with allure.step(redact(title)):
        yield


def timeline(data: dict[str, Any]) -> None:
    """The timeline JSON, its plot, and the probe transcript (one line per sample)."""
    scenario = data.get("scenario", "scenario")
    allure.attach(redact(json.dumps(data, indent=1)), name=f"{scenario} timeline.json",
                  attachment_type=allure.attachment_type.JSON)
    allure.attach(timeline_svg(data), name=f"{scenario} outcomes over time",
                  attachment_type=allure.attachment_type.SVG)
    lines = [f"t={s['t']:8.3f}..{s.get('end', s['t']):8.3f}s {s['probe']:<6} {s['outcome']:<12} {s.get('detail', '')}"
             for s in data.get("samples") or []]
    allure.attach(redact("\n".join(lines)), name=f"{scenario} probe transcript",
                  attachment_type=allure.attachment_type.TEXT)


def platform_logs(platform: _Dumps, into: Path) -> None:
    """The platform's component logs (redacted by dump, and again here), tail only."""
    try:
        platform.dump(into)
    except OSError as err:  # evidence is best effort; the failure itself is already reported
        allure.attach(f"could not collect platform logs: {type(err).__name__}", name="platform logs",
                      attachment_type=allure.attachment_type.TEXT)
        return
    for log in sorted(into.glob("*.log")):
        tail = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        allure.attach(redact("\n".join(tail)), name=f"log {log.name}", attachment_type=allure.attachment_type.TEXT)


def figures(name: str, data: dict[str, Any]) -> None:
    """Measured figures of a test (an upgrade's failed probes, gaps and outage), as JSON."""
    allure.attach(redact(json.dumps(data, indent=1)), name=f"{name} figures.json",
                  attachment_type=allure.attachment_type.JSON)
