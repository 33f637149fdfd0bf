"""TLS material the adapters take: the PEM files of a client channel (etcd, ActionController)
and of the gRPC server. The application's configuration fills them (app/config.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files for a TLS channel: the CA that signs the server (None: the system's trusted
    CAs), and a client certificate and key for mutual TLS."""

    ca_file: Path | None
    cert_file: Path | None = None
    key_file: Path | None = None

    def pem(self) -> tuple[bytes | None, bytes | None, bytes | None]:
        """(root certificates, private key, certificate chain), the order gRPC's
        `ssl_channel_credentials` takes them in."""

        def read(path: Path | None) -> bytes | None:
            return path.read_bytes() if path else None

        return read(self.ca_file), read(self.key_file), read(self.cert_file)


@dataclass(frozen=True, slots=True)
class ServerTls:
    """Serve clients over TLS with this certificate; with `client_ca`, require client
    certificates signed by it (mutual TLS)."""

    cert_file: Path
    key_file: Path
    client_ca: Path | None = None

    def pem(self) -> tuple[bytes, bytes, bytes | None]:
        """(private key, certificate chain, client CA), as gRPC's `ssl_server_credentials`
        takes them."""
        ca = self.client_ca.read_bytes() if self.client_ca else None
        return self.key_file.read_bytes(), self.cert_file.read_bytes(), ca
