"""A throw-away PKI for one test control plane, made with `cryptography` (no cfssl, nothing downloaded).

One CA signs the apiserver's serving certificate and every client certificate: the apiserver trusts it
through --client-ca-file, clients trust it as the server CA. Identities are x509 subjects, the way
kube-apiserver reads them: CN is the user name, each O is a group.

All files live in one directory and the CA key stays there, so another process (the node tier, the CLI)
can load the same PKI and mint further identities later. ECDSA P-256 keys: generated in about a
millisecond, accepted by every component and by the service-account token signer (ES256).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=30)
# Clock skew between the moment of minting and a component's check must never make a cert "not yet valid".
BACKDATE = datetime.timedelta(hours=1)

# Everything the apiserver is reached as: loopback, and the in-cluster names of the `kubernetes` Service.
APISERVER_DNS = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True)
class CertKey:
    cert: Path
    key: Path


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, *, ca: bool
) -> x509.CertificateBuilder:
    """What the CA and every leaf share: validity window, serial, basic constraints and key usage (a CA
    also signs certificates and CRLs)."""
    now = datetime.datetime.now(datetime.UTC)
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(usage, critical=True)
    )


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)


def _read_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{path}: expected an EC private key")
    return key


def _name(common_name: str, organizations: Iterable[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


class PKI:
    """The CA plus named certificate/key pairs in `directory` (created on first use)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca = CertKey(directory / "ca.crt", directory / "ca.key")
        self.service_account = CertKey(directory / "sa.pub", directory / "sa.key")

    @classmethod
    def create(cls, directory: Path) -> PKI:
        """A new CA, service-account key pair, apiserver serving cert and admin identity."""
        directory.mkdir(parents=True, exist_ok=True)
        pki = cls(directory)
        pki._create_ca()
        pki._create_service_account_key()
        pki.apiserver_serving()
        pki.admin()
        return pki

    def _create_ca(self) -> None:
        key = _new_key()
        subject = _name("netclaim-test-ca")
        cert = (
            _builder(subject, subject, key, ca=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write_key(self.ca.key, key)
        self.ca.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def _create_service_account_key(self) -> None:
        key = _new_key()
        _write_key(self.service_account.key, key)
        self.service_account.cert.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def _issue(
        self,
        name: str,
        subject: x509.Name,
        usage: x509.ObjectIdentifier,
        dns_names: Sequence[str] = (),
        ips: Sequence[str] = (),
    ) -> CertKey:
        ca_cert = x509.load_pem_x509_certificate(self.ca.cert.read_bytes())
        ca_key = _read_key(self.ca.key)
        key = _new_key()
        builder = (
            _builder(subject, ca_cert.subject, key, ca=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
        )
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        pair = CertKey(self.directory / f"{name}.crt", self.directory / f"{name}.key")
        _write_key(pair.key, key)
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return pair

    def _existing(self, name: str) -> CertKey | None:
        pair = CertKey(self.directory / f"{name}.crt", self.directory / f"{name}.key")
        return pair if pair.cert.exists() and pair.key.exists() else None

    def serving(self, name: str, dns_names: Sequence[str], ips: Sequence[str]) -> CertKey:
        """A TLS server certificate; reused if `name` was already issued."""
        return self._existing(name) or self._issue(
            name, _name(name), ExtendedKeyUsageOID.SERVER_AUTH, dns_names, ips
        )

    def client(self, name: str, user: str, groups: Sequence[str] = ()) -> CertKey:
        """A client identity `user` in `groups`; reused if `name` was already issued."""
        return self._existing(name) or self._issue(name, _name(user, groups), ExtendedKeyUsageOID.CLIENT_AUTH)

    # The identities the test bed needs. Names match the component so files are easy to find.

    def apiserver_serving(self, service_ip: str = "198.18.0.1") -> CertKey:
        return self.serving("apiserver", APISERVER_DNS, ["127.0.0.1", service_ip])

    def admin(self) -> CertKey:
        """system:masters bypasses RBAC and the DRA status authorization: for tests, not for the driver."""
        return self.client("admin", "system:admin", ["system:masters"])

    def apiserver_kubelet_client(self) -> CertKey:
        """The apiserver towards the kubelet (logs, exec); admin so the kubelet's webhook allows it."""
        return self.client("apiserver-kubelet-client", "kube-apiserver", ["system:masters"])

    def front_proxy_client(self) -> CertKey:
        """The apiserver's identity when it proxies to aggregated APIs (request-header authentication)."""
        return self.client("front-proxy-client", "front-proxy-client")

    def controller_manager(self) -> CertKey:
        return self.client("kube-controller-manager", "system:kube-controller-manager")

    def scheduler(self) -> CertKey:
        return self.client("kube-scheduler", "system:kube-scheduler")

    def kubelet(self, node: str) -> CertKey:
        """The Node authorizer and NodeRestriction key on exactly this user and group."""
        return self.client(f"kubelet-{node}", f"system:node:{node}", ["system:nodes"])

    def driver(self, user: str = "netclaim-driver", groups: Sequence[str] = ()) -> CertKey:
        """A plain user for the driver, so RBAC tests exercise what a real deployment must grant."""
        return self.client(f"driver-{user}", user, groups)
