"""Small X.509 helpers shared by suites and scenarios (keys are registered as secrets)."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cluster.secrets import register


def csr_and_key(spiffe_id: str) -> tuple[str, str]:
    """A CSR with one SPIFFE URI SAN, and its private key (PEM, registered for redaction)."""
    key = ec.generate_private_key(ec.SECP256R1())
    request = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([]))
               .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]),
                              critical=False)
               .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return request.public_bytes(serialization.Encoding.PEM).decode(), register(key_pem)


def ca_csr_and_key(common_name: str) -> tuple[str, str]:
    """A CSR for an intermediate CA (Istio's plugged-in signing CA), and its key (PEM, registered)."""
    key = ec.generate_private_key(ec.SECP256R1())
    request = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, common_name)]))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return request.public_bytes(serialization.Encoding.PEM).decode(), register(key_pem)


def common_name(cert_pem: str) -> str:
    """The subject CN of a PEM certificate ('' when it has none)."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""
