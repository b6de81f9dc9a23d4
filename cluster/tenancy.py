"""Tenants: a namespace with named service accounts, its Vault role, policy and secret.

Every test gets its own tenants, so tests never share Vault paths and can
run in parallel.
"""

from __future__ import annotations

import contextlib
import secrets as _random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import hvac

from cluster import istio
from cluster.kube import Kube, namespace_name
from cluster.platform import Platform
from cluster.profile import Setup
from cluster.vault import NamespaceBinding, VaultConfigurator, login_kubernetes


@dataclass(frozen=True)
class Tenant:
    platform: Platform
    kube: Kube
    setup: Setup
    binding: NamespaceBinding
    canary: str

    @property
    def namespace(self) -> str:
        return self.binding.namespace

    @property
    def role(self) -> str:
        return self.binding.role

    def token(self, service_account: str = "app", *, audience: str | None = None, seconds: int = 600) -> str:
        """A service-account JWT, as a kubelet would project it for a pod."""
        return self.kube.request_token(self.namespace, service_account,
                                       audience=audience or self.setup.vault.audience, seconds=seconds)

    def login(self, jwt: str, *, role: str | None = None) -> hvac.Client:
        """A Vault client logged in with a JWT against a role (this tenant's by default)."""
        client = self.platform.vault_client()
        client.token = login_kubernetes(client, self.platform.vault_layout, role or self.role, jwt)
        return client

    def read_secret(self, client: hvac.Client, path: str | None = None) -> dict[str, str]:
        response = client.secrets.kv.v2.read_secret_version(
            path=path or self.binding.secret_path, mount_point=self.platform.vault_layout.kv_path,
            raise_on_deleted_version=True,
        )
        return dict(response["data"]["data"])


@contextlib.contextmanager
def open_tenant(platform: Platform, setup: Setup, label: str,
                service_accounts: Sequence[str] = ("app",), *, meshed: bool = True) -> Iterator[Tenant]:
    """Create a tenant; remove its namespace and Vault paths afterwards, even on failure. A tenant that
    is not ``meshed`` is a legacy namespace: no injection label, so its pods get no sidecar."""
    kube = Kube(platform.kube)
    configurator = VaultConfigurator(platform.vault_admin(), platform.vault_layout, setup, platform.run_id)
    namespace = namespace_name("t", label[:40], _random.token_hex(3))
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(kube.delete_namespace, namespace)
        cleanup.callback(configurator.remove_namespace, namespace)
        binding = install_app_namespace(kube, configurator, namespace, service_accounts, meshed=meshed)
        canary = f"canary-{_random.token_hex(8)}"
        configurator.write_secret(binding, {"canary": canary})
        yield Tenant(platform, kube, setup, binding, canary)


def install_app_namespace(kube: Kube, configurator: VaultConfigurator, namespace: str,
                          service_accounts: Sequence[str] = ("app",), *, meshed: bool = True) -> NamespaceBinding:
    """An application namespace as the profile's setup says: meshed, with its Vault role and Istio policies.

    Whatever the setup says is installed, also what the policy forbids, so
    that conformance can judge it; nothing here "fixes" a bad setup.
    """
    setup, run_id = configurator.setup, configurator.run_id
    kube.ensure_namespace(namespace, run_id, {"istio-injection": "enabled"} if meshed else {})
    for name in service_accounts:
        kube.ensure_service_account(namespace, name, run_id)
    binding = configurator.configure_namespace(namespace, service_accounts)
    for obj in istio.namespace_policies(namespace, run_id, mtls_mode=setup.mesh.mtls.namespaces.get(namespace),
                                        authz=setup.mesh.authz == "namespace"):
        istio.apply(kube, obj)
    return binding


def install_setup_namespaces(kube: Kube, configurator: VaultConfigurator) -> list[str]:
    """The namespaces the setup names (mtls.namespaces), made at bring-up and gone with the cluster."""
    names = sorted(configurator.setup.mesh.mtls.namespaces)
    for namespace in names:
        install_app_namespace(kube, configurator, namespace)
    return names
