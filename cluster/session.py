"""The run's platform session: started once by the owner, attached by workers.

This is the framework-neutral half of the pytest wiring: conftest.py only
translates pytest hooks into these calls.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

from cluster.errors import PlatformUnavailable
from cluster.platform import Platform
from cluster.runstate import runs_root
from cluster.select import attach_platform, attach_run, open_platform
from cluster.settings import Settings

Progress = Callable[[str], None]


class PlatformSession:
    def __init__(self, settings: Settings, progress: Progress) -> None:
        self.settings = settings
        self.name = settings.platform  # resolved by build_settings (never "auto" here)
        self.reason = settings.platform_reason
        self.progress = progress
        self._platform: Platform | None = None
        self._stack = contextlib.ExitStack()
        self._guards = contextlib.ExitStack()  # outlive the platform: closed after it
        self._state_path: Path | None = None

    @property
    def started(self) -> bool:
        return self._platform is not None

    @property
    def state_path(self) -> Path | None:
        return self._state_path

    def start(self) -> Platform:
        """Bring the platform up (owner only), or with --attach take another run's. On failure nothing is left
        running."""
        if self.settings.attach:
            self._platform, self._state_path = attach_run(self.name, self.settings)
            return self._platform
        try:
            self._platform = self._stack.enter_context(open_platform(self.name, self.settings, self.progress))
        except BaseException:
            self._stack.close()
            raise
        self._state_path = runs_root() / self.settings.run_id
        return self._platform

    def attach(self, state_path: Path) -> None:
        self._state_path = state_path

    def require(self) -> Platform:
        if self._platform is None and self._state_path is not None:
            self._platform = attach_platform(self.name, self.settings, self._state_path)
        if self._platform is None:
            raise PlatformUnavailable("no platform was started for this run",
                                      fix="select tests under suites/ so that the session brings one up")
        return self._platform

    def guard(self, context: contextlib.AbstractContextManager[None]) -> None:
        """Hold ``context`` open until close(), after the platform's teardown (a hook watcher)."""
        self._guards.enter_context(context)

    def close(self) -> None:
        try:
            self._stack.close()
        finally:
            self._guards.close()

    def header_lines(self) -> list[str]:
        attached = f", attached to run {self.settings.attach}" if self.settings.attach else ""
        lines = [f"trustgrid: run {self.settings.run_id}, profile {self.settings.profile.name}, "
                 f"platform {self.name} ({self.reason}{attached})"]
        if self._platform is not None:
            lines.append("trustgrid: " + ", ".join(self._platform.versions.lines()[1:]))
        else:
            lines.append("trustgrid: no shared platform started (no suites selected, or suites/upgrade only, "
                         "which opens its own)")
        low, high = self.settings.upgrade_vault
        old, new = self.settings.upgrade_istio
        lines.append(f"trustgrid: upgrades (suites/upgrade): OpenBao {low} -> {high}, Istio {old} -> {new} (canary)")
        return lines
