"""What an Istio proxy really holds, read from Envoy's secrets config dump.

Both platforms read the same facts that ``istioctl proxy-config secret`` shows: the kind platform
from istioctl's JSON (protojson, camelCase), the local one from Envoy's admin
``/config_dump?resource=dynamic_active_secrets`` (snake_case). Istio names the workload
certificate ``default`` and the trust bundle ``ROOTCA`` (security/pkg/nodeagent/cache).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from cluster.platform import SidecarStatus

WORKLOAD_SECRET = "default"  # noqa: S105 - the name Istio gives the workload certificate
ROOT_SECRET = "ROOTCA"  # noqa: S105 - the name Istio gives the trust bundle


class NoWorkloadCertificate(LookupError):
    """The proxy holds no workload certificate yet (its CSR was not signed)."""


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def _normal(value: Any) -> Any:
    """protojson camelCase and Envoy's snake_case, read alike."""
    if isinstance(value, Mapping):
        return {_snake(str(k)) if not str(k).startswith("@") else str(k): _normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    return value


def _secrets(dump: Mapping[str, Any]) -> list[dict[str, Any]]:
    data = _normal(dump)
    found = list(data.get("dynamic_active_secrets") or [])
    for config in data.get("configs") or []:
        if "secret" in config:  # /config_dump?resource=dynamic_active_secrets: the secrets themselves
            found.append(config)
        else:  # a whole /config_dump: the SecretsConfigDump among the others
            found += config.get("dynamic_active_secrets") or []
    return found


def _pems(inline: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(base64.b64decode(inline))


def _common_name(name: x509.Name) -> str:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else name.rfc4514_string()


def workload_secret(dump: Mapping[str, Any]) -> SidecarStatus:
    """The proxy's workload certificate and trust bundle, with no ``last_error`` (the log's part).

    ``obtained_at`` is Envoy's last_updated for the secret (its last renewal), or notBefore when the dump
    has none; ``roots`` counts the certificates of its ROOTCA bundle. Raises NoWorkloadCertificate when
    there is none.
    """
    roots = 0
    found: SidecarStatus | None = None
    for entry in _secrets(dump):
        secret = entry.get("secret") or {}
        name = entry.get("name") or secret.get("name")
        if name == ROOT_SECRET:
            trusted = ((secret.get("validation_context") or {}).get("trusted_ca") or {}).get("inline_bytes")
            roots = len(_pems(trusted)) if trusted else 0
        elif name == WORKLOAD_SECRET and "tls_certificate" in secret:
            chain = secret["tls_certificate"]["certificate_chain"]["inline_bytes"]
            leaf = _pems(chain)[0]
            try:
                sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
            except x509.ExtensionNotFound:
                uris = []
            not_before = leaf.not_valid_before_utc.astimezone(UTC)
            updated = entry.get("last_updated")
            found = SidecarStatus(serial=format(leaf.serial_number, "x"), issuer=_common_name(leaf.issuer),
                                  not_before=not_before, not_after=leaf.not_valid_after_utc.astimezone(UTC),
                                  obtained_at=_instant(str(updated)) if updated else not_before,
                                  spiffe=uris[0] if uris else "", roots=0)
    if found is None:
        raise NoWorkloadCertificate("the proxy holds no workload certificate (secret 'default')")
    return replace(found, roots=roots)


def _instant(text: str) -> datetime:
    """An RFC 3339 instant (protobuf Timestamp JSON, "…Z") as an aware datetime in UTC."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


# pilot-agent's certificate errors, with their cause (security/pkg/nodeagent/caclient/providers/citadel:
# "failed to sign CSR"; security/pkg/nodeagent/cache: "failed to sign"). Its retry notices ("ca request
# failed, starting attempt N") say no more than that, so they are not the last error.
_CERT_ERRORS = ("failed to sign",)


def last_certificate_error(log: str) -> str:
    """The last certificate error in pilot-agent's log since its last new certificate ('' when none)."""
    for line in reversed(log.splitlines()):
        if "generated new workload certificate" in line:
            return ""
        if any(marker in line for marker in _CERT_ERRORS):
            return line.split("\t")[-1][:300]
    return ""
