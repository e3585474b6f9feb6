"""Kore's OpenAPI document (``kore/openapi.json``) and the one check of request bodies.

The document describes every JSON route of Kore (``tests/test_kore_fuzz.py`` keeps it
and the routes equal). Its request body schemas are the only description of what a
route accepts: :meth:`RequestBodies.parse` finds the operation of a request's path and
method in the document and validates the body against the operation's schema with
``jsonschema`` (JSON Schema 2020-12, the dialect of OpenAPI 3.1). Handlers call it
through :meth:`kore.handlers.base.ChangeRequestMixin.json_body`; neither they nor the
services behind them check a body's shape again. What stays in the services are facts
a schema cannot know (a confirmation naming the course, a name that must not be a
path outside the course).

A refusal is a :class:`BodyError` whose message names the field and what it takes,
with the operation's example where the body is no JSON object at all.
"""

import json
import re
from functools import cache
from pathlib import Path

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

DOCUMENT_FILE = Path(__file__).resolve().parent / "openapi.json"
#: The document's URI inside the validators' registry: ``$ref``s resolve against it.
_URI = "urn:ananke:kore:openapi"
_METHODS = ("get", "post", "put", "patch", "delete")


def _pattern(validator, pattern, instance, schema):
    """JSON Schema's ``pattern`` with ECMA 262's ``$``: at the very end of the string.

    Python's ``$`` also matches before a final newline, so ``"hw1\\n"`` would pass
    ``^[a-z0-9]+$``; our patterns describe names that become file names.
    """
    if not validator.is_type(instance, "string"):
        return
    strict = re.sub(r"(?<!\\)\$$", r"\\Z", pattern)
    if not re.search(strict, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


#: The 2020-12 validator (OpenAPI 3.1's dialect) with the strict pattern above.
Validator = validators.extend(Draft202012Validator, {"pattern": _pattern})


class BodyError(ValueError):
    """A request body the document refuses; the message says what is wrong and what to do."""


@cache
def document() -> dict:
    """The document as shipped (read once; callers must not change it)."""
    return json.loads(DOCUMENT_FILE.read_text(encoding="utf-8"))


def _pointer(*parts: str) -> str:
    # JSON Pointer (RFC 6901): "~" and "/" inside a part are escaped.
    return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _path_regex(template: str) -> re.Pattern:
    """``/api/courses/{course_id}/settings`` -> a regex matching ``api/courses/x/settings``.

    The same form as Kore's tornado routes (one ``[^/]+`` per parameter), so a request
    finds the operation of the route that serves it.
    """
    parts = re.split(r"\{[^}]+\}", template.lstrip("/"))
    return re.compile("[^/]+".join(re.escape(part) for part in parts))


class Operation:
    """One operation's request body: required or not, its schema, an example."""

    def __init__(self, path: str, method: str, spec: dict, registry: Registry):
        self.name = f"{method.upper()} {path}"
        body = spec.get("requestBody")
        self.takes_body = body is not None
        self.required = bool(body and body.get("required"))
        media = (body or {}).get("content", {}).get("application/json", {})
        self.example = _example(media)
        self.validator = None
        if "schema" in media:
            # A reference into the document, so that the schema's own $refs resolve.
            where = _pointer("paths", path, method, "requestBody", "content")
            schema = {"$ref": f"{_URI}#{where}/application~1json/schema"}
            self.validator = Validator(schema, registry=registry)

    def parse(self, raw: bytes):
        """The body as JSON, valid for this operation; None for an allowed empty body."""
        if not raw.strip():
            if self.required:
                raise BodyError(f"The body is empty, not valid JSON. Send e.g. {self.example}.")
            return None
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            # ValueError: bad JSON, bad UTF-8, integers too long to convert.
            raise BodyError(
                f"The body is not valid JSON. Send e.g. {self.example}"
                + ("" if self.required else " or nothing")
                + "."
            ) from None
        if not self.takes_body:
            if data == {}:
                return None  # what scripts send for "no options"
            raise BodyError("This request takes no options: send no body, or {}.")
        if self.validator is not None:
            error = best_match(self.validator.iter_errors(data))
            if error is not None:
                raise BodyError(self.explain(error))
        return data

    def explain(self, error: ValidationError) -> str:
        """What is wrong, named by field, and what is expected."""
        schema = error.schema if isinstance(error.schema, dict) else {}
        path = list(error.absolute_path)
        field = _field(path)
        got = _shown(error.instance)
        kind = error.validator
        if kind == "additionalProperties" or (kind == "maxProperties" and schema.get(kind) == 0):
            allowed = sorted(schema.get("properties", {}))
            extra = sorted(str(k) for k in error.instance if k not in allowed)
            if not allowed:
                where = "This request" if not path else field
                return f"{where} takes no options: send no body, or {{}}."
            # A hostile body may hold thousands of keys: name a few, each shortened.
            names = ", ".join(_shown(k) for k in extra[:5]) + (", ..." if len(extra) > 5 else "")
            return (
                f"Unknown field(s) {names}{' in ' + field if path else ''}: "
                f"use {', '.join(json.dumps(k) for k in allowed)}."
            )
        if kind == "required":
            missing = next((k for k in error.validator_value if k not in error.instance), "?")
            where = f" in {field}" if path else ""
            why = schema.get("x-expected-required", "")
            return f"Missing field {json.dumps(missing)}{where}" + (f": {why}." if why else ".")
        if kind == "not" and "x-refusal" in schema:
            return schema["x-refusal"] + "."
        if kind == "type" and not path:
            return f"Send a JSON object, e.g. {self.example}, not {_kind_of(error.instance)}."
        if kind in ("oneOf", "anyOf") and "x-expected" not in schema:
            # Of the alternatives, those of the value's type say what is wrong with it.
            fitting = [e for e in error.context if not (e.validator == "type" and not e.path)]
            if fitting:
                return self.explain(best_match(fitting))
            if not path:
                return f"Send a JSON object, e.g. {self.example}, not {_kind_of(error.instance)}."
        expected = _expected(error, schema)
        return f"{field} must be {expected}, not {got}."


def _field(path: list) -> str:
    if not path:
        return "The body"
    return json.dumps(".".join(str(p) for p in path))


def _shown(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind_of(value) -> str:
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "true or false",
        type(None): "null",
    }.get(type(value), "a number")


def _expected(error: ValidationError, schema: dict) -> str:
    """What the schema that refused the value wants, in words."""
    kind, value = error.validator, error.validator_value
    if kind == "type":
        types = value if isinstance(value, list) else [value]
        words = {
            "boolean": "true or false",
            "integer": "a whole number",
            "number": "a number",
            "string": "a string",
            "object": "a JSON object",
            "array": "a list",
            "null": "null",
        }
        return " or ".join(words.get(t, t) for t in types)
    if kind == "enum":
        return "one of " + ", ".join(json.dumps(v) for v in value)
    if kind == "const":
        return json.dumps(value)
    if kind in ("minimum", "maximum"):
        low, high = schema.get("minimum"), schema.get("maximum")
        if low is not None and high is not None:
            return f"a whole number between {low} and {high}"
        return f"at least {low}" if kind == "minimum" else f"at most {high}"
    if schema.get("x-expected"):
        # Patterns and alternatives: the document says in words what they take.
        return schema["x-expected"]
    if kind == "pattern":
        return f"a string matching {value}"
    return f"valid ({error.message})"


def _example(media: dict) -> str:
    if "example" in media:
        return json.dumps(media["example"])
    for example in media.get("examples", {}).values():
        if "value" in example:
            return json.dumps(example["value"])
    return "{}"


class RequestBodies:
    """Every operation of the document, found by a request's path and method."""

    def __init__(self, doc: dict | None = None):
        doc = document() if doc is None else doc
        resource = Resource.from_contents(doc, default_specification=DRAFT202012)
        registry = Registry().with_resource(_URI, resource)
        self._operations = []
        for path, item in doc["paths"].items():
            regex = _path_regex(path)
            for method in _METHODS:
                if method in item:
                    operation = Operation(path, method, item[method], registry)
                    self._operations.append((regex, method, operation))

    def operation(self, path: str, method: str) -> Operation:
        """The operation of ``path`` (relative to Kore's prefix) and the HTTP ``method``."""
        method = method.lower()
        for regex, op_method, operation in self._operations:
            if op_method == method and regex.fullmatch(path):
                return operation
        # A route that reads a body but is not in the document: a bug the fuzz test finds.
        raise LookupError(f"{method.upper()} {path} is not in Kore's OpenAPI document")

    def parse(self, path: str, method: str, raw: bytes):
        return self.operation(path, method).parse(raw)


@cache
def request_bodies() -> RequestBodies:
    return RequestBodies()
