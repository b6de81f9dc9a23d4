"""istiod's word on its plugged-in CA: a reload counts, a refusal is final once no reload follows it.

The lines are istiod's own (pilot/pkg/bootstrap/istio_ca.go handleEvent), in its log format.
"""

from __future__ import annotations

import pytest

from cluster.errors import TrustgridError
from cluster.istiodlog import SETTLE_S, cacerts_reloads, wait_cacerts_taken
from tests.fakeclock import FakeClock

# Recorded from the local platform's istiod (tests/test_plugin_ca.py), run paths shortened.
STARTED = "2026-12-01T03:26:59.991899Z\tinfo\tAdded cacerts files watcher at /run/istiod/cacerts\n"
UPDATE = ("2026-12-01T03:27:04.553357Z\tinfo\tUpdate Istiod cacerts\n"
          "2026-12-01T03:27:04.553462Z\tinfo\tUsing istiod file format for signing ca files\n")
STRANGER = "2026-12-01T03:27:04.553561Z\twarn\tUpdating new ROOT-CA not supported\n"
RELOADED = ("2026-12-01T03:27:06.705281Z\tinfo\tIstiod certificates are reloaded\n"
            "2026-12-01T03:27:06.705052Z\tinfo\tIstiod has detected the newly added intermediate CA and updated "
            "its key and certs accordingly\n")
# Not seen live: handleEvent's error with KeyCertBundle.Verify's (security/pkg/pki/util/keycertbundle.go).
HALF = ("2026-12-01T03:27:30.100000Z\terror\tFailed to update new Plug-in CA certs: the cert does not match the "
        "key: x509: requested SignatureAlgorithm does not match private key type\n")


def test_reloads_and_refusals_are_counted() -> None:
    seen = cacerts_reloads(STARTED + UPDATE + RELOADED + UPDATE + STRANGER)
    assert (seen.reloaded, seen.refused) == (1, 1)
    assert seen.last_refusal.endswith("Updating new ROOT-CA not supported")


def test_a_reload_after_the_write_is_taken() -> None:
    clock = FakeClock()
    logs = iter([STARTED, STARTED + UPDATE, STARTED + UPDATE + RELOADED])
    wait_cacerts_taken(lambda: next(logs), cacerts_reloads(STARTED), timeout=5, interval=0.1, clock=clock,
                       between_polls=clock.advance)


def test_a_half_written_set_refused_then_taken_is_taken() -> None:
    """The 100 ms debounce may read the new key with the old certificate; the next event brings the reload."""
    clock = FakeClock()
    log = STARTED

    def read() -> str:
        return log + HALF + (RELOADED if clock.now >= SETTLE_S / 2 else "")

    wait_cacerts_taken(read, cacerts_reloads(log), timeout=5, interval=0.1, clock=clock, between_polls=clock.advance)


def test_a_refusal_with_no_reload_after_it_is_one_line_in_istiods_words() -> None:
    clock = FakeClock()
    with pytest.raises(TrustgridError) as raised:
        wait_cacerts_taken(lambda: STARTED + UPDATE + STRANGER, cacerts_reloads(STARTED), timeout=30, interval=0.1,
                           clock=clock, between_polls=clock.advance)
    assert "istiod kept its old cacerts" in str(raised.value) and "ROOT-CA not supported" in str(raised.value)
    assert "\n" not in str(raised.value)
    assert clock.now < 5  # settled, not timed out


def test_silence_is_reported_at_the_deadline() -> None:
    clock = FakeClock()
    with pytest.raises(TrustgridError, match="nothing in its log about them"):
        wait_cacerts_taken(lambda: STARTED, cacerts_reloads(STARTED), timeout=3, interval=0.1, clock=clock,
                           between_polls=clock.advance)
