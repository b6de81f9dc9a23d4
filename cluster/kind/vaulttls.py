"""Vault's TLS on kind: a CA made for the run and a serving certificate for Vault's Service.

The chart mounts it from the Secret ``vault-tls`` (kubernetes.io/tls, with ca.crt) and Vault
listens with it; pods trust the CA through the ConfigMap ``trustgrid-vault-ca`` in their namespace,
the Issuer through its caBundle, and this process through the CA file kept in the run's state.
The key is made here and registered as a secret, so it is redacted wherever it could appear.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cluster.kube import labels
from cluster.secrets import register

SECRET = "vault-tls"  # noqa: S105 - the name of a Secret object
VALIDITY = dt.timedelta(days=7)


@dataclass(frozen=True)
class VaultTls:
    ca_pem: str
    cert_pem: str
    key_pem: str = field(repr=False)


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def make_vault_tls(flavor: str, namespace: str) -> VaultTls:
    """A CA and a certificate for every name Vault is reached by: its Service, its pod, and the
    port-forward this process uses (127.0.0.1)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"trustgrid {flavor} CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + VALIDITY).add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    names = [flavor, f"{flavor}.{namespace}", f"{flavor}.{namespace}.svc", f"{flavor}.{namespace}.svc.cluster.local",
             f"{flavor}-0.{flavor}-internal", f"{flavor}-0.{flavor}-internal.{namespace}.svc", "localhost"]
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, flavor)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    register(key_pem)
    register(base64.b64encode(key_pem.encode()).decode())  # as it appears in the Secret
    return VaultTls(_pem(ca), _pem(cert), key_pem)


def tls_secret(namespace: str, tls: VaultTls, run_id: str) -> dict[str, object]:
    data = {"tls.crt": tls.cert_pem, "tls.key": tls.key_pem, "ca.crt": tls.ca_pem}
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": SECRET, "namespace": namespace, "labels": labels(run_id)},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}
