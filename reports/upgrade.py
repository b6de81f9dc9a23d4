"""The upgrade between two runs, as the gate reads it (``python -m reports compare A B --upgrade FILE``).

FILE is the upgrade record suites/upgrade's gate writes (scenarios/gate.py ``upgrade_record``):

    {"upgrade": "OpenBao 2.6.2 -> 2.7.2", "started": <epoch s>, "finished": <epoch s>,
     "phases": [{"name": "node 0 (active) away", "start": <epoch s>, "end": <epoch s>}, ...],
     "figures": {...},               # failed probes, longest gaps, the outage (seconds)
     "problems": ["..."]}            # why the upgrade's own verdicts failed; [] when they held

A record that is missing or corrupt is a ReportError with one line, never a traceback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reports.run import ReportError, RunReport


@dataclass(frozen=True)
class UpgradePhase:
    name: str
    start: float  # seconds since the epoch (the runs' run.json use the same clock)
    end: float


@dataclass(frozen=True)
class UpgradeRecord:
    path: Path
    title: str
    started: float  # seconds since the epoch
    finished: float
    phases: tuple[UpgradePhase, ...]
    figures: dict[str, Any]
    problems: tuple[str, ...]


def load_upgrade(path: Path) -> UpgradeRecord:
    """Read an upgrade record; ReportError (which file, what to do) when it is missing or malformed."""
    try:
        data = json.loads(path.read_text())
        phases = tuple(UpgradePhase(str(p["name"]), float(p["start"]), float(p["end"])) for p in data["phases"])
        return UpgradeRecord(path, str(data["upgrade"]), float(data["started"]), float(data["finished"]), phases,
                             dict(data.get("figures") or {}), tuple(str(p) for p in data["problems"]))
    except OSError as err:
        raise ReportError(f"no upgrade record at {path} ({err.strerror})",
                          fix="pass the upgrade.json the gate wrote beside its two runs") from None
    except (ValueError, KeyError, TypeError) as err:
        raise ReportError(f"{path} is not an upgrade record ({type(err).__name__}: {err})",
                          fix="pass the upgrade.json the gate wrote, unedited") from None


def _span(report: RunReport) -> tuple[float, float] | None:
    started, finished = report.meta.get("started"), report.meta.get("finished")
    return (float(started), float(finished)) if started and finished else None


def render_timeline(a: RunReport, upgrade: UpgradeRecord, b: RunReport) -> str:
    """Run A, the upgrade's phases and run B on one clock, as seconds from A's start (or the upgrade's, when A's
    run.json has no times), then the upgrade's figures and its verdict."""
    spans = [("A " + a.run_id, _span(a)), *((f"  {p.name}", (p.start, p.end)) for p in upgrade.phases),
             ("B " + b.run_id, _span(b))]
    origin = min([upgrade.started] + [span[0] for _, span in spans if span])
    rows = [(f"upgrade {upgrade.title}", (upgrade.started, upgrade.finished)), *spans]
    rows.sort(key=lambda row: row[1][0] if row[1] else upgrade.started)
    width = max(len(name) for name, _ in rows)
    lines = ["timeline (seconds from the first start):"]
    for name, span in rows:
        when = f"{span[0] - origin:8.1f} .. {span[1] - origin:8.1f}  ({span[1] - span[0]:.1f} s)" if span else \
            "   (no times in its run.json)"
        lines.append(f"  {name.ljust(width)}  {when}")
    if upgrade.figures:
        lines.append("upgrade figures: " + json.dumps(upgrade.figures, sort_keys=True))
    lines.append("upgrade verdict: " + ("passed" if not upgrade.problems else
                                         "failed: " + "; ".join(upgrade.problems)))
    return "\n".join(lines)
