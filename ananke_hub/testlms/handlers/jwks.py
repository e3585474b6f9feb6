"""The platform's public keyset (Security Framework 1.0 section 6.3,
https://www.imsglobal.org/spec/security/v1p0/#h_key-set-url): tools verify id_tokens
with it, selecting the key by the `kid` header.
"""

import asyncio

from .base import PlatformHandler


class JWKSHandler(PlatformHandler):
    async def get(self):
        if self.platform.jwks_delay > 0:
            # A slow LMS, for the benchmark that checks the hub keeps serving meanwhile.
            # asyncio.sleep: the platform itself stays responsive.
            await asyncio.sleep(self.platform.jwks_delay)
        self.set_header("Content-Type", "application/json")
        self.finish(self.keys.jwks())


ROUTES = [(r"/jwks", JWKSHandler)]
