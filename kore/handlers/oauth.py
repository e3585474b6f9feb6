"""The end of the hub's OAuth login: ``<prefix>oauth_callback``.

The hub redirects the browser here with a code; JupyterHub's own callback handler
exchanges it for a token and stores it in Kore's cookie. Our subclass only adds
Kore's non-blocking user lookup and its error page.
"""

from jupyterhub.services.auth import HubOAuthCallbackHandler

from .base import PageHandler


class OAuthCallbackHandler(HubOAuthCallbackHandler, PageHandler):
    pass


handlers = [("oauth_callback", OAuthCallbackHandler)]
