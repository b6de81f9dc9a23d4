"""A scenario's timeline: every sample, the moments, the measured times and the verdict.

Written as ``reports/out/<run-id>/timelines/<scenario-id>.json``; the
figures are computed from the samples alone, so anyone can recheck them
(``Timeline.from_json`` reads one back).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scenarios.monitor import OK, PLAINTEXT, Sample

CONVERGE = 3


@dataclass
class Timeline:
    scenario: str
    platform: str
    must_fail: tuple[str, ...]
    zero_failures: bool
    tolerance_s: float
    recovery_bound_s: float
    samples: list[Sample] = field(default_factory=list)
    fault_at: float | None = None
    restored_at: float | None = None
    expected_fail_closed_at: float | None = None
    fault_evidence: str = ""
    fault_took_effect: bool = False
    steady_again: bool = False
    steady_evidence: str = ""
    notes: list[str] = field(default_factory=list)
    wall_t0: float = 0.0  # Unix seconds at t=0 of the samples: Prometheus's clock (scenarios/evidence.py)
    # The refusal proven from Prometheus (scenarios/evidence.py AuditEvidence.as_json), or why it was not
    # checked ({"checked": false, "detail": ...}); None where the scenario expects no refusal.
    audit: dict[str, Any] | None = None

    # -- figures, from the samples -----------------------------------------
    # A sample is an interval [t, end]: the system decided its outcome at some moment inside it.
    # So a sample is on one side of a moment only when its whole interval is; one that straddles
    # the fault or the restore proves nothing about either side and is left out of both.
    def _during_fault(self, probe: str) -> list[Sample]:
        """Samples of ``probe`` that started at or after the fault and ended by the restore."""
        assert self.fault_at is not None
        end = self.restored_at if self.restored_at is not None else math.inf
        return [s for s in self.samples if s.probe == probe and s.t >= self.fault_at and s.end <= end]

    def _after_restore(self, probe: str) -> list[Sample]:
        assert self.restored_at is not None
        return [s for s in self.samples if s.probe == probe and s.t >= self.restored_at]

    @property
    def time_to_fail_closed_s(self) -> float | None:
        """From the fault to the start of the first failure after which every must-fail probe
        failed until the restore (the latest such moment over the must-fail probes)."""
        if self.fault_at is None or self.zero_failures or not self.must_fail:
            return None
        moments = []
        for probe in self.must_fail:
            window = self._during_fault(probe)
            last_ok = max((s.t for s in window if s.ok), default=None)
            after = [s.t for s in window if not s.ok and (last_ok is None or s.t > last_ok)]
            if not after:
                return None  # never failed closed before the restore
            moments.append(min(after))
        return round(max(moments) - self.fault_at, 3)

    @property
    def time_to_recover_s(self) -> float | None:
        """From the restore to the start of the first of CONVERGE successes in a row, on every probe."""
        if self.restored_at is None:
            return None
        probes = sorted({s.probe for s in self.samples})
        moments = []
        for probe in probes:
            window = self._after_restore(probe)
            found = None
            for i in range(len(window) - CONVERGE + 1):
                if all(s.ok for s in window[i:i + CONVERGE]):
                    found = window[i].t
                    break
            if found is None:
                return None
            moments.append(found)
        return round(max(moments) - self.restored_at, 3)

    @property
    def violations(self) -> list[str]:
        """Zero tolerance: plaintext anywhere, a success that proves access open after the
        fail-closed deadline (it started after the deadline and answered before the restore),
        and, where none may be, any failure."""
        found = [f"t={s.t}: {s.probe} succeeded in plaintext" for s in self.samples if s.outcome == PLAINTEXT]
        if self.zero_failures:
            found += [f"t={s.t}: {s.probe} failed ({s.outcome}: {s.detail}) where no failure is allowed"
                      for s in self.samples if not s.ok and s.outcome != PLAINTEXT]
        elif self.expected_fail_closed_at is not None and self.restored_at is not None:
            deadline = self.expected_fail_closed_at + self.tolerance_s
            for probe in self.must_fail:
                found += [f"t={s.t}: {probe} succeeded after the fail-closed deadline t={deadline:.3f}"
                          for s in self._during_fault(probe) if s.outcome == OK and s.t >= deadline]
        return found

    @property
    def expected_fail_closed_s(self) -> float | None:
        if self.expected_fail_closed_at is None or self.fault_at is None:
            return None
        return round(self.expected_fail_closed_at - self.fault_at, 3)

    @property
    def verdict(self) -> str:
        failed_closed = self.zero_failures or (
            self.time_to_fail_closed_s is not None and self.expected_fail_closed_s is not None
            and self.time_to_fail_closed_s <= self.expected_fail_closed_s + self.tolerance_s)
        recovered = self.time_to_recover_s is not None and self.time_to_recover_s <= self.recovery_bound_s
        ok = self.fault_took_effect and failed_closed and not self.violations and recovered and self.steady_again
        return "passed" if ok else "failed"

    def as_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario, "platform": self.platform, "verdict": self.verdict,
            "violations": self.violations, "fault_at": self.fault_at, "restored_at": self.restored_at,
            "expected_fail_closed_at": self.expected_fail_closed_at,
            "expected_fail_closed_s": self.expected_fail_closed_s,
            "time_to_fail_closed_s": self.time_to_fail_closed_s, "time_to_recover_s": self.time_to_recover_s,
            "tolerance_s": self.tolerance_s, "recovery_bound_s": self.recovery_bound_s,
            "must_fail": list(self.must_fail), "zero_failures": self.zero_failures,
            "fault_took_effect": self.fault_took_effect, "fault_evidence": self.fault_evidence,
            "steady_again": self.steady_again, "steady_evidence": self.steady_evidence, "notes": self.notes,
            "wall_t0": self.wall_t0, "audit": self.audit,
            "samples": [asdict(s) for s in self.samples],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Timeline:
        """A timeline as written by ``as_json``; figures and verdict are computed afresh.

        Timelines written before samples carried their ``end`` are read with each sample ending
        when the next sample of its probe started: a probe runs one sample at a time, so that is
        the latest it can have answered (the widest interval, which judges conservatively).
        """
        raw = sorted(data["samples"], key=lambda s: float(s["t"]))
        samples = []
        for i, item in enumerate(raw):
            end = item.get("end")
            if end is None:
                later = [float(n["t"]) for n in raw[i + 1:] if n["probe"] == item["probe"]]
                end = later[0] if later else math.inf
            samples.append(Sample(float(item["t"]), float(end), str(item["probe"]), str(item["outcome"]),
                                  str(item.get("detail", ""))))
        return cls(
            scenario=data["scenario"], platform=data["platform"], must_fail=tuple(data["must_fail"]),
            zero_failures=bool(data["zero_failures"]), tolerance_s=float(data["tolerance_s"]),
            recovery_bound_s=float(data["recovery_bound_s"]), samples=samples, fault_at=data["fault_at"],
            restored_at=data["restored_at"], expected_fail_closed_at=data["expected_fail_closed_at"],
            fault_evidence=data.get("fault_evidence", ""), fault_took_effect=bool(data["fault_took_effect"]),
            steady_again=bool(data["steady_again"]), steady_evidence=data.get("steady_evidence", ""),
            notes=list(data.get("notes", [])), wall_t0=float(data.get("wall_t0") or 0.0), audit=data.get("audit"),
        )

    def write(self, run_dir: Path) -> Path:
        folder = run_dir / "timelines"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.scenario}.json"
        tmp = path.with_suffix(".json.new")
        tmp.write_text(json.dumps(self.as_json(), indent=1))
        tmp.rename(path)
        point_latest(run_dir)
        return path


def point_latest(run_dir: Path) -> None:
    """reports/out/latest -> the newest run."""
    latest = run_dir.parent / "latest"
    tmp = run_dir.parent / f".latest-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run_dir.name)
    tmp.replace(latest)
