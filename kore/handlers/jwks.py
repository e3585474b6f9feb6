"""The tool's public keyset (JWKS): ``<prefix>jwks``.

The LMS is configured with this URL as the tool's "Public keyset" and fetches it to
verify what Kore signs (client assertions for LTI Advantage services, IMS Security
Framework 1.0 section 6.3). It is public: the LMS has no hub login.
"""

from tornado import web
from tornado.ioloop import IOLoop

from ananke_hub.keys import KeyFileError

from .base import PublicAPIHandler


class JWKSHandler(PublicAPIHandler):
    """Publishes every current key, the signing one last."""

    async def get(self):
        store = self.settings["key_store"]
        try:
            # KeyStore re-reads the directory when its listing changed, so a key made
            # by `ananke keys rotate` is published without restarting Kore. Reading
            # and parsing the PEM files is disk work: keep it off the event loop.
            jwks = await IOLoop.current().run_in_executor(None, store.jwks)
        except KeyFileError as exc:
            self.log.error("jwks: cannot publish the tool's keys: %s", exc)
            # The file name is for the admin's log, not for the public.
            raise web.HTTPError(
                500, "The tool's keys cannot be read; the hub admin finds why in Kore's log."
            ) from exc
        self.set_header("Cache-Control", f"public, max-age={self.settings['jwks_max_age']}")
        self.write_json(jwks)


handlers = [("jwks", JWKSHandler)]
