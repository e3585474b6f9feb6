"""The registrations store (ananke_hub/registrations.py): tickets, usernames per platform,
the config registration next to the database's, the audit log."""

import json
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from ananke_hub.auth.dynreg import (
    MAX_DOCUMENT_BYTES,
    RegistrationFailed,
    fetch_platform_configuration,
)
from ananke_hub.courses.models import AuditEvent, RegistrationTicket, utcnow
from ananke_hub.courses.registry import CourseRegistry
from ananke_hub.registration import LMSRegistration
from ananke_hub.registrations import (
    NewRegistration,
    RegistrationBook,
    RegistrationError,
    RegistrationStore,
    TicketRefused,
    prefixes_clash,
    ticket_digest,
)
from ananke_hub.usernames import UsernameRule, hub_username


def new(issuer: str, client_id: str = "c1") -> NewRegistration:
    return NewRegistration(
        issuer=issuer,
        client_id=client_id,
        deployment_id="d1",
        authorize_url=issuer + "/auth",
        jwks_url=issuer + "/jwks",
        token_url=issuer + "/token",
    )


@pytest.fixture
def registry(tmp_path):
    registry = CourseRegistry(url=f"sqlite:///{tmp_path / 'courses.sqlite'}")
    yield registry
    registry.close()


def configured() -> LMSRegistration:
    return LMSRegistration(
        issuer="https://moodle-a.example.edu",
        client_id="from-config",
        authorize_url="https://moodle-a.example.edu/mod/lti/auth.php",
        jwks_url="https://moodle-a.example.edu/mod/lti/certs.php",
    )


def test_a_ticket_is_stored_hashed_and_registers_once(registry):
    store = RegistrationStore(registry)
    secret = store.create_ticket(ttl=3600, actor="cli:root")
    with registry.session() as db:
        digests = db.scalars(select(RegistrationTicket.digest)).all()
    assert digests == [ticket_digest(secret)] and secret not in digests[0]
    store.claim_ticket(secret)
    with pytest.raises(TicketRefused, match="already used"):
        store.claim_ticket(secret)
    store.release_ticket(secret)  # the registration failed: the admin may retry
    store.claim_ticket(secret)
    reg = store.add(new("https://a.example"), secret=secret, actor="lms:a")
    store.release_ticket(secret)  # after success it stays used
    with pytest.raises(TicketRefused, match="already used"):
        store.check_ticket(secret)
    assert reg.id == "1" and reg.username_prefix == "u"  # the hub's first: today's names
    with registry.session() as db:
        actions = db.scalars(select(AuditEvent.action)).all()
    assert actions == ["lms.registration_url", "lms.register"]


def test_unknown_and_expired_tickets_are_refused(registry):
    store = RegistrationStore(registry)
    with pytest.raises(TicketRefused, match="no registration ticket"):
        store.check_ticket("")
    with pytest.raises(TicketRefused, match="not one this hub issued"):
        store.check_ticket("guessed")
    secret = store.create_ticket(ttl=3600, actor="cli:root")
    with registry.session() as db, db.begin():
        db.execute(update(RegistrationTicket).values(expires_at=utcnow() - timedelta(seconds=1)))
    with pytest.raises(TicketRefused, match="expired"):
        store.claim_ticket(secret)


def test_further_platforms_get_prefix_free_prefixes(registry):
    store = RegistrationStore(registry, configured())
    prefixes = ["u"]
    for n in range(5):
        secret = store.create_ticket(ttl=60, actor="cli:root")
        reg = store.add(new(f"https://lms{n}.example"), secret=secret, actor="x")
        prefixes.append(reg.username_prefix)
    assert len(set(prefixes)) == len(prefixes)
    for i, a in enumerate(prefixes):
        for b in prefixes[i + 1 :]:
            assert not prefixes_clash(a, b), (a, b)
    # Stable: the same platform registered again (after a removal) keeps its prefix.
    store.set_state("2", "removed", actor="x")
    again = store.add(
        new("https://lms1.example"), secret=store.create_ticket(ttl=60, actor="x"), actor="x"
    )
    assert again.id == "2" and again.username_prefix == prefixes[2]


@pytest.mark.parametrize("sub", ["2", "x", "CaseX", "a" * 40, "ü", "9" * 30])
def test_the_same_sub_from_two_platforms_never_shares_a_name(sub):
    rule = UsernameRule()
    other = rule.for_prefix("pab")
    assert rule.username(sub) != other.username(sub)
    assert rule.username(sub) == hub_username(sub)  # the first platform: today's names


def test_an_admin_chosen_prefix_must_not_clash(registry):
    store = RegistrationStore(registry, configured())
    with pytest.raises(RegistrationError, match="clashes with 'u'"):
        store.create_ticket(ttl=60, actor="x", username_prefix="u2")
    with pytest.raises(RegistrationError, match="grader"):
        store.create_ticket(ttl=60, actor="x", username_prefix="grader-x")
    secret = store.create_ticket(ttl=60, actor="x", username_prefix="mb")
    assert store.add(new("https://b.example"), secret=secret, actor="x").username_prefix == "mb"


def test_the_config_registration_is_listed_first_and_cannot_be_changed_here(registry):
    store = RegistrationStore(registry, configured())
    (entry,) = store.entries()
    assert entry.id == "config" and entry.source == "from config"
    with pytest.raises(RegistrationError, match="30_lms.py"):
        store.set_state("config", "disabled", actor="x")
    with pytest.raises(RegistrationError, match="registered in 30_lms.py already"):
        store.add(
            new("https://moodle-a.example.edu", "from-config"),
            secret=store.create_ticket(ttl=60, actor="x"),
            actor="x",
        )
    # The shipped placeholder is no registration: the first pasted LMS keeps today's names.
    shipped = LMSRegistration(
        issuer="https://moodle.example.edu", client_id="REPLACE-WITH-CLIENT-ID"
    )
    assert RegistrationStore(registry, shipped).entries() == []


async def test_the_book_sees_changes_without_a_restart(registry):
    store = RegistrationStore(registry)
    book = RegistrationBook(store, max_age=3600)
    assert await book.find("https://a.example", "c1") is None
    store.add(new("https://a.example"), secret=store.create_ticket(ttl=60, actor="x"), actor="x")
    book._loaded_at = float("-inf")  # what max_age seconds do
    found = await book.find("https://a.example", "c1")
    assert found is not None and found.enabled
    store.set_state(found.id, "disabled", actor="x")
    book._loaded_at = float("-inf")
    assert (await book.find("https://a.example", "c1")).state == "disabled"


# --- fetching the platform's configuration (ananke_hub/auth/dynreg.py) ------------------------


@pytest.fixture
def lms_site():
    """A loopback site whose /config answers what the test put in ``answers``."""
    answers = {}

    class Handler(web.RequestHandler):
        def get(self, name):
            status, body = answers[name]
            self.set_status(status)
            if status == 302:
                self.set_header("Location", "/elsewhere")
            self.finish(body)

    server = HTTPServer(web.Application([(r"/(\w+)", Handler)]))
    sockets = bind_sockets(0, "127.0.0.1")
    server.add_sockets(sockets)
    yield f"http://127.0.0.1:{sockets[0].getsockname()[1]}", answers
    server.stop()


async def test_a_platform_document_is_size_limited_and_not_followed(lms_site):
    url, answers = lms_site
    answers["big"] = (200, json.dumps({"issuer": url, "x": "y" * MAX_DOCUMENT_BYTES}))
    with pytest.raises(RegistrationFailed, match="more than 64 KB"):
        await fetch_platform_configuration(f"{url}/big")
    answers["moved"] = (302, "")
    with pytest.raises(RegistrationFailed, match="HTTP 302"):
        await fetch_platform_configuration(f"{url}/moved")
    with pytest.raises(RegistrationFailed, match="could not be reached"):
        await fetch_platform_configuration("http://127.0.0.1:1/.well-known/openid-configuration")
    answers["junk"] = (200, "<html>")
    with pytest.raises(RegistrationFailed, match="not JSON"):
        await fetch_platform_configuration(f"{url}/junk")


@pytest.mark.parametrize(
    "url", ["http://moodle.example.edu/.well-known/openid-configuration", "ftp://x/y", ""]
)
async def test_a_configuration_url_must_be_https(url):
    with pytest.raises(RegistrationFailed, match="https|Paste the registration URL"):
        await fetch_platform_configuration(url)


def _moodle_tool() -> dict:
    from ananke_hub.lti_spec import TOOL_CONFIGURATION

    hub = "https://hub.example.edu"
    return {
        "application_type": "web",
        "response_types": ["id_token"],
        "initiate_login_uri": f"{hub}/hub/lti13/oauth_login",
        "redirect_uris": [f"{hub}/hub/lti13/oauth_callback"],
        "client_name": "Jupyter",
        "jwks_uri": f"{hub}/services/kore/jwks",
        "token_endpoint_auth_method": "private_key_jwt",
        TOOL_CONFIGURATION: {"domain": "hub.example.edu", "target_link_uri": f"{hub}/hub/"},
    }


@pytest.mark.parametrize(
    "change, error",
    [
        (lambda t: t.pop("response_types"), "missing_response_types"),
        (lambda t: t.update(response_types=["code"]), "invalid_response_types"),
        (lambda t: t.update(redirect_uris="https://hub.example.edu/cb"), "invalid_redirect_uris"),
        (
            lambda t: t.update(token_endpoint_auth_method="client_secret_basic"),
            "invalid_token_endpoint_auth_method",
        ),
        (lambda t: t.update(application_type="native"), "invalid_application_type"),
        (
            lambda t: t[next(k for k in t if k.startswith("https://"))].pop("domain"),
            "missing_domain",
        ),
        (
            lambda t: t[next(k for k in t if k.startswith("https://"))].update(
                domain="other.example.edu"
            ),
            "domain_targetlinkuri_mismatch",
        ),
    ],
)
def test_the_built_in_lms_refuses_registrations_as_moodle_does(change, error):
    """Moodle 5.1's registration_helper.php refuses these; so does the Moodle profile."""
    from ananke_hub.testlms.handlers.registration import moodle_registration_problem

    assert moodle_registration_problem(_moodle_tool()) == ""
    # www. and the scheme do not count, as in Moodle's lti_get_domain_from_url.
    www = _moodle_tool()
    www[next(k for k in www if k.startswith("https://"))]["domain"] = "www.hub.example.edu"
    assert moodle_registration_problem(www) == ""
    tool = _moodle_tool()
    change(tool)
    assert moodle_registration_problem(tool).startswith(error)
