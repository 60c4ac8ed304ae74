"""Asymmetric signing keys (JWT_ALGORITHM=RS256 or ES256): the key ring read from
JWT_PRIVATE_KEYS, the JWK set that GET /.well-known/jwks.json serves, and new keys for
`flask --app wsgi keys rotate`.

JWT_PRIVATE_KEYS is a directory of PEM private keys (`*.pem`). The newest file signs, by
modification time, the name breaking ties (mounted secrets often share one time; `keys rotate`
names files by their UTC creation time, so the name alone orders them too); every key in the
directory verifies, so a token signed by an older key keeps working until it expires. A key's
`kid` is its RFC 7638 thumbprint: the same key has the same kid on every service, and no name
needs to be kept in step. The ring is read when the app is built: a reload (SIGHUP to
gunicorn) picks up a new or removed file.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ASYMMETRIC = ("RS256", "ES256")
RSA_BITS = 3072  # what `keys rotate` makes; any key of at least MIN_RSA_BITS verifies and signs
MIN_RSA_BITS = 2048


PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class UnusableKey(ValueError):
    """A key file that cannot serve the configured algorithm (said at start-up)."""


@dataclass(frozen=True)
class SigningKey:
    kid: str
    path: Path
    private: PrivateKey
    jwk: dict[str, str]  # the public key as a JWK (with kid, use, alg)

    @property
    def public(self) -> PublicKey:
        return self.private.public_key()

    def private_pem(self) -> bytes:
        return self.private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption())


@dataclass
class Keyring:
    """The keys of JWT_PRIVATE_KEYS: `signer` signs, `verifiers` (kid -> public key) verify."""

    algorithm: str
    keys: list[SigningKey] = field(default_factory=list)

    @property
    def signer(self) -> SigningKey:
        return self.keys[-1]

    @property
    def verifiers(self) -> dict[str, PublicKey]:
        return {key.kid: key.public for key in self.keys}

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The public JWK set, newest key first; no private parameter ever appears."""
        return {"keys": [dict(key.jwk) for key in reversed(self.keys)]}


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64url_fixed(value: int, size: int) -> str:
    return base64.urlsafe_b64encode(value.to_bytes(size, "big")).rstrip(b"=").decode("ascii")


def public_jwk(public: PublicKey, algorithm: str) -> dict[str, str]:
    """The JWK of a public key for this algorithm, with its RFC 7638 thumbprint as `kid`."""
    if isinstance(public, rsa.RSAPublicKey):
        rsa_numbers = public.public_numbers()
        members = {"e": _b64url_uint(rsa_numbers.e), "kty": "RSA", "n": _b64url_uint(rsa_numbers.n)}
    else:
        ec_numbers = public.public_numbers()
        members = {"crv": "P-256", "kty": "EC", "x": _b64url_fixed(ec_numbers.x, 32),
                   "y": _b64url_fixed(ec_numbers.y, 32)}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    kid = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode("ascii")
    return {**members, "kid": kid, "use": "sig", "alg": algorithm}


def _check(private: object, algorithm: str, path: Path) -> None:
    if algorithm == "RS256":
        if not isinstance(private, rsa.RSAPrivateKey):
            raise UnusableKey(f"{path}: RS256 needs an RSA key, this is a {type(private).__name__}")
        if private.key_size < MIN_RSA_BITS:
            raise UnusableKey(f"{path}: an RSA key of {private.key_size} bits is too short (at least {MIN_RSA_BITS})")
    elif not (isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(private.curve, ec.SECP256R1)):
        raise UnusableKey(f"{path}: ES256 needs an EC key on P-256")


def load_keyring(directory: str | Path, algorithm: str) -> Keyring:
    """Every `*.pem` private key of the directory, oldest first (the last one signs)."""
    folder = Path(directory)
    if not folder.is_dir():
        raise UnusableKey(f"JWT_PRIVATE_KEYS: {folder} is not a directory")
    files = sorted(folder.glob("*.pem"), key=lambda p: (p.stat().st_mtime, p.name))
    keys = []
    for path in files:
        try:
            private = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise UnusableKey(f"{path}: not an unencrypted PEM private key ({exc})") from None
        _check(private, algorithm, path)
        assert isinstance(private, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
        jwk = public_jwk(private.public_key(), algorithm)
        keys.append(SigningKey(kid=jwk["kid"], path=path, private=private, jwk=jwk))
    if not keys:
        raise UnusableKey(f"JWT_PRIVATE_KEYS: no *.pem key in {folder} (make one with: flask --app wsgi keys rotate)")
    return Keyring(algorithm=algorithm, keys=keys)


def new_private_key(algorithm: str) -> PrivateKey:
    if algorithm == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    return ec.generate_private_key(ec.SECP256R1())


def add_key(directory: str | Path, algorithm: str) -> SigningKey:
    """A new private key in the directory (created, mode 0700, if missing), readable by its
    owner only; it signs from the next start or reload."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    private = new_private_key(algorithm)
    jwk = public_jwk(private.public_key(), algorithm)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = folder / f"{stamp}-{jwk['kid'][:12]}.pem"
    key = SigningKey(kid=jwk["kid"], path=path, private=private, jwk=jwk)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(key.private_pem())
    newest = max((p.stat().st_mtime for p in folder.glob("*.pem") if p != path), default=0.0)
    if path.stat().st_mtime <= newest:  # same clock tick as another file: make it the newest
        os.utime(path, (newest + 1, newest + 1))
    return key
