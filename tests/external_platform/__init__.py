"""An LTI 1.3 platform the project did not write: PyPI ``lti1p3platform`` (0.1.8) in tornado.

It stands in for our built-in platform (same flags, same routes), so that
``DemoStack(root, platform_module="external_platform")`` proves the hub's launch against
someone else's reading of the specs. Run it with ``tests/`` on PYTHONPATH::

    PYTHONPATH=tests python -m external_platform --port=9000 --state-dir=/tmp/ext \\
        --tool-login-url=http://127.0.0.1:8000/hub/lti13/oauth_login \\
        --tool-redirect-uri=http://127.0.0.1:8000/hub/lti13/oauth_callback \\
        --tool-target-link-uri=http://127.0.0.1:8000/hub/

Routes: ``GET /`` launch page, ``POST /launch`` login initiation, ``GET|POST /auth`` OIDC
authorization endpoint, ``GET /jwks`` public keyset; LTI Advantage (the built-in
platform's layout): ``POST /token``, ``/ags/<context>/lineitems`` (GET list, POST
create), ``.../lineitems/<key>/lineitem`` (GET, PUT, DELETE; the activity's own line item
is advertised with Moodle's ``?type_id=1``), ``.../lineitem/scores`` (POST),
``.../lineitem/results`` (GET), ``/nrps/<context>/memberships`` (GET, paged by Link
header). With ``--test-api`` also ``GET /_test/scores.json`` and ``POST /_test/reset``
(testapi.py). Flags besides the built-in platform's: ``--ags-scopes`` (``score`` alone:
Moodle's grade sync only), ``--nrps-page-size``.

The library does the LTI work (login initiation parameters, checking the authentication
request, the launch message with its AGS and NRPS claims, signing the id_token, the
keyset, issuing access tokens, checking them at the services, routing AGS and NRPS
requests to storage, next-page links, answer media types); our code is the HTTP glue
(service_handlers.py), in-memory storage for its abstract methods (services.py,
store.py) and the demo people (people.py: a learner, an instructor and 15 learners who
never launched, one of them Inactive).

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
  over abstract storage methods. Served here (items 8-10 below for what they lack).

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
8. Token endpoint (``get_access_token``): the tool's keyset is fetched with a blocking
   ``requests.get`` and the decoded JWT is kept in an attribute of the shared conf object;
   we run it on one worker thread. It checks the grant type, the assertion's signature
   (by kid and alg in the tool's keyset) and expiry, nothing else: not aud (decoded with
   ``verify_aud=False``), iss, sub, nor the assertion type's value; no jti replay guard;
   the keyset is cached at the first request and never fetched again (a tool's key
   rotation is refused until restart); every supported scope asked for is granted (no
   per-registration policy, an empty grant is a token too). Refusals are exceptions
   (``MissingRequiredClaim``, ``UnsupportedGrantType``, ``LtiException``, PyJWT's) that we
   map to RFC 6749 error answers (400 invalid_request / unsupported_grant_type, 401
   invalid_client). Tokens: RS256 JWTs, 3600 s, ``token_type`` "bearer".
9. Services (``service_connector``): a token with ANY one of the service's scopes passes
   every handler (``validate_token`` uses ``any``): a score-only token creates line items.
   A forged or expired bearer token raises instead of answering; we answer 401. Request
   bodies are not checked: neither Content-Type nor the score (its ``# TODO: validate
   score``) nor the line item; a body that is not JSON would reach the storage as None,
   so we answer 400 first. Every query parameter reaches the storage methods as a keyword
   argument, as text (they take ``**unknown`` and convert page/limit). Paging computes
   ``page + 1`` on that text: the next link of page 2 and later is a TypeError (500), in
   the line item list, results and NRPS alike; two pages work. NRPS pages only when the
   tool sends ``limit``: we add the platform's page size when it does not. The library's
   page object (``content``/``next``) becomes a JSON array and a ``Link: rel="next"``
   header here; NRPS keeps its ``next`` in the body as well. No NRPS ``since``
   (differences) support in our storage.
10. Launch claim: ``get_lti_ags_launch_claim`` removes scopes from the list it iterates
   when only a line item URL is given; with the two switches our ``--ags-scopes=score``
   sets, that leaves exactly ``[score]`` (Moodle's grade sync only), but with all
   services on, ``result.readonly`` survives. Without a line items URL the library
   cannot advertise line item management at all; with one it always advertises
   lineitem or lineitem.readonly.

``tests/test_external_platform_ags.py`` runs Kore's grade and roster sync against this
platform and marks each of these shortcomings that a test meets as a strict xfail.
"""
