"""Failure reports, tracebacks with locals and captured output never show a secret."""

from __future__ import annotations

import pytest

from tests.lifecycle import ROOT

JWT = "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6YTpiIn0.c2lnbmF0dXJlLWJ5dGVz"


def test_a_failing_test_with_a_jwt_in_its_locals_and_output_shows_no_jwt(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(f'''
        import logging

        def test_leaky():
            token = "{JWT}"
            print("printed", token)
            logging.getLogger("x").warning("logged %s", token)
            assert token == "something else"
    ''')
    result = pytester.runpytest_subprocess("-p", "conftest", "--showlocals", "-rA", "--rootdir", str(pytester.path),
                                           "--log-level=INFO", "-p", "no:cacheprovider",
                                           "-c", "/dev/null")
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == 1, output
    assert "test_leaky" in output and "[REDACTED]" in output  # the failure really was reported
    assert JWT not in output
    assert JWT[:10] not in output  # not even the start that assertion rewriting keeps


@pytest.fixture(autouse=True)
def _project_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
