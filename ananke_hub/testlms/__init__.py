"""A built-in LTI 1.3 platform: an LMS stand-in for demos and tests.

Runs in its own process (``python -m ananke_hub.testlms``), started by ``ananke demo``
and the tests (:mod:`.demo`'s ``DemoStack`` starts it with the hub and Kore); never part
of a production hub. May import tornado, PyJWT and the hub package's key store; the hub
and Kore never import it.

It follows LTI 1.3 core (https://www.imsglobal.org/spec/lti/v1p3/) and the Security
Framework 1.0 OIDC third-party-initiated login, so that what works against it works
against Moodle. Run it with ``python -m ananke_hub.testlms --help-all``.

Routes (relative to the issuer): ``GET /`` launch page, ``POST /launch`` login
initiation, ``GET|POST /auth`` OIDC authorization endpoint, ``GET /jwks`` public keyset.
LTI Advantage: ``POST /token`` (Security Framework 1.0 section 4.1), AGS 2.0 under
``/ags/<context>/lineitems``, NRPS 2.0 at ``/nrps/<context>/memberships``, and the
gradebook for people (``/gradebook``, ``/gradebook.json``). With ``--test-api``:
``/_test/...`` (see handlers/testapi.py).
"""
