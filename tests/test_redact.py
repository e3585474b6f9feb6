"""Secrets out of log lines: what ``ananke_hub.redact`` masks, and what it leaves."""

import logging

import pytest

from ananke_hub import redact


@pytest.mark.parametrize(
    "line, secret",
    [
        ("course registry: postgresql+psycopg://ananke:s3cret@db/ananke", "s3cret"),
        ("Config changed: {'services': [{'name': 'x', 'api_token': 'abc123def'}]}", "abc123def"),
        ("{'cookie_secret': b'0a1b2c3d'}", "0a1b2c3d"),
        ('{"client_secret": "hush-hush"}', "hush-hush"),
        ("Authorization: token 0123456789abcdef0123", "0123456789abcdef0123"),
        ("Authorization: Bearer Zx9_kq-2mUuXyLr0", "Zx9_kq-2mUuXyLr0"),
        ("id_token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIyIn0.c2lnbmF0dXJl", "c2lnbmF0dXJl"),
        ("302 -> /hub/?code=9f8e7d6c&state=abcd1234", "9f8e7d6c"),
        ("302 -> /hub/?code=9f8e7d6c&state=abcd1234", "abcd1234"),
        ("form client_assertion=eyJh.x.y&grant_type=c", "eyJh.x.y"),
        ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkq\n-----END PRIVATE KEY-----", "MIIEvQ"),
    ],
)
def test_secrets_are_masked(line, secret):
    assert secret not in redact.redact(line)
    assert redact.MASK in redact.redact(line)


@pytest.mark.parametrize(
    "line",
    [
        "course:c-0123456789abcdef user:u123 grades sync finished",
        "tool keyset: 1 key(s), signing kid X2nPEgWkm0YmNLjCIbRl5YlZs9-Q6ai4ZvT8dG1Lsgc",
        "the access token expired; asking the LMS for a new one",
        "200 GET /services/kore/api/courses (u2@127.0.0.1) 3.1ms",
        "course registry: sqlite:////var/lib/ananke/courses.sqlite",
    ],
)
def test_ordinary_lines_stay_as_they_are(line):
    assert redact.redact(line) == line


def test_installed_factory_masks_records_of_every_logger(caplog):
    redact.install()
    redact.install()  # idempotent
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("some.library").debug("url %s", "postgresql://u:pw0rd@h/db")
        try:
            raise ValueError("token 0123456789abcdef0123 refused")
        except ValueError:
            logging.getLogger("other").exception("failed")
    text = caplog.text
    assert "pw0rd" not in text and "postgresql://u:***@h/db" in text
    assert "0123456789abcdef0123" not in text and "ValueError" in text
