"""HTTP glue: tornado handlers around the library classes of lti.py.

Security Framework 1.0 (https://www.imsglobal.org/spec/security/v1p0/#openid_connect_launch_flow):
``POST /launch`` starts the third-party initiated login at the tool, ``/auth`` answers the
tool's authentication request with an id_token posted to the redirect URI, ``/jwks``
publishes the key the tool checks it with.
"""

from lti1p3platform.exceptions import PreflightRequestValidationException
from tornado import web

from . import people
from .lti import (
    AuthRequestRefused,
    FormPost,
    FormPostOIDCLogin,
    MessageLaunch,
    PlatformConf,
    ToolSettings,
    TornadoRequest,
)
from .people import Person

#: The platform's login session. Cookies ignore ports (RFC 6265 section 8.5): the name
#: must not collide with the hub's cookies on 127.0.0.1.
SESSION_COOKIE = "external-platform-user"
XSRF_COOKIE = "external-platform-xsrf"


class Refused(web.HTTPError):
    def __init__(self, message: str):
        super().__init__(400, "%s", message)
        self.message = message


class Handler(web.RequestHandler):
    @property
    def tool(self) -> ToolSettings:
        return self.settings["tool"]

    @property
    def conf(self) -> PlatformConf:
        return self.settings["lti_conf"]

    def session_person(self) -> Person | None:
        sub = self.get_signed_cookie(SESSION_COOKIE)
        return people.PEOPLE.get(sub.decode()) if sub else None

    def render_form_post(self, post: FormPost, title: str) -> None:
        self.set_header("Cache-Control", "no-store")  # it may carry an id_token
        self.render("autopost.html", action=post.action, fields=post.fields, title=title)

    def log_exception(self, typ, value, tb):
        if isinstance(value, Refused):
            # One line, the path only: the query holds nonces, state and hints.
            self.settings["platform_log"].warning(
                "refused %s %s: %s", self.request.method, self.request.path, value.message
            )
        else:
            super().log_exception(typ, value, tb)

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = exc.message if isinstance(exc, Refused) else self._reason
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code}: {message}\n")


class LaunchPage(Handler):
    def get(self):
        self.render(
            "launch_page.html",
            course=people.COURSE,
            links=people.LINKS.values(),
            people=people.PEOPLE.values(),
        )


class Launch(Handler):
    def post(self):
        person = people.PEOPLE.get(self.get_body_argument("user", ""))
        link = people.LINKS.get(self.get_body_argument("link", ""))
        if person is None or link is None:
            raise Refused("Unknown person or activity: choose one on the launch page.")
        # Lax: the cookie comes along on the tool's top-level redirect to /auth.
        self.set_signed_cookie(
            SESSION_COOKIE, person.sub, expires_days=None, httponly=True, samesite="Lax"
        )
        login = FormPostOIDCLogin(TornadoRequest(self.request), self.conf)
        login.set_lti_message_hint(link_id=link.id)
        self.render_form_post(login.initiate_login(person.sub), title=f"Opening {link.title}")


class Authorize(Handler):
    def check_xsrf_cookie(self):
        # The tool's request is cross-site by design; it is bound to this browser by the
        # session cookie (login_hint) and to the tool's session by state and nonce.
        pass

    def get(self):
        launch = MessageLaunch(
            TornadoRequest(self.request),
            self.conf,
            tool=self.tool,
            services=self.settings["lti_services"],
            session=self.session_person(),
        )
        try:
            post = launch.lti_launch()
        except PreflightRequestValidationException:
            raise Refused(
                "lti1p3platform refused the authentication request: it needs nonce, state "
                f"and redirect_uri, and client_id {self.tool.client_id!r}."
            ) from None
        except AuthRequestRefused as exc:
            raise Refused(str(exc)) from None
        self.render_form_post(post, title="Signing in to the tool")

    post = get


class JWKS(Handler):
    def get(self):
        self.set_header("Content-Type", "application/json")
        self.finish(self.conf.get_jwks())


ROUTES = [
    (r"/", LaunchPage),
    (r"/launch", Launch),
    (r"/auth", Authorize),
    (r"/jwks", JWKS),
]
