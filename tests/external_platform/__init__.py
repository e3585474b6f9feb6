"""An LTI 1.3 platform the project did not write: PyPI ``lti1p3platform`` (0.1.8) in tornado.

It stands in for our built-in platform (same flags, same routes), so that
``DemoStack(root, platform_module="external_platform")`` proves the hub's launch against
someone else's reading of the specs. Run it with ``tests/`` on PYTHONPATH::

    PYTHONPATH=tests python -m external_platform --port=9000 --state-dir=/tmp/ext \\
        --tool-login-url=http://127.0.0.1:8000/hub/lti13/oauth_login \\
        --tool-redirect-uri=http://127.0.0.1:8000/hub/lti13/oauth_callback \\
        --tool-target-link-uri=http://127.0.0.1:8000/hub/

Routes: ``GET /`` launch page, ``POST /launch`` login initiation, ``GET|POST /auth`` OIDC
authorization endpoint, ``GET /jwks`` public keyset. The library does the LTI work
(login initiation parameters, checking the authentication request, the launch message,
signing the id_token, the keyset); our code is the HTTP glue and the demo people.

What the library offers (read in its 0.1.8 source):

- OIDC third-party login: ``OIDCLoginAbstract.initiate_login`` builds the initiation
  parameters (iss, target_link_uri, login_hint, lti_message_hint, client_id,
  lti_deployment_id) as a GET redirect URL.
- Authentication request and id_token: ``MessageLaunchAbstract.lti_launch`` checks the
  request, builds the launch message (resource link, context, roles, custom, launch
  presentation) and signs it RS256 with the registration's key (kid = RFC 7638 thumbprint,
  computed by jwcrypto: the same kid as ``ananke_hub.keys``).
- LTI Advantage: ``set_ags`` / ``set_nrps`` / ``set_dl`` add the AGS endpoint, NRPS and
  deep linking claims; ``LTI1P3PlatformConfAbstract.get_access_token`` is an OAuth 2
  client-credentials token endpoint (JWT client assertion); ``service_connector`` has
  framework-neutral AGS (line items, scores, results) and NRPS (memberships) handlers
  over abstract storage methods. Enough for later grade and roster tests, with the
  quirks below.

Quirks, and what we do about them:

1. Login initiation is only a GET redirect URL (``get_redirect(url)``). We split it and
   form-POST the same parameters, as Moodle does (Security Framework 1.0 section 5.1.1
   allows either).
2. ``validate_preflight_response`` only checks that nonce, state and redirect_uri are
   present and client_id is the registered one. It posts the id_token to whatever
   redirect_uri the request names, and it does not check scope, response_type,
   response_mode, prompt or login_hint. Its README leaves "is the user logged in, does
   login_hint match, what does lti_message_hint name" to the platform's
   ``prepare_launch`` hook; we do those there and also refuse a redirect_uri other than
   the registered one (Security Framework 1.0 section 5.1.1.2: it MUST be pre-registered).
   The fixed parameters stay unchecked, as the library leaves them; our own platform's
   tests check that the hub sends them right. ``state`` is required (the spec only
   recommends it); the hub always sends one.
3. A refused request raises a bare ``PreflightRequestValidationException`` that does not
   say which parameter was wrong; our error page lists what the library requires.
4. Its ``framework/templates/launch.html`` is rendered by a Jinja environment without
   autoescaping (the tool-supplied ``state`` would go into the HTML unescaped), and the
   module imports the deprecated ``pkg_resources``. We render our own auto-submitting
   form with tornado's escaping.
5. A registration holds one key pair as PEM strings, so the keyset lists only that key:
   no overlap of old and new keys during a rotation.
6. id_tokens live 300 s by default (Moodle: 60 s). We keep the library's default.
7. Identity claims are sub, name, email and preferred_username only (no given_name /
   family_name); the Moodle-like ``username`` custom parameter we add as custom claim.
8. For later grade tests: the tool keyset for the token endpoint is fetched with a
   blocking ``requests.get`` (run it in an executor inside tornado); the client
   assertion is decoded without checking aud, iss, sub or jti; a token with ANY one of
   the AGS scopes passes every AGS handler (``validate_token`` uses ``any``); scores
   are not validated (a TODO in the source); paging ``page + 1`` adds an int to the
   query string value; and ``get_lti_ags_launch_claim`` removes scopes from the list it
   iterates when only ``lineitem`` is given (``result.readonly`` survives).
"""
