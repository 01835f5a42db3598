"""Check a loaded YAML document against a JSON Schema and say what is wrong in plain words.

jsonschema does the checking (every error at once); this module only turns its errors into
Problems located at file:line:column with a message that says what to do.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from dbopt import yamlcache
from dbopt.errors import Problem
from dbopt.words import suggest
from dbopt.yamlload import Document, Path_

if TYPE_CHECKING:
    # jsonschema (70 ms to import) is needed only to explain a document that failed the fast
    # check: imported then, so the common case (every spec valid) never pays for it.
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError

_TYPE_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list",
    "object": "a mapping",
    "null": "nothing",
}


def dotted(path: Iterable[str | int]) -> str:
    """Render a document path like ``indexes[0].columns[1]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the string {value!r}" if len(value) < 40 else "a string"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, datetime.date):
        # YAML reads an unquoted 2024-01-31 as a date.
        return f"the date {value.isoformat()} (quote it to make it a string)"
    return f"{type(value).__name__} {value!r}"  # pragma: no cover - YAML gives nothing else


def _expected(description: str) -> str:
    """A schema description as the end of "expected ...": lower-case start, no full stop."""
    return description[:1].lower() + description[1:].rstrip(".")


def _expected_types(schema: Any) -> str:
    types = list(schema) if isinstance(schema, list) else [schema]
    if "number" in types and "integer" in types:
        types.remove("integer")  # every integer is a number
    names = [_TYPE_NAMES.get(t, t) for t in types]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _schema(err: ValidationError) -> Mapping[str, Any]:
    """The (sub)schema an error is about; jsonschema types it loosely (bool, unset)."""
    return err.schema if isinstance(err.schema, Mapping) else {}


def _listed(value: Any) -> list[Any]:
    """A validator value that is a list (enum, anyOf, ...) as a list; else empty."""
    return list(value) if isinstance(value, list) else []


def _problem(doc: Document, err: ValidationError) -> list[Problem]:
    path: Path_ = tuple(err.absolute_path)
    where = dotted(path)
    v = err.validator
    if v == "additionalProperties" and isinstance(err.instance, dict):
        allowed = sorted(_schema(err).get("properties", {}))
        extras = [k for k in err.instance if k not in allowed]
        out = []
        for key in extras:
            hint = suggest(key, allowed) or f"; allowed keys: {', '.join(allowed)}"
            out.append(doc.problem((*path, key), f"{where}: unknown key '{key}'{hint}", key=True))
        return out
    if v == "required":
        missing = str(err.message).split("'")[1] if "'" in err.message else err.message
        allowed = sorted(_schema(err).get("properties", {}))
        meant = f"; did you mean '{missing}'?"
        if isinstance(err.instance, dict) and any(
            k not in allowed and suggest(k, allowed) == meant for k in err.instance
        ):
            return []  # a misspelt key is reported as unknown, with this key as the suggestion
        return [doc.problem(path, f"{where}: missing required key '{missing}'")]
    if v == "type":
        return [
            doc.problem(
                path,
                f"{where}: expected {_expected_types(err.validator_value)}, "
                f"got {_describe(err.instance)}",
            )
        ]
    if v == "enum":
        choices = [str(c) for c in _listed(err.validator_value)]
        hint = suggest(str(err.instance), choices)
        return [
            doc.problem(
                path,
                f"{where}: {_describe(err.instance)} is not one of {', '.join(choices)}{hint}",
            )
        ]
    if v in ("minLength", "minItems"):
        return [doc.problem(path, f"{where}: must not be empty")]
    if v in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        words = {
            "minimum": "at least",
            "exclusiveMinimum": "greater than",
            "maximum": "at most",
            "exclusiveMaximum": "less than",
        }[str(v)]
        return [
            doc.problem(path, f"{where}: must be {words} {err.validator_value}, got {err.instance}")
        ]
    if v in ("anyOf", "oneOf") and err.context:
        described = _schema(err).get("description")
        if described and not isinstance(err.instance, dict):
            return [_invalid(doc, path, err.instance, described)]
        branch = _matching_branch(err)
        if branch is not None:
            return [p for sub in branch for p in _problem(doc, sub)]
        kinds = [b.get("type") for b in _listed(err.validator_value) if isinstance(b, dict)]
        if kinds and all(kinds):
            return [
                doc.problem(
                    path,
                    f"{where}: expected {_expected_types(kinds)}, got {_describe(err.instance)}",
                )
            ]
        from jsonschema.exceptions import best_match

        return _problem(doc, best_match(err.context))
    if v == "pattern":
        described = _schema(err).get("description", f"text matching {err.validator_value}")
        return [_invalid(doc, path, err.instance, described)]
    return [doc.problem(path, f"{where}: {err.message}")]


def _invalid(doc: Document, path: Path_, value: Any, description: str) -> Problem:
    return doc.problem(
        path, f"{dotted(path)}: {_describe(value)} is not valid; expected {_expected(description)}"
    )


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, int):
        return "integer"
    return "number"


def _matching_branch(err: ValidationError) -> list[ValidationError] | None:
    """The errors of the anyOf/oneOf branch whose type fits the value, if exactly one does."""
    kind = _json_type(err.instance)
    fitting = [
        i
        for i, branch in enumerate(_listed(err.validator_value))
        if isinstance(branch, dict) and branch.get("type") == kind
    ]
    if len(fitting) != 1:
        return None
    return [e for e in err.context or [] if e.relative_schema_path[0] == fitting[0]]


def check_document(doc: Document, schema: dict[str, Any]) -> tuple[list[Problem], set[Path_]]:
    """Every way ``doc`` breaks ``schema`` (sorted by position), and the paths that break it."""
    if _is_valid(schema, doc.data):
        return [], set()
    validator = _validator(schema)
    problems: list[Problem] = []
    paths: set[Path_] = set()
    for err in validator.iter_errors(doc.data):
        problems.extend(_problem(doc, err))
        paths.add(tuple(err.absolute_path))
    return sorted(set(problems), key=lambda p: (p.line, p.column, p.message)), paths


_VALIDATORS: dict[int, Draft202012Validator] = {}
_FAST: dict[int, Callable[[Any], Any]] = {}


def _is_valid(schema: dict[str, Any], data: Any) -> bool:
    """The fast check: fastjsonschema compiles the schema to Python code.

    Valid documents (nearly all of them) pass here in a fraction of jsonschema's time; an
    invalid one is then checked again by jsonschema, which reports every error, not just one.
    """
    import fastjsonschema

    check = _FAST.get(id(schema))
    if check is None:
        check = _FAST[id(schema)] = _fast_check(schema)
    try:
        check(data)
    except fastjsonschema.JsonSchemaException:
        return False
    return True


def _fast_check(schema: dict[str, Any]) -> Callable[[Any], Any]:
    """fastjsonschema's validator for ``schema``; its compiled code is kept in dbopt's cache
    (compiling the generated source is ~20 ms a schema, on every command otherwise)."""
    import json

    import fastjsonschema

    # Compile without "$schema"/"$id": the subset the spec schemas use is draft-07's too.
    plain = {k: v for k, v in schema.items() if not k.startswith("$")}
    # use_default=False: a check must never write the schema's defaults into the document.
    code = yamlcache.compiled(
        lambda: fastjsonschema.compile_to_code(plain, use_default=False),
        fastjsonschema.VERSION,
        json.dumps(plain, sort_keys=True),
    )
    namespace: dict[str, Any] = {}
    exec(code, namespace)
    check: Callable[[Any], Any] = namespace["validate"]
    return check


def _validator(schema: dict[str, Any]) -> Draft202012Validator:
    """One compiled validator per schema object (the schemas are module constants)."""
    from jsonschema import Draft202012Validator

    found = _VALIDATORS.get(id(schema))
    if found is None:
        found = _VALIDATORS[id(schema)] = Draft202012Validator(schema)
    return found


def schema_problems(doc: Document, schema: dict[str, Any]) -> list[Problem]:
    """Every way ``doc`` breaks ``schema``, sorted by position."""
    return check_document(doc, schema)[0]
