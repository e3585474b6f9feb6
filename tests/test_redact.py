"""Secrets out of log lines: what ``ananke_hub.redact`` masks, and what it leaves."""

import logging
import sys

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


@pytest.fixture
def lazy_logger():
    """An installed factory, and a logger that makes DEBUG records while its only
    handler writes INFO and above (as traitlets sets up the hub's logger)."""
    import io

    redact.install()
    # Outside the logging tree: pytest adds its capturing handlers to the tree's loggers.
    logger = logging.Logger("ananke.test.lazy", logging.DEBUG)
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    return logger, out


def test_records_no_handler_writes_are_not_redacted(lazy_logger, monkeypatch):
    """Redaction costs nothing for a record that is made and dropped (upstream's
    callback logs its id_token at DEBUG at every launch); every written one is masked."""
    logger, out = lazy_logger
    calls = []
    real = redact.redact
    monkeypatch.setattr(redact, "redact", lambda text: calls.append(text) or real(text))
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIyIn0.c2lnbmF0dXJl"
    records = []
    logger.addFilter(lambda record: records.append(record) or True)
    logger.debug("id_token %s", jwt)
    assert len(records) == 1 and calls == []  # made, dropped, never redacted
    logger.info("id_token %s", jwt)
    assert len(calls) == 1
    assert out.getvalue() == "INFO id_token ***\n"


def test_every_read_of_a_records_text_is_redacted():
    """Whatever reads a record (a formatter, code reading msg or args, a filter that
    rewrites it later, a copy, a pickle) sees no secret."""
    import copy
    import pickle

    def record(msg, *args, exc_info=None):
        return redact.RedactedRecord("x", logging.INFO, __file__, 1, msg, args, exc_info)

    secret = "postgresql://u:pw0rd@h/db"
    assert record("url %s", secret).getMessage() == "url postgresql://u:***@h/db"
    r = record("url %s", secret)
    assert (r.msg, r.args) == ("url postgresql://u:***@h/db", None)
    r = record("user %s logged in", "u3")  # nothing to mask: left as it was made
    assert (r.msg, r.args, r.getMessage()) == ("user %s logged in", ("u3",), "user u3 logged in")
    r.msg = "now %s"  # rewritten after it was read (a filter): redacted again
    r.args = (secret,)
    assert r.getMessage() == "now postgresql://u:***@h/db"
    for r in (copy.copy(record("url %s", secret)), pickle.loads(pickle.dumps(record(secret)))):
        assert "pw0rd" not in logging.Formatter("%(message)s %(msg)s").format(r)
    try:
        raise ValueError("token 0123456789abcdef0123 refused")
    except ValueError:
        r = record("failed", exc_info=sys.exc_info())
    text = logging.Formatter().format(r)
    assert "0123456789abcdef0123" not in text and "ValueError" in text
    assert "0123456789abcdef0123" not in r.exc_text


def test_a_broken_format_string_is_still_reported():
    """A record whose arguments do not fit its message still raises when read, so its
    handler reports it (logging's handleError) instead of writing a wrong line."""
    r = redact.RedactedRecord("x", logging.INFO, __file__, 1, "%d apples", ("many",), None)
    with pytest.raises(TypeError):
        r.getMessage()
