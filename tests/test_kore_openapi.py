"""The one check of Kore's request bodies: against its OpenAPI document (``kore.openapi``).

Unit tests of :class:`kore.openapi.RequestBodies` (no Kore running): hostile bodies get
a message that names the field and what it takes, the document's schemas agree with the
domain classes they describe, and the document ships as JSON without PyYAML.
Through a running Kore the same refusals are checked by test_kore_settings,
test_kore_grades_api, test_kore_security and the fuzz test.
"""

import json
import subprocess
import sys
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from ananke_hub.courses.settings import CourseSettings
from kore.manage.names import is_assignment_id, is_notebook_name
from kore.openapi import DOCUMENT_FILE, BodyError, document, request_bodies
from kore.sync.grades import GradeSyncOptions, Missing

REPO = Path(__file__).resolve().parents[1]
COURSE = "c-0123456789abcdef"
BACKUP = "b-" + "0" * 32
SETTINGS = f"api/courses/{COURSE}/settings"
GRADES = f"api/courses/{COURSE}/grades/sync"
ROSTER = f"api/courses/{COURSE}/roster/sync"
BACKUPS = f"api/courses/{COURSE}/backups"
RESET = f"api/courses/{COURSE}/reset"
IMPORT = f"api/courses/{COURSE}/import"
FROM = {"from": {"course_id": COURSE}}


def parse(path: str, method: str, body):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return request_bodies().parse(path, method, raw)


def refusal(path: str, method: str, body) -> str:
    with pytest.raises(BodyError) as info:
        parse(path, method, body)
    return str(info.value)


@pytest.mark.parametrize(
    ("path", "method", "body", "words"),
    [
        # wrong types, named by field, with what is expected and what came
        (SETTINGS, "PATCH", {"execute_timeout": "30"}, '"execute_timeout" must be a whole number'),
        (SETTINGS, "PATCH", {"execute_timeout": True}, "not true"),
        (SETTINGS, "PATCH", {"execute_timeout": 0}, "between 1 and 3600, not 0"),
        (SETTINGS, "PATCH", {"reexecute_for_feedback": "yes"}, "must be true or false"),
        (GRADES, "POST", {"missing": "all"}, '"missing" must be one of "zero", "not_submitted"'),
        (GRADES, "POST", {"missing": None}, '"missing" must be a string, not null'),
        (RESET, "POST", {"confirm": 1}, '"confirm" must be a string'),
        # extra fields
        (SETTINGS, "PATCH", {"hide": True}, 'Unknown field(s) "hide": use "execute_timeout"'),
        (GRADES, "POST", {"force": True}, 'Unknown field(s) "force": use "missing", "resend"'),
        (RESET, "POST", {"confirm": COURSE, "now": True}, 'Unknown field(s) "now"'),
        (ROSTER, "POST", {"all": True}, "takes no options: send no body, or {}"),
        (BACKUPS, "POST", {"all": True}, "takes no options"),
        (f"api/backups/{BACKUP}", "DELETE", {"x": 1}, "takes no options"),
        # missing fields and bodies that are no object
        (RESET, "POST", {}, 'Missing field "confirm"'),
        (RESET, "POST", b"", 'The body is empty, not valid JSON. Send e.g. {"confirm": '),
        (SETTINGS, "PATCH", [], "Send a JSON object, e.g. {"),
        (GRADES, "POST", "zero", "Send a JSON object, e.g. {"),
        (ROSTER, "POST", [], "Send a JSON object"),
        # not JSON at all
        (SETTINGS, "PATCH", b"execute_timeout=30", "not valid JSON"),
        (GRADES, "POST", b"{not json", "not valid JSON"),
        (GRADES, "POST", b'{"missing": "\xff"}', "not valid JSON"),
        (GRADES, "POST", b"[" * 5000 + b"]" * 5000, "not valid JSON"),
        (SETTINGS, "PATCH", b'{"execute_timeout": ' + b"9" * 5000 + b"}", "not valid JSON"),
        # imports: ids, names, and what each kind of import needs
        (IMPORT, "POST", {"from": {"x": COURSE}, "what": "course"}, '"from" must be {"course_id"'),
        (IMPORT, "POST", {"from": {"course_id": "c-1"}, "what": "course"}, "must be a course id"),
        (IMPORT, "POST", {"from": {"backup_id": 7}, "what": "course"}, '"from.backup_id" must'),
        (IMPORT, "POST", {**FROM, "what": "everything"}, '"what" must be one of "course"'),
        (IMPORT, "POST", {**FROM, "what": "assignment"}, 'Missing field "assignment"'),
        (IMPORT, "POST", {**FROM, "what": "notebook", "assignment": "hw1"}, '"notebook"'),
        (
            IMPORT,
            "POST",
            {**FROM, "what": "course", "as_assignment": "hw2"},
            "Importing a course takes no",
        ),
        (
            IMPORT,
            "POST",
            {**FROM, "what": "assignment", "assignment": "hw1", "notebook": "a.ipynb"},
            'Importing an assignment takes no "notebook"',
        ),
        (IMPORT, "POST", {**FROM, "what": "assignment", "assignment": "../x"}, "assignment name"),
        (IMPORT, "POST", {**FROM, "what": "assignment", "assignment": "hw1."}, "assignment name"),
        (IMPORT, "POST", {**FROM, "what": "course", "overwrite": "yes"}, "true or false"),
    ],
)
def test_hostile_bodies_are_refused_with_the_field_and_what_it_takes(path, method, body, words):
    assert words in refusal(path, method, body)


NOTEBOOK_IMPORT = {
    "from": {"backup_id": BACKUP},
    "what": "notebook",
    "assignment": "hw1",
    "notebook": "problem 1.ipynb",
    "as_assignment": "hw2",
    "overwrite": True,
}


@pytest.mark.parametrize(
    ("path", "method", "body", "expected"),
    [
        (GRADES, "POST", b"", None),
        (GRADES, "POST", b"null", None),
        (GRADES, "POST", {"missing": "not_submitted"}, {"missing": "not_submitted"}),
        (ROSTER, "POST", {}, {}),
        (f"api/backups/{BACKUP}", "DELETE", b"", None),  # no body in the document
        (f"api/backups/{BACKUP}", "DELETE", {}, None),  # what scripts send for "none"
        (SETTINGS, "PATCH", {"sandbox_tasks": 16}, {"sandbox_tasks": 16}),
        (IMPORT, "POST", NOTEBOOK_IMPORT, NOTEBOOK_IMPORT),
    ],
)
def test_valid_bodies_pass_unchanged(path, method, body, expected):
    assert parse(path, method, body) == expected


def test_a_refusal_names_a_few_unknown_fields_shortened():
    body = {f"k{i}-" + "x" * 500: 1 for i in range(200)}
    message = refusal(SETTINGS, "PATCH", body)
    assert message.startswith('Unknown field(s) "k0-xxx') and ", ...: use " in message
    assert len(message) < 1000


@pytest.mark.parametrize("name", ["hw1\n", "hw1\n\n", "x" * 65, ".hidden", "a/b", "hw1 "])
def test_names_that_are_no_assignment_ids_are_refused_as_the_service_would(name):
    # JSON Schema's "$" is ECMA 262's (the very end); Python's also matches before a
    # final newline: "hw1\n" passed a plain re.search of the document's pattern.
    assert not is_assignment_id(name)
    body = {**FROM, "what": "assignment", "assignment": name}
    assert "assignment name" in refusal(IMPORT, "POST", body)


@pytest.mark.parametrize("name", ["a.ipynb\n", "a.py", "../a.ipynb", " a.ipynb"])
def test_notebook_names_follow_the_services_rule(name):
    assert not is_notebook_name(name)
    body = {**FROM, "what": "notebook", "assignment": "hw1", "notebook": name}
    assert "notebook name" in refusal(IMPORT, "POST", body)


def test_every_changing_operation_has_its_body_described_or_takes_none():
    for path, item in document()["paths"].items():
        for method in ("post", "patch", "put", "delete"):
            if method not in item:
                continue
            route = path.lstrip("/").replace("{course_id}", COURSE).replace("{backup_id}", BACKUP)
            operation = request_bodies().operation(route, method)
            assert operation.name == f"{method.upper()} {path}"
            if operation.takes_body:
                assert operation.validator is not None, operation.name
                assert operation.example != "{}" or not operation.required, operation.name


def test_the_settings_schema_is_course_settings():
    """The document's SettingsChange describes CourseSettings' fields, types and ranges."""
    schema = document()["components"]["schemas"]["SettingsChange"]
    assert schema["additionalProperties"] is False
    expected = {}
    for f in fields(CourseSettings):
        if f.type is bool:
            expected[f.name] = {"type": "boolean"}
        else:
            expected[f.name] = {
                "type": "integer",
                "minimum": f.metadata["min"],
                "maximum": f.metadata["max"],
            }
    assert schema["properties"] == expected


def test_the_grade_sync_schema_is_grade_sync_options():
    schema = document()["components"]["schemas"]["GradeSyncOptions"]
    assert schema["properties"]["missing"]["enum"] == [m.value for m in Missing]
    assert set(schema["properties"]) == {f.name for f in fields(GradeSyncOptions)}
    defaults = GradeSyncOptions.from_json(None)
    assert GradeSyncOptions.from_json(parse(GRADES, "POST", {})) == defaults
    chosen = parse(GRADES, "POST", {"missing": "not_submitted", "resend": True})
    assert GradeSyncOptions.from_json(chosen) == GradeSyncOptions(Missing.NOT_SUBMITTED, True)


def test_the_document_ships_as_json_and_pyyaml_is_no_runtime_dependency():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    runtime = " ".join(project["project"]["dependencies"]).lower()
    assert "pyyaml" not in runtime
    assert DOCUMENT_FILE.name == "openapi.json" and not (REPO / "kore" / "openapi.yaml").exists()
    package_data = project["tool"]["setuptools"]["package-data"]["kore"]
    assert "openapi.json" in package_data
    # Kore's process never imports yaml (a fresh interpreter: nothing else loaded it).
    code = (
        "import sys, kore.app, kore.openapi; kore.openapi.request_bodies(); "
        "print('yaml' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
