"""Where the kind platform's Helm charts come from, each pinned: a version, and a hash or digest.

- **cert-manager** ships its chart inside its Go module (``deploy/charts/cert-manager``). The module
  zip is pinned by its ``go.sum`` hash ([charts.cert_manager] ``sum``), which ``go mod download``
  also checks against the checksum database. The chart is stamped the way cert-manager's release
  tool stamps it (make/manifests.mk of the module: ``.version`` and ``.appVersion`` set to the
  release), so its images default to that release's tags. The chart that is installed is the one
  the offline checks render and dry-run: the same files, the same hash.
- **istio-csr** publishes its chart only to an OCI registry, and its Go module is refused by the
  module proxy, so nothing here can fetch it. The user names the reference with
  ``--istio-csr-chart`` (env ``TRUSTGRID_ISTIO_CSR_CHART``): the ``oci://`` reference from
  istio-csr's install docs, optionally with ``@sha256:<digest>`` (helm checks it), or a chart
  directory or ``.tgz`` they mirrored. Helm installs it at the pinned [charts.istio_csr] version.
- **vault**: its chart repository is served by the module proxy as a Go module (no go.mod; its tags),
  pinned by the ``go.sum`` hash the same way; its Chart.yaml already carries the release version.
- **prometheus**: the prometheus-community chart repository is served by the module proxy as a Go module too
  (no go.mod, no semver tags: a pseudo-version of a commit), pinned by its ``go.sum`` hash. Its Chart.yaml
  names four dependencies (alertmanager, kube-state-metrics, node-exporter, pushgateway), all turned off in
  our values; helm still wants them present (action.CheckDependencies), so their folders in the same module
  zip, at the versions the chart asks for, are copied into its ``charts/`` ([charts.prometheus]
  ``dependencies``): nothing is fetched from a chart repository.
- **openbao**: the module proxy refuses its chart repository, so it is the release archive on its
  code host, by version, with no checksum (none could be read where this was written).

Errors are one line with the fix (ChartUnavailable).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tarfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

import yaml

from cluster.errors import PlatformUnavailable
from cluster.runstate import file_lock
from cluster.versions import VERSIONS_FILE

ISTIO_CSR_OPTION = "--istio-csr-chart"
ISTIO_CSR_ENV = "TRUSTGRID_ISTIO_CSR_CHART"
ISTIO_CSR_CHART_NAME = "cert-manager-istio-csr"
# What a plan shows where the user's reference goes, when none was given (--dry-run).
ISTIO_CSR_PLACEHOLDER = f"<{ISTIO_CSR_OPTION}: the oci:// reference from istio-csr's install docs>"


class ChartUnavailable(PlatformUnavailable):
    """A chart that cannot be had, or is not the pinned one."""


@dataclass(frozen=True)
class ChartPin:
    """One [charts.NAME] entry of versions.toml."""

    name: str
    version: str
    url: str = ""  # a release archive (vault, openbao)
    module: str = ""  # a Go module that ships the chart (cert-manager) ...
    path: str = ""  # ... in this folder of it
    sum: str = ""  # ... whose zip has this go.sum hash ("h1:...")
    module_version: str = ""  # ... at this tag, when it is not ``version`` (vault-helm's tags have a "v")
    stamp: bool = False  # ... and whose Chart.yaml says v0.0.0 until the release tool stamps it (cert-manager)
    dependencies: tuple[str, ...] = ()  # ... and whose subcharts are these folders of the same module (prometheus)


@dataclass(frozen=True)
class ChartSource:
    """What ``helm upgrade --install RELEASE`` gets: the chart argument and its version flags."""

    version: str
    chart: str  # a local directory or archive, an https:// archive, or an oci:// reference
    pinned_by: str  # how it is pinned, as the plan shows it
    registry: bool = False  # an OCI registry's (or the placeholder for one): helm picks the version there

    def helm_args(self) -> tuple[str, ...]:
        # --version only means something for a registry; a local chart or an archive is what it is.
        return (self.chart, "--version", self.version) if self.registry else (self.chart,)


def load_pins() -> dict[str, ChartPin]:
    data = tomllib.loads(VERSIONS_FILE.read_text())["charts"]
    return {name: ChartPin(name=name, version=str(spec["version"]),
                           url=str(spec.get("url", "")).format(version=spec["version"]),
                           module=str(spec.get("module", "")), path=str(spec.get("path", "")),
                           sum=str(spec.get("sum", "")),
                           module_version=str(spec.get("module_version", "")), stamp=bool(spec.get("stamp", False)),
                           dependencies=tuple(str(d) for d in spec.get("dependencies", ())))
            for name, spec in data.items()}


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise ChartUnavailable("the cert-manager chart comes from its Go module, and Go is not installed",
                               fix="install Go 1.26+ (only `go mod download` is used; nothing is built)")
    return go


def module_chart(pin: ChartPin, cache: Path) -> Path:
    """The chart folder ``pin.path`` of Go module ``pin.module`` at ``pin.version``, stamped with that version,
    under ``cache/charts/``. Raises ChartUnavailable when the module cannot be downloaded, when its hash is
    not ``pin.sum``, or when the folder is not a chart named ``pin.name``'s chart."""
    target = cached_chart(pin, cache)
    with file_lock(cache / "locks" / "charts.lock"):
        if (target / "Chart.yaml").exists():
            return target
        at = f"{pin.module}@{pin.module_version or pin.version}"
        result = subprocess.run([_go(), "mod", "download", "-json", at],
                                capture_output=True, text=True, check=False, timeout=600, cwd=cache)
        try:
            answer = json.loads(result.stdout or "{}")
        except json.JSONDecodeError:
            answer = {}
        if answer.get("Error") or result.returncode != 0 or not answer.get("Dir"):
            why = answer.get("Error") or (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise ChartUnavailable(f"go mod download {at} failed: {why}",
                                   fix="check access to the Go module proxy (GOPROXY)")
        if answer.get("Sum") != pin.sum:
            raise ChartUnavailable(f"{at} has hash {answer.get('Sum')}, not the pinned {pin.sum}",
                                   fix=f"check the module source, or pin its go.sum hash in {VERSIONS_FILE.name}")
        source = Path(answer["Dir"]) / pin.path
        if not (source / "Chart.yaml").exists():
            raise ChartUnavailable(f"{at} has no chart at {pin.path}",
                                   fix=f"correct [charts.{pin.name}] path in {VERSIONS_FILE.name}")
        partial = target.with_name(f".{target.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        copy_writable(source, partial)
        if pin.stamp:
            stamp(partial / "Chart.yaml", pin.version)
        for subchart in pin.dependencies:
            add_dependency(partial, Path(answer["Dir"]) / subchart, at)
        meta = yaml.safe_load((partial / "Chart.yaml").read_text())
        if str(meta.get("version")).removeprefix("v") != pin.version.removeprefix("v"):
            shutil.rmtree(partial)
            raise ChartUnavailable(f"{at} holds chart version {meta.get('version')}",
                                   fix=f"correct [charts.{pin.name}] in {VERSIONS_FILE.name}")
        partial.rename(target)  # atomic: an interrupted copy leaves no half chart
        return target


def add_dependency(chart: Path, source: Path, at: str) -> None:
    """Copy the subchart at ``source`` into ``chart/charts/``, once its Chart.yaml is one the chart's
    ``dependencies`` name, at a version they accept (an exact version, or ``X.Y.*`` as prometheus pins them).
    Raises ChartUnavailable naming the mismatch."""
    meta = yaml.safe_load((source / "Chart.yaml").read_text()) if (source / "Chart.yaml").exists() else {}
    wanted = {d["name"]: str(d.get("version", "")) for d in yaml.safe_load((chart / "Chart.yaml").read_text())
              .get("dependencies", [])}
    name, version = str(meta.get("name", "")), str(meta.get("version", ""))
    constraint = wanted.get(name)
    if constraint is None or not (version == constraint or (constraint.endswith(".*")
                                                            and version.startswith(constraint[:-1]))):
        raise ChartUnavailable(f"{at} {source.name} is chart {name or '?'} {version or '?'}, which the chart's "
                               f"dependencies do not accept ({constraint or 'not named'})",
                               fix=f"pin a module version whose subcharts match, in {VERSIONS_FILE.name}")
    (chart / "charts").mkdir(exist_ok=True)
    copy_writable(source, chart / "charts" / source.name)


def copy_writable(source: Path, target: Path) -> None:
    """The module cache is read-only: copy the files without their modes, and make the folders writable
    (copytree copies a folder's mode), so that the copy can be stamped and, later, removed."""
    shutil.copytree(source, target, copy_function=shutil.copyfile)
    for folder in (target, *target.rglob("*")):
        if folder.is_dir():
            folder.chmod(0o755)


def cached_chart(pin: ChartPin, cache: Path) -> Path:
    """Where ``module_chart`` keeps a module's chart: ``cache/charts/NAME-VERSION``."""
    return cache / "charts" / f"{pin.name}-{pin.version}"


def stamp(chart_yaml: Path, version: str) -> None:
    """Set ``version`` and ``appVersion``, as cert-manager's release tool does (make/manifests.mk,
    ``.version = "$(VERSION)" | .appVersion = "$(VERSION)"``); the module's own say v0.0.0."""
    meta = yaml.safe_load(chart_yaml.read_text())
    meta["version"] = version
    meta["appVersion"] = version
    chart_yaml.write_text(yaml.safe_dump(meta, sort_keys=False))


def _local_chart_meta(path: Path) -> dict[str, object]:
    """Chart.yaml of a chart directory or a packaged chart (.tgz, whose one top folder holds it)."""
    if path.is_dir():
        return dict(yaml.safe_load((path / "Chart.yaml").read_text()) or {})
    with tarfile.open(path) as archive:
        member = next((m for m in archive.getmembers() if m.name.count("/") == 1 and m.name.endswith("/Chart.yaml")),
                      None)
        handle = archive.extractfile(member) if member is not None else None
        if handle is None:
            raise ChartUnavailable(f"{path} is not a packaged chart (no <name>/Chart.yaml in it)",
                                   fix=f"give {ISTIO_CSR_OPTION} the .tgz `helm pull` writes, or a chart directory")
        return dict(yaml.safe_load(handle.read()) or {})


def istio_csr_source(reference: str | None, pin: ChartPin) -> ChartSource:
    """The istio-csr chart the user named. ``reference``: ``oci://...[@sha256:...]`` (no tag other than the
    pinned version), or a local chart directory or ``.tgz`` whose Chart.yaml is the pinned chart and version.
    Raises ChartUnavailable (one line) when none was given or it is not the pinned chart."""
    fix = (f"pass {ISTIO_CSR_OPTION} (or set {ISTIO_CSR_ENV}) to the oci:// reference of the "
           f"{ISTIO_CSR_CHART_NAME} chart {pin.version} from istio-csr's install docs, or use a profile with "
           "setup.mesh.ca: plugin, such as --profile cluster/profiles/plugin-ca.yaml (no istio-csr)")
    if not reference:
        raise ChartUnavailable(f"the istio-csr chart {pin.version} is published only to an OCI registry, "
                               "and no reference to it was given", fix=fix)
    if reference.startswith("oci://"):
        last = reference.rsplit("/", 1)[-1].split("@", 1)[0]
        name, _, tag = last.partition(":")
        if name != ISTIO_CSR_CHART_NAME:
            raise ChartUnavailable(f"{ISTIO_CSR_OPTION} names chart {name!r}, not {ISTIO_CSR_CHART_NAME}", fix=fix)
        if tag and tag != pin.version:
            raise ChartUnavailable(f"{ISTIO_CSR_OPTION} asks for tag {tag}; this suite pins {pin.version}",
                                   fix="drop the tag (the pinned version is used) or bump [charts.istio_csr]")
        digest = reference.rpartition("@")[2] if "@" in reference else ""
        if digest and re.fullmatch(r"sha256:[0-9a-f]{64}", digest) is None:
            # An OCI digest (opencontainers/image-spec descriptor.md): the algorithm, then 64 lowercase hex digits.
            raise ChartUnavailable(f"{ISTIO_CSR_OPTION} has digest {digest!r}, not sha256: and 64 hex digits",
                                   fix="copy the digest `helm pull` prints, or drop it")
        return ChartSource(pin.version, reference, f"digest {digest} (helm checks it)" if digest else
                           f"version {pin.version} only; add @sha256:<digest> to pin its content", registry=True)
    path = Path(reference).expanduser()
    if not path.exists():
        raise ChartUnavailable(f"{ISTIO_CSR_OPTION} {reference}: no such chart directory or archive, and not an "
                               "oci:// reference", fix=fix)
    meta = _local_chart_meta(path)
    if meta.get("name") != ISTIO_CSR_CHART_NAME or str(meta.get("version")) != pin.version:
        raise ChartUnavailable(f"{reference} is chart {meta.get('name')} {meta.get('version')}, not "
                               f"{ISTIO_CSR_CHART_NAME} {pin.version}", fix=fix)
    return ChartSource(pin.version, str(path.resolve()), "a local copy, its Chart.yaml checked")


def plan_sources(cache: Path, istio_csr: str | None, *, fetch: bool, istio_csr_needed: bool = True
                 ) -> dict[str, ChartSource]:
    """Every chart of the kind plan. With ``fetch`` the module-pinned charts are downloaded and checked, and the
    istio-csr reference must be valid when ``istio_csr_needed`` (the profile's mesh CA is istio-csr): that is
    bring-up, before anything is created. Without ``fetch`` (``--dry-run``, plan tests) the plan shows where
    each would come from and nothing is downloaded; a missing istio-csr reference shows as a placeholder, a
    wrong one is refused. Raises ChartUnavailable (one line)."""
    pins = load_pins()
    try:  # first: a missing or wrong reference is refused before anything is downloaded
        istio_csr_chart = istio_csr_source(istio_csr, pins["istio_csr"])
    except ChartUnavailable:
        if istio_csr or (fetch and istio_csr_needed):
            raise  # a wrong reference is refused even in a dry run; only a missing one is shown
        istio_csr_chart = ChartSource(pins["istio_csr"].version, ISTIO_CSR_PLACEHOLDER,
                                      f"nothing yet: no {ISTIO_CSR_OPTION} was given", registry=True)
    sources = {"istio_csr": istio_csr_chart}
    for name, pin in pins.items():
        if pin.module:
            folder = module_chart(pin, cache) if fetch else cached_chart(pin, cache)
            at = f"{pin.module}@{pin.module_version or pin.version}"
            sources[name] = ChartSource(pin.version, str(folder), f"Go module {at} {pin.sum}")
        elif pin.url:
            sources[name] = ChartSource(pin.version, pin.url, f"release archive {pin.version} (no checksum)")
    return sources
