"""The kind platform's exporter image context (cluster/kind/exporterimage.py): it holds only the Dockerfile and
the modules ``python -m cluster.audit`` needs, and those are enough. The exporter is run from a copy of the
context, with nothing of the repository importable, on what the real OpenBao wrote (tests/fixtures/audit), and
its /metrics is read: the image's ENTRYPOINT does the same with the same files."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import prometheus_client
import requests

from cluster.kind.exporterimage import DOCKERFILE, EXPORTER_MODULES, build_argv, exporter_context
from cluster.wait import wait_until

FIXTURE = Path(__file__).parent / "fixtures" / "audit" / "openbao-audit.jsonl"


def test_the_context_is_the_dockerfile_and_the_exporters_modules_only() -> None:
    with exporter_context() as context:
        files = sorted(str(p.relative_to(context)) for p in context.rglob("*") if p.is_file())
        argv = build_argv("t:dev", context)
    assert files == sorted(["Dockerfile", *(f"cluster/{m}" for m in EXPORTER_MODULES)])
    # Every ARG the Dockerfile reads is given a value.
    args = {line.split()[1] for line in DOCKERFILE.read_text().splitlines() if line.startswith("ARG ")}
    given = {argv[i + 1].split("=", 1)[0] for i, word in enumerate(argv) if word == "--build-arg"}
    assert args == given == {"BASE", "PROMETHEUS_CLIENT"}


def test_the_exporter_runs_from_the_context_alone(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_bytes(b"")
    with exporter_context() as context:
        app = tmp_path / "app"
        shutil.copytree(context / "cluster", app / "cluster")
    # The image's one installed package, alone: nothing else of this environment's site-packages is importable.
    site = tmp_path / "site"
    shutil.copytree(Path(prometheus_client.__file__).parent, site / "prometheus_client")
    # -I -S: no site (so not the editable install's finder, which would find the repository's cluster/), no
    # PYTHON* variables, no cwd; the path is app/ and that package only, besides the standard library.
    path = f"{app}:{site}"
    probe = subprocess.run([sys.executable, "-I", "-S", "-c", "import sys; sys.path[:0] = sys.argv[1].split(':'); "
                            "import cluster.audit.__main__ as m; print(m.__file__)", path],
                           capture_output=True, text=True, timeout=60, check=False)
    assert probe.returncode == 0 and probe.stdout.strip().startswith(str(app)), probe.stdout + probe.stderr
    process = subprocess.Popen([sys.executable, "-I", "-S", "-c", "import sys, runpy; "
                                "sys.path[:0] = sys.argv.pop(1).split(':'); "
                                "runpy.run_module('cluster.audit', run_name='__main__')", path,
                                "--file", str(log), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        announced = process.stdout.readline()  # "audit exporter: FILE on http://127.0.0.1:PORT/metrics"
        url = announced.strip().rsplit(" ", 1)[-1]
        assert url.startswith("http://127.0.0.1:"), announced
        with log.open("ab") as out:
            out.write(FIXTURE.read_bytes())

        def counted() -> str:
            page = requests.get(url, timeout=5).text
            lines = [line for line in page.splitlines() if line.startswith("vault_audit_requests_total")]
            if not lines:
                raise AssertionError(f"no vault_audit_requests_total yet: {page[-300:]}")
            return page

        page = wait_until(counted, timeout=30, interval=0.2, describe="the exporter to count the fixture's lines")
        assert "vault_audit_denials_total" in page
    finally:
        process.terminate()
        process.wait(timeout=15)
