#!/usr/bin/env python3
"""Creates (or replaces) a SCRAM user on a Kafka broker.

    python3 scripts/kafka_scram_user.py HOST:PORT USER PASSWORD [--mechanism SCRAM-SHA-512]

Sends one AlterUserScramCredentials request (KIP-554, API key 51, version
0) over a plaintext connection, the way `kafka-configs --alter
--add-config SCRAM-SHA-512=[password=...]` does: the salted password is
computed here (RFC 5802 `Hi`, PBKDF2-HMAC with the mechanism's hash), so the
password itself never crosses the wire. The secured test broker
(scripts/secure-broker.sh) uses it on its plaintext admin listener, because
a broker with no users cannot authenticate the first one over SASL.

Only the Python standard library is used. Exits 1 with the broker's error
code and message when the broker refuses the request.
"""

import argparse
import hashlib
import os
import socket
import struct
import sys

API_KEY = 51  # AlterUserScramCredentials
API_VERSION = 0  # flexible from version 0: compact fields and tagged fields
MECHANISMS = {"SCRAM-SHA-256": (1, "sha256"), "SCRAM-SHA-512": (2, "sha512")}
ITERATIONS = 4096  # Kafka's minimum for SCRAM credentials


def uvarint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def compact_bytes(b):
    return uvarint(len(b) + 1) + b


def read_uvarint(buf, pos):
    shift = value = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def read_compact_string(buf, pos):
    n, pos = read_uvarint(buf, pos)
    if n == 0:
        return None, pos
    return buf[pos:pos + n - 1].decode(), pos + n - 1


def request(user, password, mechanism):
    code, digest = MECHANISMS[mechanism]
    salt = os.urandom(32)
    salted = hashlib.pbkdf2_hmac(digest, password.encode(), salt, ITERATIONS)
    client_id = b"velostream-scram-user"
    # request header v2: key, version, correlation id, client id (a
    # non-compact nullable string), no tagged fields
    header = struct.pack(">hhih", API_KEY, API_VERSION, 1, len(client_id)) + client_id + b"\x00"
    upsertion = (compact_bytes(user.encode()) + struct.pack(">bi", code, ITERATIONS)
                 + compact_bytes(salt) + compact_bytes(salted) + b"\x00")
    body = uvarint(1) + uvarint(2) + upsertion + b"\x00"  # no deletions, one upsertion
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def receive(sock):
    def exactly(n):
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("the broker closed the connection")
            data += chunk
        return data
    (size,) = struct.unpack(">i", exactly(4))
    return exactly(size)


def parse(response):
    """[(user, error_code, error_message)] of the response."""
    pos = 4  # correlation id
    _, pos = read_uvarint(response, pos)  # header tagged fields
    pos += 4  # throttle time
    count, pos = read_uvarint(response, pos)
    results = []
    for _ in range(count - 1):
        user, pos = read_compact_string(response, pos)
        (error,) = struct.unpack_from(">h", response, pos)
        message, pos = read_compact_string(response, pos + 2)
        _, pos = read_uvarint(response, pos)
        results.append((user, error, message))
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("address", help="HOST:PORT of a plaintext listener")
    parser.add_argument("user")
    parser.add_argument("password")
    parser.add_argument("--mechanism", choices=sorted(MECHANISMS), default="SCRAM-SHA-512")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    args = parser.parse_args()
    host, _, port = args.address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=args.timeout) as sock:
            sock.sendall(request(args.user, args.password, args.mechanism))
            results = parse(receive(sock))
    except (OSError, ConnectionError, struct.error, IndexError) as e:
        print(f"error: AlterUserScramCredentials to {args.address} failed: {e}", file=sys.stderr)
        return 1
    failed = [r for r in results if r[1] != 0]
    if not results or failed:
        for user, error, message in failed:
            print(f"error: the broker refused the credentials of {user}: error code {error}"
                  f"{': ' + message if message else ''}", file=sys.stderr)
        if not results:
            print("error: the broker's answer named no user", file=sys.stderr)
        return 1
    print(f"{args.mechanism} credentials set for {args.user} on {args.address}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
