"""A scripted browser for LTI launches in tests.

An ``httpx.AsyncClient`` with one cookie jar, redirects followed by hand (so a test can
stop before a given URL), HTML forms read with the stdlib parser, and auto-submitting
forms (the platform's and Moodle's login and id_token pages) submitted as a browser
with JavaScript would::

    async with LTIBrowser() as b:
        resp = await b.launch(platform_url, "3", "homework")    # click through, follow all
        page = await b.get(platform_url)
        resp = await b.submit_form(page, form_index=0, fields={"user": "4"})

Cookies ignore ports (RFC 6265 section 8.5): the platform's, the hub's and a fake
tool's cookies on 127.0.0.1 share one jar, as in a real browser, so their names must
differ (the platform's start with ``ananke-platform-``).
"""

from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urlencode, urljoin

import httpx

REDIRECT_STATUSES = {301, 302, 303, 307, 308}
#: Input types a form submission does not send unless clicked (we never click).
_UNSENT_INPUTS = {"submit", "button", "image", "reset", "file"}


@dataclass
class Form:
    action: str  # absolute URL
    method: str  # "GET" or "POST"
    fields: dict[str, str] = field(default_factory=dict)
    id: str = ""
    name: str = ""


class _FormParser(HTMLParser):
    def __init__(self, base_url: str):
        super().__init__(convert_charrefs=True)
        self.base_url = base_url
        self.forms: list[Form] = []
        self.scripts: list[str] = []
        self._form: Form | None = None
        self._textarea: str | None = None  # name of the open <textarea>
        self._select: str | None = None  # name of the open <select>
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        a = {k: (v or "") for k, v in attrs}
        if tag == "script":
            self._in_script = True
            self.scripts.append("")
        elif tag == "form":
            self._form = Form(
                action=urljoin(self.base_url, a.get("action") or self.base_url),
                method=(a.get("method") or "get").upper(),
                id=a.get("id", ""),
                name=a.get("name", ""),
            )
            self.forms.append(self._form)
        elif tag == "option" and self._form is not None and self._select:
            # The selected option, else the first, is the select's value.
            if self._select not in self._form.fields or "selected" in a:
                self._form.fields[self._select] = a.get("value", "")
        elif self._form is None or "name" not in a:
            return
        elif tag == "input":
            kind = a.get("type", "text").lower()
            if kind in ("checkbox", "radio"):
                if "checked" in a:
                    self._form.fields[a["name"]] = a.get("value", "on")
            elif kind not in _UNSENT_INPUTS:
                self._form.fields[a["name"]] = a.get("value", "")
        elif tag == "textarea":
            self._textarea = a["name"]
            self._form.fields[a["name"]] = ""
        elif tag == "select":
            self._select = a["name"]

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data
        elif self._textarea and self._form:
            self._form.fields[self._textarea] += data

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False
        elif tag == "form":
            self._form = None
        elif tag == "textarea":
            self._textarea = None
        elif tag == "select":
            self._select = None


def _parse(resp: httpx.Response) -> _FormParser:
    parser = _FormParser(str(resp.url))
    parser.feed(resp.text)
    parser.close()
    return parser


def parse_forms(resp: httpx.Response) -> list[Form]:
    return _parse(resp).forms


def auto_submit_form(resp: httpx.Response) -> Form | None:
    """The form a script on the page submits at once, or None.

    A page auto-submits when a script calls ``.submit()``; the form is the one whose id
    or name the script mentions, else the first.
    """
    parsed = _parse(resp)
    scripts = [s for s in parsed.scripts if ".submit()" in s]
    if not scripts or not parsed.forms:
        return None
    for form in parsed.forms:
        for ref in (form.id, form.name):
            if ref and any(ref in s for s in scripts):
                return form
    return parsed.forms[0]


class LTIBrowser:
    """A minimal browser: cookie jar, redirects, forms. See the module docstring."""

    def __init__(
        self,
        *,
        timeout: float = 30.0,
        max_redirects: int = 20,
        fetch_metadata: bool = True,
        **client_kwargs,
    ):
        # As a modern browser in a top-level window: Sec-Fetch-Dest: document (Fetch
        # Metadata). fetch_metadata=False: a browser that sends none (Safari < 16.4).
        headers = {"Sec-Fetch-Dest": "document"} if fetch_metadata else {}
        headers.update(client_kwargs.pop("headers", None) or {})
        self.client = httpx.AsyncClient(
            follow_redirects=False, timeout=timeout, headers=headers, **client_kwargs
        )
        self.max_redirects = max_redirects
        #: Every response received, in order, redirects included.
        self.history: list[httpx.Response] = []

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.aclose()

    async def aclose(self):
        await self.client.aclose()

    @property
    def cookies(self) -> httpx.Cookies:
        return self.client.cookies

    async def request(
        self, method: str, url: str, *, data=None, stop_before: str | None = None
    ) -> httpx.Response:
        """Send a request and follow redirects as a browser does.

        A redirect to a URL that starts with ``stop_before`` is not followed: the
        redirect response itself is returned (its Location says where it pointed).
        """
        for _ in range(self.max_redirects + 1):
            resp = await self.client.request(method, url, data=data)
            self.history.append(resp)
            if resp.status_code not in REDIRECT_STATUSES or "location" not in resp.headers:
                return resp
            url = urljoin(str(resp.url), resp.headers["location"])
            if stop_before and url.startswith(stop_before):
                return resp
            # 303 always, and 301/302 after a POST in practice, become a GET (RFC 9110 15.4).
            if resp.status_code == 303 or (resp.status_code in (301, 302) and method != "GET"):
                method, data = "GET", None
        raise RuntimeError(f"More than {self.max_redirects} redirects, last to {url}")

    async def get(self, url: str, *, stop_before: str | None = None) -> httpx.Response:
        return await self.request("GET", url, stop_before=stop_before)

    async def post(self, url: str, data: dict, *, stop_before: str | None = None) -> httpx.Response:
        return await self.request("POST", url, data=data, stop_before=stop_before)

    forms = staticmethod(parse_forms)

    async def submit_form(
        self,
        resp: httpx.Response,
        fields: dict[str, str] | None = None,
        form_index: int = 0,
        *,
        form: Form | None = None,
        stop_before: str | None = None,
    ) -> httpx.Response:
        """Submit a form of the page ``resp`` (or ``form``), with ``fields`` changed or added.

        A field set to None is left out of the submission.
        """
        if form is None:
            forms = parse_forms(resp)
            if form_index >= len(forms):
                raise LookupError(f"{resp.url} has {len(forms)} form(s), no form #{form_index}")
            form = forms[form_index]
        data = {**form.fields, **(fields or {})}
        data = {k: v for k, v in data.items() if v is not None}
        if form.method == "GET":
            sep = "&" if "?" in form.action else "?"
            return await self.get(form.action + sep + urlencode(data), stop_before=stop_before)
        return await self.post(form.action, data, stop_before=stop_before)

    async def follow_auto_submits(
        self, resp: httpx.Response, *, stop_before: str | None = None, max_steps: int = 10
    ) -> httpx.Response:
        """Submit auto-submitting forms until a page has none (or one aimed at ``stop_before``)."""
        for _ in range(max_steps):
            form = auto_submit_form(resp)
            if form is None or (stop_before and form.action.startswith(stop_before)):
                return resp
            resp = await self.submit_form(resp, form=form, stop_before=stop_before)
        raise RuntimeError(f"More than {max_steps} auto-submitting pages, last {resp.url}")

    async def launch(
        self, platform_url: str, user_sub: str, link_id: str, *, stop_before: str | None = None
    ) -> httpx.Response:
        """Launch ``link_id`` as ``user_sub`` from the platform's launch page.

        Clicks the Launch button, then follows the login initiation, the platform's
        /auth and the id_token post to the tool, and the tool's redirects. Returns the
        final response, or the last one before a URL starting with ``stop_before``: a
        redirect response, or the page whose auto-submitting form points there (e.g.
        ``stop_before=<hub>/hub/lti13/oauth_callback`` returns the id_token page).
        """
        page = await self.get(platform_url.rstrip("/") + "/")
        for form in parse_forms(page):
            if form.fields.get("user") == user_sub and form.fields.get("link") == link_id:
                break
        else:
            raise LookupError(
                f"The launch page {page.url} has no Launch button for user {user_sub!r} "
                f"and link {link_id!r} (status {page.status_code})."
            )
        resp = await self.submit_form(page, form=form, stop_before=stop_before)
        return await self.follow_auto_submits(resp, stop_before=stop_before)
