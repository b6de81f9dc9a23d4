"""Where the kind platform's charts come from (cluster/kind/charts.py), each pinned and checked.

cert-manager's chart is read from its real Go module through the real `go mod download` (the module
is in the Go module cache after the first run); istio-csr's reference is the user's, checked here.
"""

from __future__ import annotations

import filecmp
import io
import json
import subprocess
import tarfile
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from cluster.kind.charts import (
    ISTIO_CSR_OPTION,
    ISTIO_CSR_PLACEHOLDER,
    ChartPin,
    ChartUnavailable,
    istio_csr_source,
    load_pins,
    module_chart,
    plan_sources,
)
from cluster.kind.plan import install_plan
from cluster.profile import DEFAULT_PROFILE, load_profile
from cluster.versions import VERSIONS_FILE

ROOT = Path(__file__).resolve().parents[1]
PINS = load_pins()
ISTIO_CSR = PINS["istio_csr"]
SETUP = load_profile(DEFAULT_PROFILE).setup


def _one_line(err: pytest.ExceptionInfo[ChartUnavailable]) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_the_cert_manager_chart_is_its_modules_stamped_with_the_pinned_version(tmp_path: Path) -> None:
    pin = PINS["cert_manager"]
    chart = module_chart(pin, tmp_path)
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    assert (meta["name"], meta["version"], meta["appVersion"]) == ("cert-manager", pin.version, pin.version)
    # Everything but the stamp is the module's own: the chart that is installed is the one that is checked.
    compared = filecmp.dircmp(chart / "templates", _module_dir(pin) / pin.path / "templates")
    assert not (compared.left_only or compared.right_only or compared.diff_files)
    assert module_chart(pin, tmp_path) == chart  # cached: the second call reads it back


def _module_dir(pin: ChartPin) -> Path:
    answer = subprocess.run(["go", "mod", "download", "-json", f"{pin.module}@{pin.version}"], capture_output=True,
                            text=True, check=True, timeout=600)
    return Path(json.loads(answer.stdout)["Dir"])


def test_a_module_whose_hash_is_not_the_pinned_one_is_refused_and_nothing_is_kept(tmp_path: Path) -> None:
    wrong = replace(PINS["cert_manager"], sum="h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
    with pytest.raises(ChartUnavailable) as err:
        module_chart(wrong, tmp_path)
    assert "not the pinned h1:AAAA" in _one_line(err)
    assert not (tmp_path / "charts").exists()


def test_a_module_version_that_does_not_exist_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ChartUnavailable, match=r"go mod download .*@v0\.0\.1-nonexistent failed"):
        module_chart(replace(PINS["cert_manager"], version="v0.0.1-nonexistent"), tmp_path)


def test_the_chart_and_the_crds_are_the_same_cert_manager_release() -> None:
    data = tomllib.loads(VERSIONS_FILE.read_text())
    assert data["charts"]["cert_manager"]["version"] == data["cert_manager"]["version"]


def test_no_istio_csr_reference_is_one_line_naming_the_option_and_the_way_without_it() -> None:
    with pytest.raises(ChartUnavailable) as err:
        istio_csr_source(None, ISTIO_CSR)
    line = _one_line(err)
    assert ISTIO_CSR_OPTION in line and "setup.mesh.ca: plugin" in line and ISTIO_CSR.version in line
    assert "--profile cluster/profiles/plugin-ca.yaml" in line and (ROOT / "cluster/profiles/plugin-ca.yaml").exists()


@pytest.mark.parametrize(("reference", "why"), [
    ("oci://registry.example/charts/cert-manager", "names chart 'cert-manager'"),
    ("oci://registry.example/charts/cert-manager-istio-csr:v0.16.0", "asks for tag v0.16.0"),
    ("oci://registry.example/charts/cert-manager-istio-csr@md5:abc", "not sha256: and 64 hex digits"),
    ("oci://registry.example/charts/cert-manager-istio-csr@sha256:abc", "not sha256: and 64 hex digits"),
    ("https://registry.example/cert-manager-istio-csr-v0.17.0.tgz", "no such chart directory"),
])
def test_a_reference_that_is_not_the_pinned_chart_is_refused(reference: str, why: str) -> None:
    with pytest.raises(ChartUnavailable) as err:
        istio_csr_source(reference, ISTIO_CSR)
    assert why in _one_line(err)


def test_an_oci_reference_is_installed_at_the_pinned_version_and_its_digest_is_kept() -> None:
    digest = "sha256:" + "0" * 64
    source = istio_csr_source(f"oci://registry.example/charts/cert-manager-istio-csr@{digest}", ISTIO_CSR)
    assert source.helm_args() == (f"oci://registry.example/charts/cert-manager-istio-csr@{digest}", "--version",
                                  ISTIO_CSR.version)
    assert digest in source.pinned_by
    bare = istio_csr_source("oci://registry.example/charts/cert-manager-istio-csr", ISTIO_CSR)
    assert "add @sha256" in bare.pinned_by


def _packaged(tmp_path: Path, name: str, version: str) -> Path:
    archive = tmp_path / f"{name}-{version}.tgz"
    meta = yaml.safe_dump({"apiVersion": "v2", "name": name, "version": version}).encode()
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo(f"{name}/Chart.yaml")
        info.size = len(meta)
        tar.addfile(info, io.BytesIO(meta))
    return archive


def test_a_local_copy_must_be_the_pinned_chart_and_version(tmp_path: Path) -> None:
    good = _packaged(tmp_path, "cert-manager-istio-csr", ISTIO_CSR.version)
    assert istio_csr_source(str(good), ISTIO_CSR).helm_args() == (str(good.resolve()),)
    folder = tmp_path / "unpacked"
    (folder).mkdir()
    (folder / "Chart.yaml").write_text(yaml.safe_dump({"name": "cert-manager-istio-csr", "version": "v0.16.1"}))
    with pytest.raises(ChartUnavailable, match=r"is chart cert-manager-istio-csr v0\.16\.1, not"):
        istio_csr_source(str(folder), ISTIO_CSR)
    with pytest.raises(ChartUnavailable, match="is chart other"):
        istio_csr_source(str(_packaged(tmp_path, "other", ISTIO_CSR.version)), ISTIO_CSR)


def test_the_plan_installs_cert_manager_from_the_module_and_istio_csr_from_the_reference(tmp_path: Path) -> None:
    """The release-archive URLs the plan used for these two charts do not exist: neither project publishes one."""
    reference = "oci://registry.example/charts/cert-manager-istio-csr@sha256:" + "1" * 64
    charts = plan_sources(tmp_path, reference, fetch=True)
    plan = install_plan(SETUP, "tg-1", charts=charts)
    helm = {step.argv[3]: step.argv for step in plan if step.argv[:1] == ("helm",)}
    assert helm["cert-manager"][4] == str(tmp_path / "charts" / f"cert_manager-{PINS['cert_manager'].version}")
    assert (tmp_path / "charts" / f"cert_manager-{PINS['cert_manager'].version}" / "Chart.yaml").exists()
    assert helm["cert-manager-istio-csr"][4:7] == (reference, "--version", ISTIO_CSR.version)
    assert not [argv for argv in helm.values() if "releases/download" in " ".join(argv) and "cert-manager" in argv[3]]


def test_bring_up_refuses_a_missing_reference_but_a_dry_run_shows_where_it_goes(tmp_path: Path) -> None:
    with pytest.raises(ChartUnavailable, match=ISTIO_CSR_OPTION):
        plan_sources(tmp_path, None, fetch=True)
    assert not (tmp_path / "charts").exists()  # refused before the cert-manager module is fetched
    shown = plan_sources(tmp_path, None, fetch=False)
    assert shown["istio_csr"].chart == ISTIO_CSR_PLACEHOLDER
    assert not (tmp_path / "charts").exists()  # a dry run downloads nothing
    # The plugin CA needs no istio-csr: bring-up goes on without a reference.
    assert plan_sources(tmp_path, None, fetch=True, istio_csr_needed=False)["istio_csr"].chart == ISTIO_CSR_PLACEHOLDER
    with pytest.raises(ChartUnavailable, match="names chart"):  # a wrong one is refused even in a dry run
        plan_sources(tmp_path, "oci://registry.example/x/wrong", fetch=False)
