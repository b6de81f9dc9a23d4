"""Python stubs for Istio's certificate API, generated from the real proto at first use.

The mesh CA serves, and its tests call, ``istio.v1.auth.IstioCertificateService``
as defined by ``security/v1alpha1/ca.proto`` of the ``istio.io/api`` module at
the version the pinned istio.io/istio requires (versions.toml ``[istio] ca_api``).
Nothing generated is committed: the proto comes from ``go mod download`` (run
from a temporary directory), grpcio-tools compiles it into the cache, and the
modules are imported from there:

    ~/.cache/trustgrid/proto/<api version>/python/trustgrid_caproto/security/v1alpha1/ca_pb2{,_grpc}.py

The proto is staged under the package ``trustgrid_caproto`` so that the generated
imports never meet another top-level ``security`` package; its content, proto
package (``istio.v1.auth``) and so the gRPC method names are unchanged.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.resources
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import grpc

from cluster.errors import BinaryMissing
from cluster.runstate import file_lock
from cluster.versions import Pins

API_MODULE = "istio.io/api"
PROTO = "security/v1alpha1/ca.proto"
PACKAGE = "trustgrid_caproto"
SERVICE = "istio.v1.auth.IstioCertificateService"

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class CaProto:
    """The generated modules: ``pb2`` (messages) and ``grpc`` (servicer, stub, registration)."""

    pb2: ModuleType
    grpc: ModuleType
    folder: Path  # what goes on sys.path


def stub_folder(cache: Path, api_version: str) -> Path:
    return cache / "proto" / api_version / "python"


def _tools_version() -> str:
    return importlib.metadata.version("grpcio-tools")


def _download_proto(api_version: str) -> Path:
    go = shutil.which("go")
    if go is None:
        raise BinaryMissing(f"{API_MODULE}@{api_version} ({PROTO}) is not cached and Go is not installed",
                            fix="install Go; only `go mod download` is needed")
    with tempfile.TemporaryDirectory(prefix="trustgrid-caproto-") as scratch:  # outside any module
        result = subprocess.run([go, "mod", "download", "-json", f"{API_MODULE}@{api_version}"],
                                capture_output=True, text=True, check=False, cwd=scratch)
    info = json.loads(result.stdout or "{}")
    if result.returncode != 0 or "Dir" not in info:
        raise BinaryMissing(f"cannot download {API_MODULE}@{api_version}: {info.get('Error', result.stderr.strip())}",
                            fix="check access to the Go module proxy")
    return Path(info["Dir"]) / PROTO


def generate(folder: Path, proto: Path) -> None:
    """Compile ``proto`` with grpcio-tools into ``folder`` (atomically: a half generation is never used)."""
    partial = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    source = partial / "src"
    staged = source / PACKAGE / PROTO
    staged.parent.mkdir(parents=True)
    shutil.copy(proto, staged)
    staged.chmod(0o644)  # module cache files are read-only
    well_known = Path(str(importlib.resources.files("grpc_tools") / "_proto"))  # google/protobuf/struct.proto
    out = partial / "python"
    out.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{source}", f"-I{well_known}",
         f"--python_out={out}", f"--grpc_python_out={out}", str(staged.relative_to(source))],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise BinaryMissing(f"grpcio-tools could not compile {PROTO}: {result.stderr.strip()[-300:]}",
                            fix="pip install -e . (grpcio-tools) in the project's venv")
    (out / "stamp.json").write_text(json.dumps({"grpcio-tools": _tools_version()}))
    shutil.rmtree(folder, ignore_errors=True)
    out.rename(folder)
    shutil.rmtree(partial, ignore_errors=True)


def _current(folder: Path) -> bool:
    stamp = folder / "stamp.json"
    # Generated code carries the protoc version it was made with: regenerate when grpcio-tools changes.
    return stamp.exists() and json.loads(stamp.read_text()).get("grpcio-tools") == _tools_version()


def ensure_stubs(cache: Path, pins: Pins, *, progress: Progress = _quiet) -> Path:
    """The folder holding the generated package (for sys.path); generates it on first use."""
    folder = stub_folder(cache, pins.istio_ca_api)
    if _current(folder):
        return folder
    with file_lock(cache / "locks" / "caproto.lock"):
        if not _current(folder):
            progress(f"generating Istio's certificate API stubs from {API_MODULE}@{pins.istio_ca_api}")
            folder.parent.mkdir(parents=True, exist_ok=True)
            generate(folder, _download_proto(pins.istio_ca_api))
    return folder


def load(folder: Path) -> CaProto:
    """Import the generated modules from ``folder`` (as ensure_stubs returned it)."""
    if not (folder / PACKAGE).is_dir():
        raise BinaryMissing(f"no generated certificate API stubs in {folder}",
                            fix="run python -m cluster build (it generates them)")
    if str(folder) not in sys.path:
        sys.path.append(str(folder))
    base = f"{PACKAGE}.{PROTO.removesuffix('.proto').replace('/', '.')}"
    return CaProto(importlib.import_module(f"{base}_pb2"), importlib.import_module(f"{base}_pb2_grpc"), folder)


class CaClient:
    """The client side, as pilot-agent calls it (security/pkg/nodeagent/caclient/providers/citadel/client.go).

    TLS with ``root_pem`` (what pilot-agent reads from istio-ca-root-cert) and the host of ``address``
    as the server name; metadata ``authorization: Bearer <token>`` and ``clusterid``.
    """

    def __init__(self, proto: CaProto, address: str, root_pem: str, *, cluster_id: str = "Kubernetes") -> None:
        self.proto = proto
        self.cluster_id = cluster_id
        self.channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=root_pem.encode()))
        self.stub = proto.grpc.IstioCertificateServiceStub(self.channel)

    def create_certificate(self, token: str, csr_pem: str, validity_s: int, *, timeout: float = 10) -> list[str]:
        request = self.proto.pb2.IstioCertificateRequest(csr=csr_pem, validity_duration=validity_s)
        request.metadata.fields["CertSigner"].string_value = ""  # what pilot-agent sends
        metadata = (("authorization", f"Bearer {token}"), ("clusterid", self.cluster_id))
        response = self.stub.CreateCertificate(request, metadata=metadata, timeout=timeout)
        return [str(pem) for pem in response.cert_chain]

    def close(self) -> None:
        self.channel.close()
