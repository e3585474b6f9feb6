"""RSA key pairs for signing JWTs, published as a JSON Web Key Set.

Kore signs LTI Advantage client assertions with these keys and the LMS fetches the
public halves from ``<hub>/services/kore/jwks``; the built-in test platform uses the
same store for its own id_token keys.

Each key is one PEM file named ``<created>-<kid>.pem``. A key is generated once (the
file is created with ``O_EXCL`` and mode 0600) and kept until an explicit rotation;
after a rotation the previous key stays published, so tokens signed just before it
still verify (IMS Security Framework 6.3, key rotation).
"""

import base64
import fcntl
import hashlib
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .persist import ensure_private_dir, write_new_private_file

ALGORITHM = "RS256"
KEY_SIZE = 2048


class KeyFileError(ValueError):
    """A file in the key store is not a usable RSA private key. Names the file."""

    def __init__(self, path: Path, problem: str):
        self.path = Path(path)
        super().__init__(
            f"{self.path}: {problem}. Restore the file from a backup, or move it out of "
            f"{self.path.parent} and run `ananke keys rotate` (the LMS then sees a new key)."
        )


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def public_jwk(public_key: rsa.RSAPublicKey) -> dict:
    numbers = public_key.public_numbers()
    return {"kty": "RSA", "e": _b64url_uint(numbers.e), "n": _b64url_uint(numbers.n)}


def thumbprint(public_key: rsa.RSAPublicKey) -> str:
    """RFC 7638 JWK thumbprint: a key id derived from the key itself."""
    jwk = public_jwk(public_key)
    canonical = json.dumps(jwk, sort_keys=True, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()


@dataclass(frozen=True)
class SigningKey:
    kid: str
    created: int
    private_key: rsa.RSAPrivateKey
    path: Path

    @property
    def private_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def jwk(self) -> dict:
        return {
            **public_jwk(self.private_key.public_key()),
            "kid": self.kid,
            "alg": ALGORITHM,
            "use": "sig",
        }


class KeyStore:
    """A directory of RSA private keys; the newest signs, all current ones are published."""

    def __init__(self, directory: Path, keep: int = 2):
        self.directory = Path(directory)
        self.keep = keep
        self._cache: tuple[tuple[str, ...], list[SigningKey]] | None = None

    @property
    def retired_dir(self) -> Path:
        return self.directory / "retired"

    @contextmanager
    def _locked(self, shared: bool = False):
        """Serialise writers (ensure, rotate) against each other and against readers.

        Readers take the lock shared, so they never list a key that a rotation in
        another process is moving to ``retired/`` at that moment.
        """
        if shared:
            if not self.directory.is_dir():
                yield
                return
        else:
            ensure_private_dir(self.directory)
        fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _pem_files(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.glob("*.pem") if p.is_file() and not p.is_symlink())

    def _generate(self) -> SigningKey:
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_SIZE)
        kid = thumbprint(private_key.public_key())
        # Nanosecond prefix: names sort by creation even for two keys in one second.
        created = time.time_ns()
        path = self.directory / f"{created:020d}-{kid}.pem"
        key = SigningKey(kid=kid, created=created, private_key=private_key, path=path)
        write_new_private_file(path, key.private_pem)
        return key

    def ensure(self) -> SigningKey:
        """Return the signing key, generating the first one if the store is empty."""
        with self._locked():
            if not self._pem_files():
                self._generate()
        return self.signing_key()

    def rotate(self) -> SigningKey:
        """Generate a new signing key; keep the newest ``keep`` keys published, retire the rest."""
        with self._locked():
            new = self._generate()
            files = self._pem_files()
            ensure_private_dir(self.retired_dir)
            for old in files[: max(0, len(files) - self.keep)]:
                old.rename(self.retired_dir / old.name)
        self._cache = None
        return new

    def load(self) -> list[SigningKey]:
        """All published keys, oldest first (re-read only when the directory changes).

        Raises KeyFileError if a key file cannot be used.
        """
        names = tuple(p.name for p in self._pem_files())
        if self._cache and self._cache[0] == names:
            return self._cache[1]
        with self._locked(shared=True):
            files = self._pem_files()
            keys = [self._read_key(path) for path in files]
        self._cache = (tuple(p.name for p in files), keys)
        return keys

    @staticmethod
    def _read_key(path: Path) -> SigningKey:
        created_text, _, _ = path.stem.partition("-")
        if not created_text.isdigit():
            raise KeyFileError(path, "the name is not <created>-<kid>.pem")
        try:
            private_key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            # cryptography's message does not name the file; say which one is broken.
            reason = str(exc).split(". ")[0]
            raise KeyFileError(
                path, f"not a readable, unencrypted PEM private key ({reason})"
            ) from exc
        if not isinstance(private_key, rsa.RSAPrivateKey):
            raise KeyFileError(
                path, f"holds a {type(private_key).__name__.lstrip('_')}, not an RSA private key"
            )
        # The kid is derived from the key itself, never trusted from the file name.
        kid = thumbprint(private_key.public_key())
        return SigningKey(kid=kid, created=int(created_text), private_key=private_key, path=path)

    def signing_key(self) -> SigningKey:
        keys = self.load()
        if not keys:
            raise LookupError(
                f"No key in {self.directory}. Start Kore once or run `ananke keys rotate`."
            )
        return keys[-1]

    def jwks(self) -> dict:
        return {"keys": [key.jwk() for key in self.load()]}
