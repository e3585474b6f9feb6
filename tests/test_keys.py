"""Create-once secrets (ananke_hub/persist.py) and the tool's key store (ananke_hub/keys.py)."""

import base64
import hashlib
import json
import multiprocessing
import os
import stat

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ananke_hub.keys import ALGORITHM, KeyFileError, KeyStore, thumbprint
from ananke_hub.persist import ensure_private_dir, read_or_create_secret, write_new_private_file


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def b64url_to_int(text: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")


def rfc7638(jwk: dict) -> str:
    """RFC 7638 section 3: SHA-256 of the required members, sorted, no whitespace."""
    members = {"e": jwk["e"], "kty": jwk["kty"], "n": jwk["n"]}
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()


# --- persist.py --------------------------------------------------------------------------


def test_new_private_file_is_0600_with_the_data(tmp_path):
    path = tmp_path / "secret"
    write_new_private_file(path, b"s3cret")
    assert path.read_bytes() == b"s3cret"
    assert mode(path) == 0o600


def test_new_private_file_is_0600_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        write_new_private_file(tmp_path / "secret", b"x")
    finally:
        os.umask(old)
    assert mode(tmp_path / "secret") == 0o600


def test_existing_file_is_never_overwritten(tmp_path):
    path = tmp_path / "secret"
    write_new_private_file(path, b"first")
    with pytest.raises(FileExistsError):
        write_new_private_file(path, b"second")
    assert path.read_bytes() == b"first"
    # No temporary file is left next to it.
    assert [p.name for p in tmp_path.iterdir()] == ["secret"]


def test_a_symlink_in_the_way_is_not_followed(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_bytes(b"untouched")
    (tmp_path / "secret").symlink_to(target)
    with pytest.raises(FileExistsError):
        write_new_private_file(tmp_path / "secret", b"new")
    assert target.read_bytes() == b"untouched"


def test_a_failed_write_leaves_no_file(tmp_path, monkeypatch):
    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space left"):
        write_new_private_file(tmp_path / "secret", b"data")
    assert list(tmp_path.iterdir()) == []


def test_private_dir_is_created_0700_and_tightened(tmp_path):
    created = ensure_private_dir(tmp_path / "a" / "secrets")
    assert mode(created) == 0o700
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    os.chmod(loose, 0o755)
    ensure_private_dir(loose)
    assert mode(loose) == 0o700


def test_secret_is_created_once_and_kept(tmp_path):
    path = tmp_path / "secrets" / "cookie"
    first = read_or_create_secret(path)
    assert len(first) == 64 and int(first, 16) >= 0
    assert read_or_create_secret(path) == first
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700


def test_empty_secret_file_is_a_clear_error(tmp_path):
    path = tmp_path / "cookie"
    path.write_bytes(b"")
    with pytest.raises(RuntimeError, match="cookie is empty.*backup"):
        read_or_create_secret(path)


def _secret_in_process(path, barrier, results):
    barrier.wait()
    results.put(read_or_create_secret(path))


def test_racing_processes_get_the_same_secret(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    results = ctx.Queue()
    path = tmp_path / "secrets" / "shared"
    procs = [
        ctx.Process(target=_secret_in_process, args=(path, barrier, results)) for _ in range(4)
    ]
    for p in procs:
        p.start()
    values = {results.get(timeout=60) for _ in procs}
    for p in procs:
        p.join()
        assert p.exitcode == 0
    assert values == {path.read_text()}


# --- keys.py -----------------------------------------------------------------------------


def test_rfc7638_example_thumbprint():
    # The example key of RFC 7638 section 3.1 and its published thumbprint.
    n = (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_"
        "BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_"
        "FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4"
        "vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    )
    e = "AQAB"
    public_key = rsa.RSAPublicNumbers(b64url_to_int(e), b64url_to_int(n)).public_key()
    assert thumbprint(public_key) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_ensure_creates_one_private_key_once(tmp_path):
    store = KeyStore(tmp_path / "keys")
    key = store.ensure()
    assert mode(tmp_path / "keys") == 0o700
    pem_files = list((tmp_path / "keys").glob("*.pem"))
    assert pem_files == [key.path]
    assert mode(key.path) == 0o600
    before = key.path.read_bytes()
    # A second ensure, also from a fresh store object (a restart), keeps the key.
    assert store.ensure().kid == key.kid
    assert KeyStore(tmp_path / "keys").ensure().kid == key.kid
    assert list((tmp_path / "keys").glob("*.pem")) == [key.path]
    assert key.path.read_bytes() == before


def test_jwk_is_the_public_half_with_thumbprint_kid(tmp_path):
    key = KeyStore(tmp_path).ensure()
    (jwk,) = KeyStore(tmp_path).jwks()["keys"]
    assert jwk["kty"] == "RSA" and jwk["alg"] == "RS256" and jwk["use"] == "sig"
    assert set(jwk) == {"kty", "e", "n", "kid", "alg", "use"}  # nothing private
    numbers = key.private_key.public_key().public_numbers()
    assert b64url_to_int(jwk["n"]) == numbers.n
    assert b64url_to_int(jwk["e"]) == numbers.e == 65537
    assert numbers.n.bit_length() == 2048
    assert jwk["kid"] == key.kid == rfc7638(jwk)


def test_published_jwk_verifies_what_the_signing_key_signs(tmp_path):
    store = KeyStore(tmp_path)
    key = store.ensure()
    token = jwt.encode(
        {"iss": "tool"}, key.private_pem, algorithm=ALGORITHM, headers={"kid": key.kid}
    )
    (jwk,) = store.jwks()["keys"]
    assert jwt.get_unverified_header(token)["kid"] == jwk["kid"]
    claims = jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=[ALGORITHM])
    assert claims == {"iss": "tool"}


def test_kid_comes_from_the_key_not_the_file_name(tmp_path):
    store = KeyStore(tmp_path)
    key = store.ensure()
    renamed = key.path.with_name(key.path.name.split("-", 1)[0] + "-not-the-kid.pem")
    key.path.rename(renamed)
    assert KeyStore(tmp_path).signing_key().kid == key.kid


def _ensure_in_process(directory, barrier, results):
    barrier.wait()
    results.put(KeyStore(directory).ensure().kid)


def test_concurrent_ensure_from_processes_yields_one_key(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    results = ctx.Queue()
    directory = tmp_path / "keys"
    procs = [
        ctx.Process(target=_ensure_in_process, args=(directory, barrier, results)) for _ in range(2)
    ]
    for p in procs:
        p.start()
    kids = {results.get(timeout=120) for _ in procs}
    for p in procs:
        p.join()
        assert p.exitcode == 0
    assert len(kids) == 1
    assert len(list(directory.glob("*.pem"))) == 1


def test_rotation_keeps_two_keys_and_retires_the_oldest(tmp_path):
    store = KeyStore(tmp_path / "keys", keep=2)
    first = store.ensure()
    second = store.rotate()
    assert second.kid != first.kid
    assert [k["kid"] for k in store.jwks()["keys"]] == [first.kid, second.kid]
    assert store.signing_key().kid == second.kid

    third = store.rotate()
    assert [k["kid"] for k in store.jwks()["keys"]] == [second.kid, third.kid]
    assert store.signing_key().kid == third.kid
    retired = list(store.retired_dir.glob("*.pem"))
    assert [p.name for p in retired] == [first.path.name]
    assert mode(store.retired_dir) == 0o700
    assert mode(retired[0]) == 0o600


def test_a_second_store_object_sees_a_rotation(tmp_path):
    # Kore keeps one KeyStore for its lifetime while `ananke keys rotate` uses another.
    running = KeyStore(tmp_path)
    first = running.ensure()
    assert [k["kid"] for k in running.jwks()["keys"]] == [first.kid]
    new = KeyStore(tmp_path).rotate()
    assert [k["kid"] for k in running.jwks()["keys"]] == [first.kid, new.kid]
    assert running.signing_key().kid == new.kid


def test_rotation_with_keep_three(tmp_path):
    store = KeyStore(tmp_path, keep=3)
    kids = [store.ensure().kid] + [store.rotate().kid for _ in range(3)]
    assert [k["kid"] for k in store.jwks()["keys"]] == kids[1:]


def test_empty_store_has_no_signing_key(tmp_path):
    store = KeyStore(tmp_path / "keys")
    assert store.jwks() == {"keys": []}
    with pytest.raises(LookupError, match="ananke keys rotate"):
        store.signing_key()


def _write_key_file(directory, name: str, data: bytes):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(data)
    return directory / name


def test_non_rsa_key_is_a_clear_error(tmp_path):
    ec_key = ec.generate_private_key(ec.SECP256R1())
    pem = ec_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = _write_key_file(tmp_path, "01700000000000000000-ec.pem", pem)
    with pytest.raises(KeyFileError, match="not an RSA private key") as info:
        KeyStore(tmp_path).jwks()
    assert info.value.path == path
    assert str(path) in str(info.value)
    assert "ananke keys rotate" in str(info.value)


@pytest.mark.parametrize(
    "data",
    [
        b"not a key at all",
        b"",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    ],
    ids=["garbage", "empty", "bad-der"],
)
def test_corrupt_pem_is_a_clear_error(tmp_path, data):
    path = _write_key_file(tmp_path, "01700000000000000000-x.pem", data)
    with pytest.raises(KeyFileError, match="not a readable, unencrypted PEM private key") as info:
        KeyStore(tmp_path).ensure()
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_encrypted_pem_is_a_clear_error(tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    _write_key_file(tmp_path, "01700000000000000000-enc.pem", pem)
    with pytest.raises(KeyFileError, match="encrypted"):
        KeyStore(tmp_path).load()


def test_a_file_not_named_by_creation_time_is_a_clear_error(tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_key_file(tmp_path, "mykey.pem", pem)
    with pytest.raises(KeyFileError, match="mykey.pem: the name is not"):
        KeyStore(tmp_path).load()
