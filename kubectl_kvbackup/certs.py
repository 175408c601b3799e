"""A private CA and a serving certificate for the webhook, made with ``cryptography``.

kube-apiserver calls the webhook's Service by DNS name and verifies it against the caBundle of the
MutatingWebhookConfiguration: the CA signs one serving certificate whose SANs are the Service's names.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: rendering and installing only, never --help or completion
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

CA_DAYS = 3650
SERVING_DAYS = 365
#: ``install`` issues a new certificate when the one in the cluster has less than this left
RENEW_BEFORE = datetime.timedelta(days=30)


@dataclass(frozen=True)
class TLSMaterial:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


def service_dns_names(service: str, namespace: str) -> list[str]:
    """The names kube-apiserver uses for a Service reference (``<svc>.<ns>.svc``) and the fully qualified one."""
    return [f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"]


def _name(common_name: str) -> x509.Name:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def issue(dns_names: list[str], ip_addresses: tuple[str, ...] = (), now: datetime.datetime | None = None,
          serving_days: int = SERVING_DAYS) -> TLSMaterial:
    """A new CA and a serving certificate for ``dns_names`` (the first is the subject) signed by it.

    P-256 keys: as strong as RSA-3072 for this use and much faster at the handshakes every admission call makes.
    The CA's key is not returned: nothing needs it after signing, so it is never stored.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    now = now or datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"kvbackup-webhook-ca-{now:%Y%m%d%H%M%S}")
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate clock skew between nodes
          .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(address)) for address in ip_addresses]
    cert = (x509.CertificateBuilder().subject_name(_name(dns_names[0])).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=serving_days))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return TLSMaterial(ca.public_bytes(serialization.Encoding.PEM), cert.public_bytes(serialization.Encoding.PEM),
                       _key_pem(key))


def still_good(ca_pem: bytes, cert_pem: bytes, dns_names: list[str], now: datetime.datetime | None = None) -> bool:
    """Whether a certificate found in the cluster can be kept: signed by ``ca_pem``, names all of ``dns_names``,
    and valid for longer than RENEW_BEFORE."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    now = now or datetime.datetime.now(datetime.timezone.utc)
    try:
        ca = x509.load_pem_x509_certificate(ca_pem)
        cert = x509.load_pem_x509_certificate(cert_pem)
        cert.verify_directly_issued_by(ca)
        sans = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                   .get_values_for_type(x509.DNSName))
    except (ValueError, TypeError, x509.ExtensionNotFound, InvalidSignature):
        return False
    return set(dns_names) <= sans and cert.not_valid_after_utc - now > RENEW_BEFORE
