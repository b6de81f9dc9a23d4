from __future__ import annotations

import logging

import pytest

from cluster.secrets import REDACTED, find_secrets, install_record_factory, redact, register

JWT = "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJpc3MiOiJrdWJlcm5ldGVzIiwic3ViIjoiYXBwIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
PEM = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg\nAoGCCqGSM49\n-----END EC PRIVATE KEY-----"


@pytest.mark.parametrize("secret", [
    JWT,
    PEM,
    "-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----",
    "hvs.CAESIJlU9Zx7m3mJ3lqa_Zf0-vXo2yQ",
    "s.Q1w2E3r4T5y6U7i8O9p0AaSsDdFf",
])
def test_secret_shapes_are_redacted(secret: str) -> None:
    text = f"before {secret} after"
    assert redact(text) == f"before {REDACTED} after"
    assert find_secrets(text)


def test_registered_values_without_a_shape_are_redacted() -> None:
    unseal_key = register("q5Hh1l0qJk2m8D1oQy4v9Xx3Zz7Ww6Uu5Tt4Ss3Rr2=")
    assert redact(f"key={unseal_key}") == f"key={REDACTED}"
    assert find_secrets(unseal_key) == ["registered secret"]


def test_ordinary_text_is_left_alone() -> None:
    text = "s.short role=team-a path=secret/data/team-a/app status=403 spiffe://cluster.local/ns/a/sa/b"
    assert redact(text) == text
    assert find_secrets(text) == []
    register("short")  # too short to be a secret: must not scrub ordinary words
    assert redact("a short word") == "a short word"


def test_every_log_record_is_scrubbed_whatever_handler_sees_it(caplog: pytest.LogCaptureFixture) -> None:
    install_record_factory()
    install_record_factory()  # idempotent
    with caplog.at_level(logging.INFO):
        logging.getLogger("trustgrid.child.logger").info("login with jwt %s", JWT)
    assert JWT not in caplog.text
    assert REDACTED in caplog.text
