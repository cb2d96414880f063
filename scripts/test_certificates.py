"""Throwaway certificates for the checks that start the service with TLS.

A test CA, a server certificate for localhost and 127.0.0.1, and one
client certificate, made with openssl in a directory the caller owns.
"""

import subprocess
from pathlib import Path


class CertificateError(RuntimeError):
    """openssl failed; the message carries the command and its stderr."""


def _openssl(*args, cwd):
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise CertificateError(f"openssl {' '.join(args[:2])} failed: {result.stderr.strip()[-300:]}")


def make_certificates(directory, client="client", ca_name="velostream-test-ca"):
    """Writes ca.crt, server.crt/.key and <client>.crt/.key; returns their paths by file name."""
    d = str(directory)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
             "-days", "2", "-subj", f"/CN={ca_name}", cwd=d)
    for name, cn, ext in (
        ("server", "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
        (client, client, "extendedKeyUsage=clientAuth\n"),
    ):
        Path(d, f"{name}.ext").write_text(ext)
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={cn}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    names = ("ca.crt", "server.crt", "server.key", f"{client}.crt", f"{client}.key")
    return {k: Path(d, k) for k in names}
