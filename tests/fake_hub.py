"""One fake of JupyterHub's REST API, for tests that need the hub's answers but not a hub.

It answers as JupyterHub 6.1 does, route by route (``jupyterhub/apihandlers/users.py``,
``groups.py``, ``auth.py``), and as Ananke's own access route does
(``ananke_hub/auth/access.py``); ``tests/test_fake_hub.py`` sends the same requests to
a real JupyterHub and to this fake and compares the status codes. Tests that need hub
behaviour beyond these answers (logins, spawning labs, scopes) use the real hub
(``DemoStack``, ``tests/hubtest.py``).

It listens from its creation, in threads of its own (``with FakeHub() as hub`` closes
it), so it serves a Kore subprocess, async tests and blocking tests alike. Faults a test may switch on:
``down`` (connections refused), ``refuse_with`` (every call answered with that status,
as a token without the scope is), ``invalid_names`` (names the hub's username rules
refuse), ``access_route = False`` (a hub without Ananke's access route).
"""

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote

#: Kore's OAuth client and token as a hub-managed service gets them (tests/test_kore.py).
CLIENT_ID = "service-kore"
SERVICE_TOKEN = "kore-service-token"
KORE_SCOPE = "access:services!service=kore"


@dataclass
class Server:
    """A user's default server, and how it behaves when started or stopped.

    ``start``: "instant" (201, ready), "slow" (202, ready after ``polls`` looks at the
    user), "fail" (202, gone after ``polls`` looks), "gate" (202, ready once
    ``released``), "refuse" (403 to the start request, as without the scope).
    ``stop_polls``: looks at the user a stop takes (0: 204 at once; else 202 and
    ``pending: "stop"`` until then).
    """

    start: str = "instant"
    polls: int = 2
    stop_polls: int = 0
    running: bool = False
    pending: str | None = None  # "spawn" or "stop"
    looks: int = 0
    released: bool = False


@dataclass
class Reply:
    status: int
    body: object = None


@dataclass
class FakeHub:
    service_token: str = SERVICE_TOKEN
    users: set[str] = field(default_factory=set)
    groups: dict[str, set[str]] = field(default_factory=dict)
    #: Users' default servers, by user name (a user without an entry has none).
    servers: dict[str, Server] = field(default_factory=dict)
    #: Tokens of users and their models, for ``GET /hub/api/user`` (HubAuth's lookup).
    users_by_token: dict[str, dict] = field(default_factory=dict)
    #: OAuth codes: code -> (token, PKCE code challenge).
    codes: dict[str, tuple[str, str]] = field(default_factory=dict)
    token_requests: list[dict] = field(default_factory=list)
    #: (method, path below /hub/api) of every call.
    calls: list[tuple[str, str]] = field(default_factory=list)
    refuse_with: int | None = None
    invalid_names: set[str] = field(default_factory=set)
    access_route: bool = True
    #: Per user, the tokens the access route revokes (logins to grader servers).
    revocable: dict[str, int] = field(default_factory=dict)
    access_applied: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.lock = threading.Lock()
        self.port = 0
        self._server = None
        self._listen()
        self.api_url = f"http://127.0.0.1:{self.port}/hub/api"

    # --- set-up ------------------------------------------------------------------------

    def _listen(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        self._server.daemon_threads = True
        self.port = self._server.server_port
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def _close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._server = None

    @property
    def down(self) -> bool:
        """True: the hub is not there (connections to its port are refused)."""
        return self._server is None

    @down.setter
    def down(self, value: bool) -> None:
        if value and self._server is not None:
            self._close()
        elif not value and self._server is None:
            self._listen()  # the same port again

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._server is not None:
            self._close()

    def add_user(self, token, name, *, admin=False, groups=(), scopes=(KORE_SCOPE,)):
        """A hub user whose token HubAuth may look up (``GET /hub/api/user``)."""
        self.users.add(name)
        self.users_by_token[token] = {
            "kind": "user",
            "name": name,
            "admin": admin,
            "groups": list(groups),
            "scopes": list(scopes),
        }

    def add_server(self, name, **kwargs) -> Server:
        self.users.add(name)
        server = self.servers[name] = Server(**kwargs)
        return server

    def count(self, method: str, path: str) -> int:
        return self.calls.count((method, path))

    # --- the routes --------------------------------------------------------------------

    def answer(self, method: str, path: str, body, auth: str) -> Reply:
        """JupyterHub's answer to one API call (``path`` below ``/hub/api``)."""
        with self.lock:
            self.calls.append((method, path))
            token = auth.removeprefix("token ").removeprefix("Bearer ")
            if path == "/user" and method == "GET":
                model = self.users_by_token.get(token)
                return Reply(200, model) if model else _error(403, "Missing or invalid credentials.")
            if path == "/oauth2/token" and method == "POST":
                return self._oauth_token(body)
            if token != self.service_token:
                return _error(403, "Missing or invalid credentials.")
            if self.refuse_with:
                return _error(self.refuse_with, "Action is not authorized with current scopes")
            for pattern, handler in self._routes():
                match = re.fullmatch(pattern, path)
                if match:
                    return handler(method, *map(unquote, match.groups()), body)
            return _error(404, "Not Found")

    def _routes(self):
        return [
            (r"/users", self._users),
            (r"/users/([^/]+)", self._user),
            (r"/users/([^/]+)/server", self._server_route),
            (r"/groups/([^/]+)", self._group),
            (r"/groups/([^/]+)/users", self._group_users),
            (r"/ananke/users/([^/]+)/access", self._access),
        ]

    def _users(self, method, body) -> Reply:
        if method != "POST":
            return _error(405, "Method Not Allowed")
        names = body.get("usernames") if isinstance(body, dict) else None
        if not names:
            return _error(400, "Must specify at least one user to create")
        invalid = [n for n in names if n in self.invalid_names]
        if invalid:  # the whole request fails, nobody is created
            if len(invalid) == 1:
                return _error(400, f"Invalid username: {invalid[0]}")
            return _error(400, f"Invalid usernames: {', '.join(invalid)}")
        new = [n for n in names if n not in self.users]
        if not new:
            return _error(409, f"All {len(names)} users already exist")
        self.users.update(new)
        return Reply(201, [self._user_model(n) for n in new])

    def _user(self, method, name, body) -> Reply:
        if method == "POST":
            if name in self.users:
                return _error(409, f"User {name} already exists")
            self.users.add(name)
            return Reply(201, self._user_model(name))
        if name not in self.users:
            return _error(404, "Not Found")
        if method == "GET":
            self._look(name)
            return Reply(200, self._user_model(name))
        if method == "DELETE":
            server = self.servers.get(name)
            if server and server.pending == "stop":
                return _error(400, f"{name}'s server is in the process of stopping, please wait.")
            if server and server.running:
                self._stop(server)
                if server.pending == "stop":
                    return _error(
                        400, f"{name}'s server is in the process of stopping, please wait."
                    )
            self.users.discard(name)
            self.servers.pop(name, None)
            for members in self.groups.values():
                members.discard(name)
            return Reply(204)
        return _error(405, "Method Not Allowed")

    def _server_route(self, method, name, body) -> Reply:
        if name not in self.users:
            return _error(404, "Not Found")
        server = self.servers.setdefault(name, Server())
        if method == "POST":
            if server.start == "refuse":
                return _error(403, "Action is not authorized with current scopes")
            if server.pending == "spawn":
                return Reply(202)
            if server.pending:
                return _error(400, f"{name} is pending {server.pending}")
            if server.running:
                return _error(400, f"{name} is already running")
            if server.start == "instant":
                server.running = True
                return Reply(201)
            server.pending, server.looks = "spawn", 0
            return Reply(202)
        if method == "DELETE":
            if server.pending == "stop":
                return Reply(202)
            if server.pending == "spawn":  # JupyterHub cancels the spawn, then stops
                server.pending, server.running = None, True
            if not server.running:
                return Reply(204)
            self._stop(server)
            return Reply(202 if server.pending == "stop" else 204)
        return _error(405, "Method Not Allowed")

    def _group(self, method, group, body) -> Reply:
        if method == "POST":
            if group in self.groups:
                return _error(409, f"Group {group} already exists")
            self.groups[group] = set()
            return Reply(201, self._group_model(group))
        if group not in self.groups:
            return _error(404, f"No such group: {group}")
        if method == "GET":
            return Reply(200, self._group_model(group))
        if method == "DELETE":
            del self.groups[group]
            return Reply(204)
        return _error(405, "Method Not Allowed")

    def _group_users(self, method, group, body) -> Reply:
        if group not in self.groups:
            return _error(404, f"No such group: {group}")
        if not isinstance(body, dict) or "users" not in body:
            verb = "add" if method == "POST" else "delete"
            return _error(400, f"Must specify users to {verb}")
        unknown = [n for n in body["users"] if n not in self.users]
        if unknown:  # JupyterHub: 400, not 404, for a user it does not know
            return _error(400, f"No such user: {unknown[0]}")
        if method == "POST":
            self.groups[group] |= set(body["users"])
        elif method == "DELETE":
            self.groups[group] -= set(body["users"])
        else:
            return _error(405, "Method Not Allowed")
        return Reply(200, self._group_model(group))

    def _access(self, method, name, body) -> Reply:
        if not self.access_route:
            return _error(404, "Not Found")
        if method != "POST":
            return _error(405, "Method Not Allowed")
        if name not in self.users:
            return _error(404, f"No such user: {name}")
        self.access_applied.append(name)
        revoked = self.revocable.pop(name, 0)
        return Reply(200, {"name": name, "changed": bool(revoked), "revoked_tokens": revoked})

    def _oauth_token(self, form: dict) -> Reply:
        self.token_requests.append(form)
        token, challenge = self.codes.pop(form.get("code"), (None, None))
        verifier = form.get("code_verifier", "").encode()
        computed = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=")
        if (
            token is None
            or form.get("client_id") != CLIENT_ID
            or form.get("client_secret") != self.service_token
            or computed.decode() != challenge
        ):
            return Reply(400, {"error": "invalid_grant"})
        return Reply(200, {"access_token": token, "token_type": "Bearer"})

    # --- models and servers ------------------------------------------------------------

    def _user_model(self, name) -> dict:
        server = self.servers.get(name)
        servers = {}
        if server and (server.running or server.pending):
            servers[""] = {
                "name": "",
                "ready": server.running and not server.pending,
                "pending": server.pending,
                "url": f"/user/{name}/",
            }
        groups = sorted(g for g, members in self.groups.items() if name in members)
        return {"kind": "user", "name": name, "admin": False, "groups": groups, "servers": servers}

    def _group_model(self, group) -> dict:
        return {"kind": "group", "name": group, "users": sorted(self.groups[group])}

    def _look(self, name) -> None:
        """A look at the user moves a pending spawn or stop on."""
        server = self.servers.get(name)
        if server is None or not server.pending:
            return
        server.looks += 1
        if server.pending == "stop":
            # Seen stopping stop_polls times, then stopped.
            if server.looks > server.stop_polls:
                server.pending, server.running = None, False
            return
        done = server.released if server.start == "gate" else server.looks >= server.polls
        if done:
            server.pending = None
            server.running = server.start != "fail"

    def _stop(self, server: Server) -> None:
        if server.stop_polls:
            server.pending, server.looks = "stop", 0
        else:
            server.running = False


def _error(status: int, message: str) -> Reply:
    return Reply(status, {"status": status, "message": message})


def _handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _serve(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            path = self.path.split("?", 1)[0]
            if not path.startswith("/hub/api/"):
                return self._send(Reply(404, {"status": 404, "message": "Not Found"}))
            path = path.removeprefix("/hub/api")
            if path == "/oauth2/token":
                body = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
            else:
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    return self._send(_error(400, "Invalid JSON in body of request"))
            auth = self.headers.get("Authorization", "")
            self._send(hub.answer(self.command, path, body, auth))

        def _send(self, reply: Reply):
            data = json.dumps(reply.body).encode() if reply.body is not None else b""
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    return Handler
