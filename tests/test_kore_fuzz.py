"""Kore's API against its own OpenAPI document (``kore/openapi.json``).

- The document and the routes agree: every JSON route of :func:`kore.handlers.routes`
  (and each method it answers) is in the document, and every operation of the document
  is served; pages (HTML) are not in it.
- Schemathesis generates requests from the document, valid ones and malformed ones
  (wrong types, patterns, missing fields, extra fields), and sends them to a running
  Kore with the token of an instructor (of courses A and A2 of test_kore_security's
  school): no answer is a 5xx, and every answer has a status, a content type and a body
  the document describes. Ids that have the right form are replaced by real ones (course
  A, a backup of A, course A2 as an import source) so that requests reach past the
  access checks; reset and delete are then refused for their confirmation, and nothing
  else the fuzzer can do leaves course A.

Example counts are small so that the module runs in about a minute.
"""

import json
import re
from pathlib import Path

import httpx
import jsonschema
import pytest
import schemathesis
from fake_hub import FakeHub
from hypothesis import HealthCheck, Phase, given, settings
from kore_operations import follow
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from test_kore import PREFIX
from test_kore_security import build_school
from test_kore_settings import HubStartedKore
from tornado import web

from ananke_hub.courses.registry import CourseRegistry
from kore.handlers import routes
from kore.handlers.base import APIHandler, PublicAPIHandler

pytestmark = pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")

OPENAPI = Path(__file__).resolve().parent.parent / "kore" / "openapi.json"
HTTP_METHODS = ("get", "post", "put", "patch", "delete")
#: Generated examples per operation and generation mode: enough to find the malformed
#: inputs each route must refuse, few enough for the 2-core CI machine.
MAX_EXAMPLES = 25
#: The document as schemathesis reads it; generated Authorization headers are left out
#: (the token is always the instructor's: test_kore_security walks the token checks).
SCHEMA = schemathesis.openapi.from_dict(json.loads(OPENAPI.read_text()))
SCHEMA.config.generation.update(with_security_parameters=False)
COURSE_ID = re.compile(r"^c-[0-9a-f]{16}$")
BACKUP_ID = re.compile(r"^b-[0-9a-f]{32}$")


# --- the document and the routes ------------------------------------------------------------


def document() -> dict:
    return json.loads(OPENAPI.read_text())


def as_route(openapi_path: str) -> str:
    """``/api/courses/{course_id}/settings`` -> ``api/courses/([^/]+)/settings``."""
    parts = re.split(r"\{[^}]+\}", openapi_path.lstrip("/"))
    return "([^/]+)".join(re.escape(part) for part in parts)


def json_routes() -> set[tuple[str, str]]:
    found = set()
    prefix = re.escape(PREFIX)
    for pattern, handler, *_ in routes(PREFIX):
        if not issubclass(handler, APIHandler | PublicAPIHandler):
            continue  # pages, redirects, static files: not JSON
        for method in HTTP_METHODS:
            if getattr(handler, method) is not getattr(web.RequestHandler, method):
                found.add((pattern.removeprefix(prefix), method))
    return found


def documented() -> set[tuple[str, str]]:
    return {
        (as_route(path), method)
        for path, item in document()["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def test_every_json_route_is_documented_and_every_operation_served():
    served, described = json_routes(), documented()
    assert served - described == set(), "JSON routes missing in kore/openapi.json"
    assert described - served == set(), "operations in kore/openapi.json that Kore does not serve"


def test_the_document_is_valid_openapi_3_1_and_every_reference_resolves():
    from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

    doc = document()
    assert doc["openapi"].startswith("3.1")
    assert [str(error) for error in OPENAPI_31_VALIDATOR.iter_errors(doc)] == []
    for section, name in set(re.findall(r"#/components/(\w+)/(\w+)", OPENAPI.read_text())):
        assert name in doc["components"][section], f"#/components/{section}/{name}"
    for schema in doc["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)
    # schemathesis resolves every operation (an Err has no .ok())
    unusable = [str(r.err()) for r in SCHEMA.get_all_operations() if not hasattr(r, "ok")]
    assert unusable == []


def test_every_operation_documents_its_refusals():
    doc = document()
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            codes = set(operation["responses"])
            where = f"{method.upper()} {path}"
            if operation.get("security") != []:
                assert "403" in codes, f"{where}: no 403 (not logged in, not allowed)"
            if "{" in path or operation.get("parameters"):
                assert "400" in codes, f"{where}: no 400 (malformed id or query)"
            if method in ("post", "patch", "delete"):
                assert {"400", "413"} <= codes, f"{where}: no 400/413 for bodies"
            for code, response in operation["responses"].items():
                if code.startswith(("4", "5")):
                    assert response["$ref"].startswith("#/components/responses/"), where


def test_kore_serves_the_document_with_its_prefix(kore):
    r = httpx.get(kore.url("api/openapi.json"))  # no login: it is public
    assert r.status_code == 200, r.text
    served = r.json()
    assert served["servers"] == [{"url": PREFIX.rstrip("/")}]
    assert {k: v for k, v in served.items() if k != "servers"} == {
        k: v for k, v in document().items() if k != "servers"
    }


# --- a running Kore -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hub():
    with FakeHub() as fake:
        yield fake


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def school(tmp, hub):
    registry = CourseRegistry(url=f"sqlite:///{tmp / 'courses.sqlite'}")
    registry.engine  # noqa: B018 - the schema exists before Kore opens the file
    yield build_school(tmp, registry, hub)
    registry.close()


@pytest.fixture(scope="module")
def kore(tmp, hub, school):
    k = HubStartedKore(tmp / "kore", hub.api_url, school.layout)
    url = f"sqlite:///{tmp / 'courses.sqlite'}"
    (k.config_dir / "55_test_registry.py").write_text(
        f"c = get_config()  # noqa\nc.CourseRegistry.url = {url!r}\n"
    )
    k.start()
    headers = {"Authorization": "token t-ann"}
    r = httpx.post(k.url(f"api/courses/{school.courses['A']}/backups"), headers=headers)
    op = follow(lambda path: httpx.get(k.base + path, headers=headers), r)
    assert op["state"] == "finished", op
    school.backup = op["backup_id"]
    yield k
    k.stop()


def real_ids(case, school) -> None:
    """Well-formed ids become real ones; malformed ones stay (they must be refused)."""
    params = case.path_parameters or {}
    if COURSE_ID.match(str(params.get("course_id", ""))):
        params["course_id"] = school.courses["A"]
    if BACKUP_ID.match(str(params.get("backup_id", ""))):
        params["backup_id"] = school.backup
    body = case.body if isinstance(case.body, dict) else None
    source = body.get("from") if body else None
    if isinstance(source, dict):
        if COURSE_ID.match(str(source.get("course_id", ""))):
            source["course_id"] = school.courses["A2"]
        if BACKUP_ID.match(str(source.get("backup_id", ""))):
            source["backup_id"] = school.backup


def fuzz_params() -> list:
    """(operation, mode): negative requests only where there is input to spoil."""
    params = []
    for result in SCHEMA.get_all_operations():
        operation = result.ok()
        modes = [GenerationMode.POSITIVE]
        item = document()["paths"][operation.path]
        if item.get("parameters") or {"parameters", "requestBody"} & set(
            item[operation.method.lower()]
        ):
            modes.append(GenerationMode.NEGATIVE)
        params += [
            pytest.param(operation.label, mode, id=f"{operation.label}-{mode.value}")
            for mode in modes
        ]
    return sorted(params, key=lambda p: p.id)


@pytest.mark.parametrize(("label", "mode"), fuzz_params())
def test_generated_requests_get_documented_answers_and_never_a_5xx(kore, school, label, mode):
    method, path = label.split(" ", 1)
    operation = SCHEMA[path][method]

    # Derandomized: the same requests on every run, so a failure is reproducible in CI.
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def send(case):
        real_ids(case, school)
        case.call_and_validate(
            base_url=kore.base + PREFIX.rstrip("/"),
            headers={"Authorization": "token t-ann"},
            checks=[
                not_a_server_error,
                status_code_conformance,
                content_type_conformance,
                response_schema_conformance,
            ],
        )

    send()


def test_course_a_survived_the_fuzzing(kore, school):
    """Last: reset and delete were refused (wrong confirmation); nothing was a 5xx."""
    r = httpx.get(kore.url("api/courses"), headers={"Authorization": "token t-ann"})
    assert school.courses["A"] in {c["course_id"] for c in r.json()}
    assert (school.home("A") / "source" / "hw1" / "p1.ipynb").exists()
    assert not re.search(r"\] 5\d\d ", kore.log), kore.log
    assert "Traceback" not in kore.log
