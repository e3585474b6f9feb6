"""The built-in LMS (``python -m ananke_hub.testlms --test-api``) for the tests of Kore's
LTI Advantage client and sync jobs, seen through its test API.

The platform runs as a subprocess in its Moodle profile; the tool's keyset, which it
fetches during every token request, is served from a thread of the test process (so a
test's event loop may be busy meanwhile). One platform serves a test module; each test
starts with :meth:`BuiltinLMS.reset`. Its course is ds101, the activity "homework" with
its own line item (Moodle's ``?type_id=1`` on the URL).
"""

import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
from test_platform import running_platform

from ananke_hub.testlms import constants as C

CONTEXT = "ds101"
LINK = "homework"


@contextmanager
def served_keyset(jwks):
    """Serve ``jwks()`` (the tool's public keys, read at each request) on a free port;
    yields its URL. Point it at other keys with ``server.jwks = ...``."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            body = json.dumps(server.jwks()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.jwks = jwks
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server, f"http://127.0.0.1:{server.server_port}/jwks"
    finally:
        server.shutdown()
        server.server_close()


class BuiltinLMS:
    def __init__(self, url: str, client_id: str, keyset):
        self.base = url
        self.client_id = client_id
        #: The keyset server: ``lms.keyset.jwks = other.jwks`` makes the LMS know
        #: another key than the one the tool signs with.
        self.keyset = keyset
        self.context = CONTEXT
        self.token_url = f"{url}/token"
        self.lineitems_url = f"{url}/ags/{CONTEXT}/lineitems"
        self.lineitem_url = self.item_url(LINK)
        self.memberships_url = f"{url}/nrps/{CONTEXT}/memberships"
        self.admin = httpx.Client(base_url=url, trust_env=False, timeout=30)

    def item_url(self, item_id: str) -> str:
        return f"{self.lineitems_url}/{item_id}/lineitem?type_id={C.TYPE_ID}"

    def _ok(self, response: httpx.Response) -> httpx.Response:
        assert response.is_success, response.text
        return response

    # --- set-up

    def reset(self, learners=()) -> None:
        """Demo data, no faults, default settings, counters zeroed; with ``learners``
        the course's roster is exactly these learners (user ids)."""
        self._ok(self.admin.post("/_test/reset"))
        self._ok(self.admin.post("/_test/load", json={}))
        if learners:
            self.set_roster([{"user_id": u} for u in learners])

    def set_roster(self, members: list[dict]) -> None:
        """The whole roster: dicts with user_id and optionally roles, status, names."""
        self._ok(self.admin.put("/_test/roster", json={"context": CONTEXT, "members": members}))

    def settings(self, **values) -> dict:
        return self._ok(self.admin.post("/_test/settings", json=values)).json()

    def fault(self, **rule) -> dict:
        return self._ok(self.admin.post("/_test/faults", json=rule)).json()

    def clear_faults(self) -> None:
        self._ok(self.admin.delete("/_test/faults"))

    def add_lineitem(self, label, maximum, *, resource_id="", tag="", link=None) -> str:
        """A column a teacher made; its URL."""
        doc = {"context": CONTEXT, "label": label, "scoreMaximum": maximum}
        doc.update(resourceId=resource_id, tag=tag)
        if link is not None:
            doc["resourceLinkId"] = link
        return self._ok(self.admin.post("/_test/lineitems", json=doc)).json()["id"]

    def delete_lineitem(self, url: str, *, stale: bool = False) -> None:
        self._ok(self.admin.post("/_test/delete_lineitem", json={"id": url, "stale": stale}))

    def revoke_tokens(self) -> None:
        self._ok(self.admin.delete("/_test/tokens"))

    # --- what arrived

    def requests(self, method: str | None = None, suffix: str = "") -> list[tuple[str, str]]:
        """The (method, path) of the service requests since the last reset."""
        seen = [tuple(r) for r in self._ok(self.admin.get("/_test/load")).json()["requests"]]
        return [r for r in seen if (method is None or r[0] == method) and r[1].endswith(suffix)]

    def request_connections(self) -> list[int]:
        return self._ok(self.admin.get("/_test/load")).json()["request_connections"]

    def connections(self) -> int:
        return self._ok(self.admin.get("/_test/load")).json()["connections"]

    def token_requests(self) -> list[dict]:
        return self._ok(self.admin.get("/_test/token_requests")).json()["requests"]

    def posts(self) -> list[dict]:
        return self._ok(self.admin.get("/_test/scores.json")).json()["posts"]

    def scores_of(self, lineitem_url: str, user: str) -> list[dict]:
        """Every score for ``user`` that ``lineitem_url`` accepted, in order."""
        return [
            h["score"]
            for p in self.posts()
            if p["lineitem"] == lineitem_url and p["userId"] == user
            for h in p["history"]
            if h["status"] == 204
        ]

    def accepted_counts(self) -> list[int]:
        """Per line item and learner, how many scores were accepted."""
        return [p["accepted"] for p in self.posts() if p["accepted"]]

    def score_posts(self) -> int:
        return len(self.requests("POST", "/scores"))

    def lineitems(self) -> list[dict]:
        """The course's line items now (the gradebook's columns)."""
        book = self._ok(self.admin.get("/gradebook.json")).json()
        (course,) = [c for c in book["contexts"] if c["id"] == CONTEXT]
        return course["lineitems"]

    def created_items(self) -> list[dict]:
        """The line items besides the activities' own."""
        own = {self.item_url(link) for link in ("homework", "exam")}
        return [i for i in self.lineitems() if i["id"] not in own]


@contextmanager
def started(state_dir, key_store, client_id: str, flags=()):
    """The built-in LMS with the test API, knowing ``key_store``'s keys as the tool's."""
    with served_keyset(key_store.jwks) as (keyset, keyset_url):
        with running_platform(
            state_dir, flags=["--test-api", *flags], client_id=client_id, tool_jwks_url=keyset_url
        ) as p:
            lms = BuiltinLMS(p.url, client_id, keyset)
            try:
                yield lms
            finally:
                lms.admin.close()
