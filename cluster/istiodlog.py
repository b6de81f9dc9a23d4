"""What istiod says about its plugged-in CA (``ca: plugin``), read from its log on every platform.

istiod watches its cacerts directory and reloads on each write (pilot/pkg/bootstrap/istio_ca.go
handleCACertsFileWatch, handleEvent). It reports the outcome only in its log: one line when the new
intermediate is in use, or a warning or error when it kept the old one (a root bundle that neither
contains nor is contained in the current one, a certificate that does not match its key, ...).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from cluster.errors import TrustgridError, WaitTimeout
from cluster.wait import pause, wait_until

# handleEvent's own words, as istiod 1.31 logs them.
RELOADED = "Istiod has detected the newly added intermediate CA and updated its key and certs accordingly"
REFUSALS = ("Updating new ROOT-CA not supported", "updating new ROOT-CA not supported",
            "Failed to update new Plug-in CA certs", "Failed generating plugged-in istiod key cert",
            "unable to determine signing file format", "failed reading root-cert.pem")
# istiod debounces cacerts events by 100 ms, so a reload can read a half-written set and refuse it
# before the last file's event brings the reload that counts: a refusal is final only when no reload
# follows it for this long.
SETTLE_S = 2.0


@dataclass(frozen=True)
class CacertsReloads:
    """How often istiod took new cacerts and refused them, and its last refusal ('' when none)."""

    reloaded: int
    refused: int
    last_refusal: str


def cacerts_reloads(log: str) -> CacertsReloads:
    reloaded, refused, last = 0, 0, ""
    for line in log.splitlines():
        if RELOADED in line:
            reloaded += 1
        elif any(refusal in line for refusal in REFUSALS):
            refused, last = refused + 1, line.strip()[-300:]
    return CacertsReloads(reloaded, refused, last)


def wait_cacerts_taken(read_log: Callable[[], str], before: CacertsReloads, *, timeout: float,
                       interval: float, clock: Callable[[], float] = time.monotonic,
                       between_polls: Callable[[float], None] = pause) -> None:
    """Return once istiod's log shows a reload after ``before``.

    Raises TrustgridError with istiod's own words when it refused the new files (no reload for
    SETTLE_S after a refusal), or when it said nothing within ``timeout`` seconds.
    """
    refused_at: list[float] = []

    def outcome() -> str:
        now = cacerts_reloads(read_log())
        if now.reloaded > before.reloaded:
            return "taken"
        if now.refused > before.refused:
            refused_at[:] = refused_at or [clock()]
            if clock() - refused_at[0] >= SETTLE_S:
                return now.last_refusal
        return ""

    try:
        result = wait_until(outcome, timeout=timeout, interval=interval, describe="istiod to take the new cacerts",
                            clock=clock, between_polls=between_polls)
    except WaitTimeout:
        result = "nothing in its log about them"
    if result != "taken":
        raise TrustgridError(f"istiod kept its old cacerts: {result}",
                             fix="a new root bundle must contain, or be contained in, the one istiod has")
