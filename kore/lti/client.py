"""Kore's LTI Advantage client: authorized requests to one LMS registration's services.

A :class:`ServiceSession` is what a job uses: the course's client id, the token URL of
the registration (``c.LMSRegistration`` in 30_lms.py) and the scopes the job needs
(already cut down to what the launch granted). Each request carries a cached access
token; a 401 makes the session fetch a new token and send the request once more (the
LMS may have revoked it or let it expire early).
"""

from collections.abc import AsyncIterator, Iterable
from urllib.parse import urlsplit

from ananke_hub.keys import KeyStore
from ananke_hub.registration import LMSRegistration
from ananke_hub.registrations import REMOVED, Registration, RegistrationBook

from .errors import BadLMSResponse, LTIServiceError, clean
from .settings import LTIAdvantage
from .tokens import AccessToken, TokenService
from .transport import LMSResponse, LMSTransport


class ServiceSession:
    """Authorized requests for one course and one set of scopes.

    ``audience``: the ``aud`` of the client assertion, when the platform names one other
    than its token URL (the default; IMS Security Framework 1.0 section 4.1).
    """

    def __init__(
        self, tokens: TokenService, *, token_url: str, client_id: str, audience: str = "", scopes
    ):
        self.tokens = tokens
        self.token_url = token_url
        self.client_id = client_id
        self.audience = audience or token_url
        self.scopes = frozenset(scopes)

    @property
    def transport(self) -> LMSTransport:
        return self.tokens.transport

    async def token(self) -> AccessToken:
        return await self.tokens.token(
            token_url=self.token_url,
            client_id=self.client_id,
            audience=self.audience,
            scopes=self.scopes,
        )

    async def request(
        self,
        method: str,
        url: str,
        *,
        action: str,
        accept: str,
        content_type: str | None = None,
        content: bytes | None = None,
    ) -> LMSResponse:
        refreshed = False
        while True:
            token = await self.token()
            headers = {"Authorization": f"Bearer {token.value}", "Accept": accept}
            if content_type:
                headers["Content-Type"] = content_type
            try:
                return await self.transport.request(
                    method, url, action=action, headers=headers, content=content
                )
            except LTIServiceError as exc:
                if exc.status != 401 or refreshed:
                    raise
                # Once: a new token, then the same request again.
                self.tokens.invalidate(token)
                refreshed = True

    async def pages(
        self,
        list_url: str,
        first: str,
        *,
        action: str,
        accept: str,
        max_pages: int,
        names: tuple[str, str],
    ) -> AsyncIterator[LMSResponse]:
        """Every page of a paged list, from ``first`` (``list_url`` with a query, or
        itself) along the ``Link: <...>; rel="next"`` headers (AGS 2.0 section 3.2.5,
        NRPS 2.0 section 2.4.2), each page once. ``names``: the list's and its next
        page's name in messages ("line item list", "page of line items").

        A next page on another site is refused (the token goes only to the LMS's own
        service URL); more than ``max_pages`` pages (c.LTIAdvantage.max_pages) too.
        """
        list_name, next_name = names
        origin = urlsplit(list_url)[:2]
        seen: set[str] = set()
        url = first
        for _ in range(max_pages):
            seen.add(url)
            response = await self.request("GET", url, action=action, accept=accept)
            yield response
            url = response.next_link()
            if not url or url in seen:
                return
            if urlsplit(url)[:2] != origin:
                raise BadLMSResponse(
                    f"The LMS's next {next_name} is on another site ({clean(url)}); "
                    "Kore sends its token only to the LMS's own service URL."
                )
        raise LTIServiceError(
            f"The {list_name} at {list_url} has more than {max_pages} pages "
            "(c.LTIAdvantage.max_pages); Kore stopped reading it."
        )


class LTIClient:
    """The LTI Advantage services of the one LMS registration, for Kore's jobs."""

    def __init__(
        self,
        *,
        registration: LMSRegistration,
        key_store: KeyStore,
        settings: LTIAdvantage | None = None,
        transport: LMSTransport | None = None,
        registrations: RegistrationBook | None = None,
    ):
        self.registration = registration
        #: Every registration of the hub (30_lms.py's and the database's); None: only
        #: ``registration``.
        self.registrations = registrations
        self.settings = settings or LTIAdvantage()
        self.transport = transport or LMSTransport(
            retry=self.settings.retry_policy(),
            request_timeout=self.settings.request_timeout,
            connect_timeout=self.settings.connect_timeout,
            max_connections=self.settings.concurrency,
            limiter=self.settings.limiter(),
        )
        self.tokens = TokenService(self.transport, key_store.signing_key)

    async def registration_of(self, issuer: str, client_id: str) -> Registration | None:
        """The registration a course was launched through (None: only 30_lms.py's is known)."""
        if self.registrations is None:
            return None
        return await self.registrations.find(issuer, client_id)

    async def course_session(
        self, *, issuer: str, client_id: str, scopes: Iterable[str]
    ) -> ServiceSession:
        """A session for a course launched from ``issuer`` with ``client_id``: with the
        token URL, client id and assertion audience of that course's own registration."""
        found = await self.registration_of(issuer, client_id)
        if found is not None and found.id != "config":
            if found.state == REMOVED or not found.enabled:
                raise LTIServiceError(
                    f"The registration of {issuer!r} (registration {found.id}) is "
                    f"{found.state} on this hub: Kore sends nothing to that LMS. "
                    "`ananke lms list` shows the registrations."
                )
            if not found.token_url:
                raise LTIServiceError(
                    f"The LMS {issuer!r} (registration {found.id}) named no token endpoint "
                    "when it registered: it offers no grade or roster service to the hub."
                )
            return ServiceSession(
                self.tokens,
                token_url=found.token_url,
                client_id=client_id,
                audience=found.token_audience,
                scopes=scopes,
            )
        return self.session(issuer=issuer, client_id=client_id, scopes=scopes)

    def session(self, *, issuer: str, client_id: str, scopes: Iterable[str]) -> ServiceSession:
        """A session for a course of the registration in 30_lms.py."""
        registration = self.registration
        if not registration.access_token_url:
            raise LTIServiceError(
                "c.LMSRegistration.access_token_url is not set in 30_lms.py: Kore cannot "
                "get access tokens for grades and rosters. Moodle: <site>/mod/lti/token.php."
            )
        if registration.issuer and issuer != registration.issuer:
            raise LTIServiceError(
                f"This course was launched from {issuer!r}, but the hub is registered with "
                f"{registration.issuer!r} (c.LMSRegistration.issuer): Kore sends its "
                "credentials to the registered LMS only."
            )
        if registration.client_ids and client_id not in registration.client_ids:
            raise LTIServiceError(
                f"This course was launched with client id {client_id!r}, which "
                "c.LMSRegistration.client_id in 30_lms.py no longer lists."
            )
        return ServiceSession(
            self.tokens,
            token_url=registration.access_token_url,
            client_id=client_id,
            audience=registration.token_audience,
            scopes=scopes,
        )

    async def aclose(self) -> None:
        await self.transport.aclose()
