"""Key material for the local control plane: a CA, serving and client certs, the SA key.

All private keys go into the run's 0600 state directory and are registered
with the redactor; nothing here is ever logged.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cluster.runstate import RunState
from cluster.secrets import register

_VALIDITY = dt.timedelta(days=2)


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class ControlPlanePki:
    ca: KeyPair
    apiserver: KeyPair
    admin: KeyPair
    vault: KeyPair
    controller_manager: KeyPair  # its client identity and the serving cert of its /healthz
    istiod: KeyPair  # istiod's serving certificate (xDS 15012, webhooks 15017) when its own CA is off
    service_account_key: Path
    service_account_pub: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    register(pem.decode())
    return pem


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


def _issue(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
    usages: tuple[x509.ObjectIdentifier, ...] = (),
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    issuer_name, issuer_key = issuer or (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(state: RunState, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> KeyPair:
    cert_path = state.write_private(f"pki/{name}.crt", cert.public_bytes(serialization.Encoding.PEM))
    key_path = state.write_private(f"pki/{name}.key", _pem_key(key))
    return KeyPair(cert_path, key_path)


def generate(state: RunState, *, extra_ips: tuple[str, ...] = ()) -> ControlPlanePki:
    """A fresh CA per run, so that nothing trusts a previous run's material."""
    ca_key = _key()
    ca_name = _name(f"trustgrid {state.run_id} CA")
    ca_cert = _issue(ca_name, ca_key, None, ca=True)
    ca = _write(state, "ca", ca_cert, ca_key)
    issuer = (ca_name, ca_key)
    server = (ExtendedKeyUsageOID.SERVER_AUTH,)
    ips = ("127.0.0.1", "10.96.0.1", *extra_ips)

    apiserver_key = _key()
    apiserver_dns = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                     "kubernetes.default.svc.cluster.local")
    apiserver_cert = _issue(_name("kube-apiserver"), apiserver_key, issuer, dns=apiserver_dns, ips=ips, usages=server)
    admin_key = _key()
    admin_cert = _issue(_name("trustgrid-admin", "system:masters"), admin_key, issuer,
                        usages=(ExtendedKeyUsageOID.CLIENT_AUTH,))
    vault_key = _key()
    vault_cert = _issue(_name("vault"), vault_key, issuer, dns=("localhost", "vault", "vault.vault.svc"),
                        ips=("127.0.0.1", *extra_ips), usages=server)

    # The user the API server's bootstrap RBAC binds to the system:kube-controller-manager
    # ClusterRole (plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go). The same
    # pair serves its secure port on loopback, so that /healthz is checked against our CA.
    controller_manager_key = _key()
    controller_manager_cert = _issue(
        _name("system:kube-controller-manager"), controller_manager_key, issuer,
        dns=("localhost",), ips=("127.0.0.1",),
        usages=(ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH))

    # As istio-csr issues istiod's serving certificate (istiod-tls): the names pilot-agent and the API
    # server use for it, and the bridge address pods and the webhook reach it at.
    istiod_key = _key()
    istiod_cert = _issue(_name("istiod"), istiod_key, issuer,
                         dns=("istiod.istio-system.svc", "istiod.istio-system.svc.cluster.local", "istiod"),
                         ips=extra_ips, usages=server)

    sa_key = _key()
    sa_key_path = state.write_private("pki/sa.key", _pem_key(sa_key))
    sa_pub_path = state.write_private(
        "pki/sa.pub",
        sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
    )
    return ControlPlanePki(
        ca=ca,
        apiserver=_write(state, "apiserver", apiserver_cert, apiserver_key),
        admin=_write(state, "admin", admin_cert, admin_key),
        vault=_write(state, "vault", vault_cert, vault_key),
        controller_manager=_write(state, "controller-manager", controller_manager_cert, controller_manager_key),
        istiod=_write(state, "istiod", istiod_cert, istiod_key),
        service_account_key=sa_key_path,
        service_account_pub=sa_pub_path,
    )


def server_tls(state: RunState, name: str, *, ips: tuple[str, ...] = ("127.0.0.1",)) -> tuple[Path, KeyPair]:
    """A CA of its own and a serving pair for ``ips``, under the run's pki/ (``name``-ca.crt, ``name``.crt/.key);
    returns (the CA certificate, the serving pair). For servers that stand apart from the control plane."""
    ca_key = _key()
    ca_name = _name(f"trustgrid {state.run_id} {name} CA")
    ca_cert = _issue(ca_name, ca_key, None, ca=True)
    ca_path = state.write_private(f"pki/{name}-ca.crt", ca_cert.public_bytes(serialization.Encoding.PEM))
    key = _key()
    cert = _issue(_name(name), key, (ca_name, ca_key), dns=("localhost",), ips=ips,
                  usages=(ExtendedKeyUsageOID.SERVER_AUTH,))
    return ca_path, _write(state, name, cert, key)
