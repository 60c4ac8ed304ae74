"""Asymmetric signing keys (JWT_ALGORITHM=RS256 or ES256): the key ring read from
JWT_PRIVATE_KEYS, the JWK set that GET /.well-known/jwks.json serves, and new keys for
`flask --app wsgi keys rotate`.

JWT_PRIVATE_KEYS is a directory of PEM private keys (`*.pem`), ordered by modification time,
the name breaking ties (mounted secrets often share one time; `keys rotate` names files by their
UTC creation time, so the name alone orders them too). The newest signs once it is
JWT_KEY_ACTIVATION_SECONDS old (see Keyring); every key in the directory verifies, so a token
signed by an older key keeps working until it expires. A key's `kid` is its RFC 7638
thumbprint: the same key has the same kid on every service, and no name needs to be kept in
step. The ring is read when the app is built: a reload (SIGHUP to gunicorn) picks up a new or
removed file.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import logging
import os
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt import PyJWK
from jwt.exceptions import InvalidKeyError, PyJWKError

from taskapi.extensions import PREFIX

log = logging.getLogger("taskapi.security")

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
    added: float = 0.0  # the file's modification time (unix seconds)

    @property
    def public(self) -> PublicKey:
        return self.private.public_key()

    def private_pem(self) -> bytes:
        return self.private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption())


@dataclass
class Keyring:
    """The keys of JWT_PRIVATE_KEYS, oldest first: every one verifies (and is published); the
    newest one added at least `activation` seconds ago signs. A new key is published at once and
    signs only later, so verifiers that cache the JWK set (or fetch it again at most every so
    often) know it before the first token it signs reaches them: a rotation fails no request.
    When no key is that old (the very first one), the newest signs."""

    algorithm: str
    keys: list[SigningKey] = field(default_factory=list)
    activation: float = 0.0

    @property
    def signer(self) -> SigningKey:
        ready = [key for key in self.keys if key.added <= time.time() - self.activation]
        return ready[-1] if ready else self.keys[-1]

    @property
    def verifiers(self) -> dict[str, PublicKey]:
        return {key.kid: key.public for key in self.keys}

    def verifier(self, kid: str) -> PublicKey | None:
        return self.verifiers.get(kid)

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


def load_keyring(directory: str | Path, algorithm: str, activation: float = 0.0) -> Keyring:
    """Every `*.pem` private key of the directory, oldest first (see Keyring for which signs)."""
    folder = Path(directory)
    if not folder.is_dir():
        raise UnusableKey(f"JWT_PRIVATE_KEYS: {folder} is not a directory")
    try:
        files = sorted(folder.glob("*.pem"), key=lambda p: (p.stat().st_mtime, p.name))
    except OSError as exc:  # a dangling symlink among them
        raise UnusableKey(f"JWT_PRIVATE_KEYS: {exc}") from None
    keys: list[SigningKey] = []
    for path in files:
        try:
            private = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except OSError as exc:  # unreadable (another owner, a directory named *.pem)
            raise UnusableKey(f"{path}: cannot be read ({exc.strerror or exc})") from None
        except (ValueError, TypeError) as exc:
            raise UnusableKey(f"{path}: not an unencrypted PEM private key ({exc})") from None
        _check(private, algorithm, path)
        assert isinstance(private, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
        jwk = public_jwk(private.public_key(), algorithm)
        keys = [key for key in keys if key.kid != jwk["kid"]]  # the same key twice: listed once, as the newer
        keys.append(SigningKey(kid=jwk["kid"], path=path, private=private, jwk=jwk, added=path.stat().st_mtime))
    if not keys:
        raise UnusableKey(f"JWT_PRIVATE_KEYS: no *.pem key in {folder} (make one with: flask --app wsgi keys rotate)")
    return Keyring(algorithm=algorithm, keys=keys, activation=activation)


def new_private_key(algorithm: str) -> PrivateKey:
    if algorithm == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    return ec.generate_private_key(ec.SECP256R1())


def ensure_key(directory: str | Path, algorithm: str) -> SigningKey | None:
    """A first key for an empty directory, made by one process under a lock on the directory
    while the others wait and then find it (`keys ensure`, boot.sh, development); returns the key
    made, or None when there was one already."""
    folder = Path(directory)
    if any(folder.glob("*.pem")):
        return None
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return None if any(folder.glob("*.pem")) else add_key(folder, algorithm)


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
    partial = path.with_name(path.name + ".partial")  # outside the *.pem glob until complete
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(key.private_pem())
        out.flush()
        os.fsync(out.fileno())
    os.rename(partial, path)  # a reader sees no file or the whole key, never a part
    newest = max((p.stat().st_mtime for p in folder.glob("*.pem") if p != path), default=0.0)
    if path.stat().st_mtime <= newest:  # same clock tick as another file: make it the newest
        os.utime(path, (newest + 1, newest + 1))
    return key


# --- a verifier's keys: the auth service's JWK set ----------------------------------------------
#
# A service that only verifies tokens (TASKAPI_SERVICE=tasks) reads the public keys from JWKS_URL.
# It fetches the set when it starts and again when a token names a kid it does not have, at
# most once per JWKS_REFETCH_SECONDS (a flood of made-up kids costs one fetch per interval).
# Each good set is also kept in the shared Redis (taskapi:jwks), so a process that starts while
# the auth service is down verifies with the last set any process saw; while it is down, the
# keys in hand keep working.

FETCH_TIMEOUT_SECONDS = 2.0
MAX_JWKS_BYTES = 256 * 1024


def parse_jwks(raw: bytes, algorithm: str) -> dict[str, PublicKey]:
    """kid -> public key for every usable key of this algorithm in a JWK set (others skipped);
    ValueError when the document is not a JWK set."""
    document = json.loads(raw)
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWK set")
    found: dict[str, PublicKey] = {}
    for jwk in document["keys"]:
        if not isinstance(jwk, dict) or not isinstance(jwk.get("kid"), str) or jwk.get("alg") != algorithm:
            continue
        if jwk.get("use", "sig") != "sig" or any(name in jwk for name in ("d", "p", "q", "k")):
            continue  # not for signatures, or not a public key
        try:
            key = PyJWK(jwk, algorithm=algorithm).key
        except (PyJWKError, InvalidKeyError, ValueError, TypeError):
            continue
        if (isinstance(key, rsa.RSAPublicKey) and algorithm == "RS256" and key.key_size >= MIN_RSA_BITS) or (
                isinstance(key, ec.EllipticCurvePublicKey) and algorithm == "ES256"
                and isinstance(key.curve, ec.SECP256R1)):
            found[jwk["kid"]] = key  # what the local ring would accept too
    return found


class RemoteKeyring:
    """The verifying keys of JWKS_URL, fetched again for an unknown kid (at most every
    `refetch_seconds`) and when the set is MAX_AGE_SECONDS old, with the last good set kept in
    Redis for processes that start while the auth service is down.

    One thread fetches at a time and no request waits for it: the others go on with the keys in
    hand (a token of a key not yet fetched is 401 until the fetch is through). A fetch has one
    deadline for the whole answer. A set that fails to parse, or holds no usable key of our
    algorithm, changes nothing."""

    def __init__(self, url: str, algorithm: str, refetch_seconds: float, store: Any, store_key: str) -> None:
        self.url, self.algorithm, self.refetch_seconds = url, algorithm, refetch_seconds
        self.store, self.store_key = store, store_key  # a Redis client (the main one), or None
        self.keys: dict[str, PublicKey] = {}
        self.fetched_at = self.loaded_at = float("-inf")
        self.lock = threading.Lock()
        self.refresh(wait=True)

    @property
    def verifiers(self) -> dict[str, PublicKey]:
        return self.keys

    def verifier(self, kid: str) -> PublicKey | None:
        key = self.keys.get(kid)
        now = time.monotonic()
        if (key is None and now - self.fetched_at >= self.refetch_seconds) or now - self.loaded_at >= MAX_AGE_SECONDS:
            self.refresh(wait=False)
            key = self.keys.get(kid)
        return key

    def refresh(self, *, wait: bool) -> None:
        if not self.lock.acquire(blocking=wait):
            return  # another thread is fetching: use the keys in hand
        try:
            if time.monotonic() - self.fetched_at < self.refetch_seconds:
                return  # another thread just did
            try:
                raw = self._fetch()
                keys = parse_jwks(raw, self.algorithm)
                if not keys:
                    raise ValueError(f"no usable {self.algorithm} key in the set")
            except Exception as exc:  # noqa: BLE001 - a garbled answer or a dead service: keep what we have
                log.warning("JWKS_URL %s: %s: %s; verifying with %d known key(s)", self.url,
                            exc.__class__.__name__, exc, len(self.keys))
                if not self.keys:
                    self.keys = self._stored()
                return
            finally:
                self.fetched_at = time.monotonic()
            self.keys, self.loaded_at = keys, time.monotonic()
            self._store(raw)
        finally:
            self.lock.release()

    def _fetch(self) -> bytes:
        """The set, within FETCH_TIMEOUT_SECONDS for the whole answer (not per read)."""
        deadline = time.monotonic() + FETCH_TIMEOUT_SECONDS
        request = urllib.request.Request(self.url, headers={"Accept": "application/json"})
        chunks: list[bytes] = []
        with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_SECONDS) as response:  # the configured URL
            while chunk := response.read(16384):
                chunks.append(chunk)
                if sum(map(len, chunks)) > MAX_JWKS_BYTES:
                    raise ValueError(f"the JWK set is over {MAX_JWKS_BYTES} bytes")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the JWK set took over {FETCH_TIMEOUT_SECONDS} s")
        return b"".join(chunks)

    def _stored(self) -> dict[str, PublicKey]:
        try:
            raw = self.store.get(self.store_key) if self.store is not None else None
            return parse_jwks(raw, self.algorithm) if raw else {}
        except Exception:  # noqa: BLE001 - no fallback is no worse than a broken one
            return {}

    def _store(self, raw: bytes) -> None:
        try:
            if self.store is not None:
                self.store.set(self.store_key, raw)
        except redis.RedisError as exc:
            log.warning("the JWK set was not kept in Redis (%s)", exc.__class__.__name__)


MAX_AGE_SECONDS = 300.0  # a key withdrawn at the auth service stops verifying here within this


def store_key(issuer: str, audience: str) -> str:
    """The Redis key of the last good set: one per deployment (issuer and audience) sharing a Redis."""
    digest = hashlib.sha256(f"{issuer}\0{audience}".encode()).hexdigest()[:16]
    return f"{PREFIX}jwks:{digest}"

