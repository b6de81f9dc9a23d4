"""A scenario's timeline: every sample, the moments, the measured times and the verdict.

Written as ``reports/out/<run-id>/timelines/<scenario-id>.json``; the
figures are computed from the samples alone, so anyone can recheck them.
"""

from __future__ import annotations

import json
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

    # -- figures, from the samples -----------------------------------------
    def _of(self, probe: str, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if s.probe == probe and start <= s.t <= end]

    @property
    def time_to_fail_closed_s(self) -> float | None:
        """From the fault to the moment every must-fail probe failed and stayed failed until the restore."""
        if self.fault_at is None or self.zero_failures or not self.must_fail:
            return None
        end = self.restored_at if self.restored_at is not None else float("inf")
        moments = []
        for probe in self.must_fail:
            window = self._of(probe, self.fault_at, end)
            last_ok = max((s.t for s in window if s.ok), default=None)
            after = [s.t for s in window if not s.ok and (last_ok is None or s.t > last_ok)]
            if not after:
                return None  # never failed closed before the restore
            moments.append(min(after))
        return round(max(moments) - self.fault_at, 3)

    @property
    def time_to_recover_s(self) -> float | None:
        """From the restore to the first of CONVERGE successes in a row on every probe."""
        if self.restored_at is None:
            return None
        probes = sorted({s.probe for s in self.samples})
        moments = []
        for probe in probes:
            window = self._of(probe, self.restored_at, float("inf"))
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
        """Zero tolerance: plaintext anywhere, successes after the fail-closed moment, failures where none may be."""
        found = [f"t={s.t}: {s.probe} succeeded in plaintext" for s in self.samples if s.outcome == PLAINTEXT]
        if self.zero_failures:
            found += [f"t={s.t}: {s.probe} failed ({s.outcome}: {s.detail}) where no failure is allowed"
                      for s in self.samples if not s.ok and s.outcome != PLAINTEXT]
        elif self.expected_fail_closed_at is not None and self.restored_at is not None:
            deadline = self.expected_fail_closed_at + self.tolerance_s
            for probe in self.must_fail:
                found += [f"t={s.t}: {probe} succeeded after the fail-closed deadline t={deadline:.3f}"
                          for s in self._of(probe, deadline, self.restored_at)
                          if s.outcome == OK and s.t < self.restored_at]
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
            "samples": [asdict(s) for s in self.samples],
        }

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
