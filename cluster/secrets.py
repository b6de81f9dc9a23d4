"""Secret hygiene: a registry of known secret values plus patterns.

Everything the platform learns that is secret (root token, unseal keys,
service-account JWTs, private keys) is registered here the moment it is
read, so the logging filter and the report writers can scrub it even when
it has no recognisable shape (an unseal key is just base64).
"""

from __future__ import annotations

import logging
import re
import threading

REDACTED = "[REDACTED]"

# Shapes that are secret wherever they appear, registered or not.
_PATTERNS: tuple[re.Pattern[str], ...] = (
    # PEM private keys of any kind (RSA, EC, PKCS#8, encrypted).
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
    # JWTs: three base64url segments, the first two starting with '{"'.
    re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    # A JWT that pytest's assertion rewriting shortened to "eyJhbGciOiJS...0dXJlLWJ5dGVz".
    re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.\.\.[A-Za-z0-9_.-]*"),
    # Vault and OpenBao service, batch and recovery tokens.
    re.compile(r"\b(?:hv[sbr]|s|b|r)\.[A-Za-z0-9_-]{20,}"),
)

_lock = threading.Lock()
_known: set[str] = set()


def register(value: str) -> str:
    """Remember a secret so that it is scrubbed from all later output; returns it."""
    # Very short values would scrub ordinary words; no real secret is that short.
    if value and len(value) >= 8:
        with _lock:
            _known.add(value)
    return value


def redact(text: str) -> str:
    """Replace every registered secret and every secret-shaped string."""
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for value in known:
        if value in text:
            text = text.replace(value, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text


def find_secrets(text: str) -> list[str]:
    """Describe (never return) the secrets present in ``text``: used by the scanners."""
    found: list[str] = []
    with _lock:
        known = list(_known)
    found += ["registered secret" for value in known if value in text]
    for pattern in _PATTERNS:
        found += [f"{pattern.pattern[:24]}… at {m.start()}" for m in pattern.finditer(text)]
    return found


class RedactingFilter(logging.Filter):
    """A logging filter that scrubs the rendered message of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg = cleaned
            record.args = None
        return True


def install_record_factory() -> None:
    """Scrub every log record at creation, whichever handler later sees it.

    A filter on one logger misses records that propagate from child loggers,
    and pytest adds its own capture handlers per test; the record factory is
    the single point every record passes through. Idempotent.
    """
    current = logging.getLogRecordFactory()
    if getattr(current, "trustgrid_redacting", False):
        return

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = current(*args, **kwargs)
        RedactingFilter().filter(record)
        return record

    factory.trustgrid_redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
