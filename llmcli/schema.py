"""Structured output: the JSON Schema an answer must match, what each provider's structured
mode can enforce of it, and the local check of the answer.

A schema is given as a file, as inline JSON, or in a concise form for the common case
(`'name, age int, tags list, score float: 0 to 1'`). It is resolved once into a full JSON
Schema and carried in `Request.schema` as canonical JSON text (hashable, and exactly what the
response cache keys on). Providers constrain the model with their own mechanism; whatever they
do, the answer is parsed and validated here with `jsonschema`, so a provider that enforces less
than the schema says (Gemini ignores some keywords, OpenAI's non-strict mode only guides) can
never hand a script JSON that does not match.

`jsonschema` costs 30-45 ms to import (referencing, attrs, every draft's meta-schema), more
than all of llmcli's own start-up, so it is imported inside functions only: a command without a
schema never loads it, and neither does a concise-form schema whose answer matches. The concise
form is llmcli's own output (no meta-schema check needed) and its rules are few (`_matches`
decides them); any answer `_matches` does not vouch for is judged by jsonschema, which then
words the error.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

from llmcli import errors

ENV = "LLM_SCHEMA"
#: A schema file larger than this is refused: a real one is a few kilobytes.
MAX_FILE_BYTES = 1024 * 1024

# --- the concise form ---------------------------------------------------------------------

CONCISE_TYPES: dict[str, dict[str, Any]] = {
    "str": {"type": "string"},
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "bool": {"type": "boolean"},
    "list": {"type": "array", "items": {"type": "string"}},
}
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
CONCISE_HINT = (
    "write fields as 'name, age int, tags list, score float: 0 to 1' (types: "
    + ", ".join(CONCISE_TYPES)
    + "; text after a colon describes the field; one field per line lets descriptions hold commas)"
)


def concise(text: str) -> dict[str, Any]:
    """The JSON Schema a concise form means: an object with every field required and no others.

    Fields are separated by commas, or by newlines when there is more than one line (so a
    description may hold commas). Every field is required and `additionalProperties` is false,
    because that is what a script reading `.name` expects, and what OpenAI's strict mode and
    Anthropic's structured output need: the concise form is accepted everywhere.
    """
    entries = text.splitlines() if "\n" in text.strip() else text.split(",")
    properties: dict[str, Any] = {}
    for number, entry in enumerate(entries, start=1):
        if not entry.strip():
            if "\n" in text.strip() or number == len(entries):
                continue  # blank lines, and one trailing comma, are harmless
            raise _bad_concise(f"field {number} is empty")
        head, colon, description = entry.partition(":")
        words = head.split()
        if not words:
            raise _bad_concise(f"field {number} has a description but no name")
        if len(words) > 2:
            raise _bad_concise(f"field {number} ({head.strip()!r}) is more than a name and a type")
        name = words[0]
        if not _FIELD_NAME.fullmatch(name):
            raise _bad_concise(
                f"{name!r} is not a field name (letters, digits, _ and -)",
                "a schema file's path needs a / or a .json ending: ./person.schema",
            )
        if name in properties:
            raise _bad_concise(f"field {name!r} is given twice")
        kind = words[1] if len(words) == 2 else "str"
        if kind not in CONCISE_TYPES:
            raise _bad_concise(
                f"{kind!r} (field {name!r}) is not a type: use one of {', '.join(CONCISE_TYPES)}"
            )
        field = dict(CONCISE_TYPES[kind])
        if colon and description.strip():
            field["description"] = description.strip()
        properties[name] = field
    if not properties:
        raise _bad_concise("no fields given")
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _bad_concise(what: str, hint: str = CONCISE_HINT) -> errors.UsageError:
    return errors.UsageError(f"invalid concise schema: {what}", hint)


# --- resolving what the user gave ---------------------------------------------------------


def _looks_like_path(text: str) -> bool:
    return "/" in text or "\\" in text or text.lower().endswith(".json")


def _read_file(path: str, where: str) -> str:
    """The schema file's text; every problem is a usage error naming the file (never its text)."""
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise errors.UsageError(f"{where}: schema file not found: {path}") from None
    except IsADirectoryError:
        raise errors.UsageError(f"{where}: {path} is a folder, not a schema file") from None
    except OSError as exc:
        raise errors.UsageError(
            f"{where}: cannot read schema file {path}: {exc.strerror or exc}"
        ) from None
    if len(data) > MAX_FILE_BYTES:
        raise errors.UsageError(f"{where}: schema file {path} is over 1 MiB")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise errors.UsageError(f"{where}: schema file {path} is not UTF-8 text") from None


def _parse_json(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise errors.UsageError(
            f"{what} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
            'check the quoting: inline JSON is easiest in single quotes, \'{"type": "object"}\'',
        ) from None
    if not isinstance(value, dict):
        raise errors.UsageError(
            f"{what} must be a JSON object (a schema), not {type(value).__name__}"
        )
    return value


def load(text: str, *, where: str = "--schema", allow_file: bool = True) -> dict[str, Any]:
    """The JSON Schema that `text` (a file path, inline JSON or the concise form) stands for.

    Inline JSON starts with `{`; a path has a `/` or ends in `.json` (`./person.schema`);
    anything else is the concise form. `allow_file=False` refuses paths (a setting from a
    `.env` nobody vouched for must not choose a local file to send to the provider).
    """
    stripped = text.strip()
    if not stripped:
        raise errors.UsageError(f"{where} is empty", CONCISE_HINT)
    if stripped.startswith(("{", "[")):
        schema = _parse_json(stripped, where)
    elif _looks_like_path(stripped):
        if not allow_file:
            raise errors.ConfigError(
                f"{where} names a file ({stripped}) but comes from a .env that was not trusted",
                "pass --schema yourself, or name the .env with --env-file if you trust it",
            )
        schema = _parse_json(_read_file(stripped, where), f"{where} file {stripped}")
    else:
        return concise(stripped)  # valid by construction: no meta-schema check to pay for
    check(schema, where)
    return schema


def multi(schema: dict[str, Any]) -> dict[str, Any]:
    """`{"items": [schema, ...]}`, for "every person mentioned" (`--schema-multi`).

    The item's `$defs` move to the top, where its `#/$defs/...` references still find them.
    """
    item = {k: v for k, v in schema.items() if k not in ("$schema", "$defs", "definitions")}
    wrapped: dict[str, Any] = {
        "type": "object",
        "properties": {"items": {"type": "array", "items": item}},
        "required": ["items"],
        "additionalProperties": False,
    }
    for key in ("$defs", "definitions"):
        if key in schema:
            wrapped[key] = schema[key]
    return wrapped


def canonical(schema: Mapping[str, Any]) -> str:
    """The one text of a schema: no spaces, keys in the order given (what `Request.schema` and
    the cache key hold). Not sorted: models write properties in the schema's order, so two
    schemas that differ only in order ask for different answers."""
    return json.dumps(schema, separators=(",", ":"), ensure_ascii=False)


def resolve(value: str | Mapping[str, Any], *, many: bool = False, where: str = "--schema",
            allow_file: bool = True) -> str:  # fmt: skip
    """`Request.schema` for what the user gave: a schema (dict) or text for `load`."""
    schema = dict(value) if isinstance(value, Mapping) else None
    if schema is None:
        return _resolve_text(str(value), many, where, allow_file)
    check(schema, where)
    return canonical(multi(schema) if many else schema)


@functools.lru_cache(maxsize=16)
def _resolve_text(text: str, many: bool, where: str, allow_file: bool) -> str:
    # Cached: `chat` prepares a call several times a turn, and a file is read once.
    schema = load(text, where=where, allow_file=allow_file)
    return canonical(multi(schema) if many else schema)


# --- JSON paths ---------------------------------------------------------------------------


def json_path(parts: Any) -> str:
    """`$.items[0].age` for a path of keys and indexes (`$` alone for the top)."""
    text = "$"
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif isinstance(part, str) and _FIELD_NAME.fullmatch(part) and "-" not in part:
            text += f".{part}"
        else:
            text += f"[{json.dumps(part, ensure_ascii=False)}]"
    return text


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- checking the schema and the answer ---------------------------------------------------


@functools.lru_cache(maxsize=16)
def _validator(schema_text: str) -> Any:
    """A jsonschema validator for the schema's own draft (`$schema`; 2020-12 when unsaid)."""
    from jsonschema import validators

    schema = json.loads(schema_text)
    cls = validators.validator_for(schema, default=validators.Draft202012Validator)
    return cls(schema)


@functools.lru_cache(maxsize=16)
def _schema(schema_text: str) -> Any:
    return json.loads(schema_text)


_LEAVES = {
    "string": lambda v: isinstance(v, str),
    # As jsonschema (draft 4 on): 1.0 is an integer; a boolean is never a number.
    "integer": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool))
        or (isinstance(v, float) and v.is_integer())
    ),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
}
_NOTE_KEYS = {"description", "title"}


def _matches(node: Any, value: Any) -> bool:
    """True only when `value` certainly matches `node`, for the shapes the concise form and
    `--schema-multi` make (objects with every property required and no others, the four
    scalar types, lists of them or of such objects). Anything else is False: not "invalid",
    but "ask jsonschema", which decides and words the error."""
    if not isinstance(node, dict):
        return False
    kind, keys = node.get("type"), set(node) - _NOTE_KEYS
    if kind in _LEAVES and keys == {"type"}:
        return _LEAVES[kind](value)
    if kind == "array" and keys == {"type", "items"}:
        return isinstance(value, list) and all(_matches(node["items"], item) for item in value)
    if kind == "object" and keys == {"type", "properties", "required", "additionalProperties"}:
        properties = node["properties"]
        return (
            node["additionalProperties"] is False
            and isinstance(properties, dict)
            and node["required"] == list(properties)
            and isinstance(value, dict)
            and value.keys() == properties.keys()
            and all(_matches(properties[k], v) for k, v in value.items())
        )
    return False


def check(schema: dict[str, Any], where: str = "--schema") -> None:
    """A usage error unless `schema` is a valid JSON Schema (by its draft's meta-schema)."""
    from jsonschema import exceptions, validators

    cls = validators.validator_for(schema, default=validators.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except exceptions.SchemaError as error:
        raise errors.UsageError(
            f"{where} is not a valid JSON Schema at {json_path(error.absolute_path)}: "
            f"{_short(error.message)}",
            "types are string, integer, number, boolean, array, object and null",
        ) from None


def validate(schema_text: str, answer: str) -> tuple[Any, str | None]:
    """The answer parsed, and None; or None and why it is not JSON matching the schema.

    The reason names the first error (the most relevant, by jsonschema's `best_match`) and
    where it is, as a JSON path (`$.items[0].age`).
    """
    try:
        value = json.loads(answer)
    except json.JSONDecodeError as exc:
        if not answer.strip():
            return None, "the answer is empty, not JSON"
        return None, f"the answer is not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
    if _matches(_schema(schema_text), value):
        return value, None
    from jsonschema import exceptions

    error = exceptions.best_match(_validator(schema_text).iter_errors(value))
    if error is None:
        return value, None
    return None, (
        f"the answer does not match the schema at {json_path(error.absolute_path)}: "
        f"{_short(error.message)}"
    )


def dumps(value: Any, *, pretty: bool) -> str:
    """A parsed answer as JSON text: one compact line, or indented by 2 for a person."""
    if pretty:
        return json.dumps(value, ensure_ascii=False, indent=2)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# --- what each provider's structured mode can enforce -------------------------------------


class Problem(NamedTuple):
    """Something of a schema a provider's structured mode cannot take, and where it is."""

    path: str
    what: str

    def __str__(self) -> str:
        return f"{self.what} at {self.path}"


def _walk(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], dict]]:
    """Every schema object in `node` with its path (into properties, items, anyOf, $defs...)."""
    if not isinstance(node, dict):
        return
    yield path, node
    for key in ("properties", "$defs", "definitions", "patternProperties", "dependentSchemas"):
        children = node.get(key)
        if isinstance(children, dict):
            for name, child in children.items():
                yield from _walk(child, (*path, key, name))
    for key in ("items", "additionalProperties", "not", "contains", "if", "then", "else"):
        if isinstance(node.get(key), dict):
            yield from _walk(node[key], (*path, key))
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        children = node.get(key)
        if isinstance(children, list):
            for index, child in enumerate(children):
                yield from _walk(child, (*path, key, index))


# Keywords that only describe (never constrain), accepted everywhere.
_NOTES = {"title", "description", "$comment", "examples", "$id", "$schema", "$anchor"}
# What OpenAI's strict mode takes (its Structured Outputs guide; openai `lib/_pydantic.py`).
OPENAI_STRICT = _NOTES | {
    "type", "properties", "required", "additionalProperties", "items", "enum", "const",
    "anyOf", "$ref", "$defs", "definitions", "pattern", "format", "multipleOf", "minimum",
    "maximum", "exclusiveMinimum", "exclusiveMaximum", "minItems", "maxItems",
}  # fmt: skip
# What Anthropic's structured output takes (anthropic `lib/_parse/_transform.py`
# `transform_schema`, which turns the rest into description text; llmcli refuses instead).
ANTHROPIC = _NOTES | {
    "type", "properties", "required", "additionalProperties", "items", "enum", "const",
    "anyOf", "allOf", "$ref", "$defs", "format", "minItems",
}  # fmt: skip
ANTHROPIC_FORMATS = {
    "date-time", "time", "date", "duration", "email", "hostname", "uri", "ipv4", "ipv6", "uuid",
}  # fmt: skip
# What Gemini's `response_json_schema` honours (google-genai `GenerateContentConfig` docs); it
# takes the rest and ignores it, so those are only told, never refused.
GEMINI = _NOTES | {
    "$defs", "$ref", "type", "format", "enum", "items", "prefixItems", "minItems", "maxItems",
    "minimum", "maximum", "anyOf", "oneOf", "properties", "additionalProperties", "required",
    "propertyOrdering",
}  # fmt: skip


def _is_object(node: dict) -> bool:
    kind = node.get("type")
    return kind == "object" or (isinstance(kind, list) and "object" in kind) or "properties" in node


def openai_strict_problems(schema: dict[str, Any]) -> list[Problem]:
    """Why OpenAI's strict mode would refuse `for_provider(schema)`; [] when it takes it.

    Strict mode needs an object at the top, every property required, `additionalProperties`
    false on every object (llmcli adds it where the schema does not say), and only the
    keywords it knows.
    """
    problems = []
    if schema.get("type") != "object":
        problems.append(Problem("$", "the top is not an object"))
    for path, node in _walk(schema):
        where = json_path(path)
        for key in node:
            if key not in OPENAI_STRICT:
                problems.append(Problem(where, f"keyword {key!r} is not supported in strict mode"))
        if _is_object(node):
            if node.get("additionalProperties", False) is not False:
                problems.append(Problem(where, "additionalProperties is not false"))
            required = set(node.get("required") or ())
            missing = [k for k in node.get("properties") or {} if k not in required]
            if missing:
                names = ", ".join(missing)
                problems.append(Problem(where, f"not every property is required ({names})"))
    return problems


def anthropic_problems(schema: dict[str, Any]) -> list[Problem]:
    """What Anthropic's structured output cannot take ([] when it takes it all).

    Anthropic has only a strict mode, so any of these is a refusal before sending.
    """
    problems = []
    for path, node in _walk(schema):
        where = json_path(path)
        for key in node:
            if key not in ANTHROPIC:
                problems.append(Problem(where, f"keyword {key!r} is not supported"))
        if node.get("format") is not None and node.get("format") not in ANTHROPIC_FORMATS:
            problems.append(Problem(where, f"format {node['format']!r} is not supported"))
        if node.get("minItems") not in (None, 0, 1):
            problems.append(Problem(where, "minItems above 1 is not supported"))
        if _is_object(node) and node.get("additionalProperties", False) is not False:
            problems.append(Problem(where, "additionalProperties must be false"))
    return problems


def gemini_ignored(schema: dict[str, Any]) -> list[Problem]:
    """Keywords Gemini takes but does not enforce (llmcli's own check still does)."""
    return [
        Problem(json_path(path), f"keyword {key!r} is not enforced")
        for path, node in _walk(schema)
        for key in node
        if key not in GEMINI
    ]


def for_provider(schema_text: str) -> dict[str, Any]:
    """The schema as a provider is sent it: `$schema` dropped (a validator's note, which
    structured modes may refuse), and `additionalProperties: false` added to every object that
    does not say. That only narrows: an answer without extra keys still matches the user's
    schema, and OpenAI's strict mode and Anthropic need it."""
    schema = json.loads(schema_text)
    schema.pop("$schema", None)
    for _, node in _walk(schema):
        if _is_object(node) and "additionalProperties" not in node:
            node["additionalProperties"] = False
    return schema


def openai_name(schema: Mapping[str, Any]) -> str:
    """`json_schema.name`: the schema's title when it fits OpenAI's rule, else `response`."""
    title = schema.get("title")
    if isinstance(title, str) and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", title):
        return title
    return "response"


# --- models that have no structured mode --------------------------------------------------

# Deny lists, not allow lists: a model released after this was written has structured output.
_NO_STRUCTURED = {
    "openai": re.compile(
        r"(gpt-3\.5|gpt-4(-\d{4}|-turbo|-32k|-vision)|gpt-4$|gpt-4o-2024-05-13|o1-(mini|preview)"
        r"|chatgpt-4o)"
    ),
    "anthropic": re.compile(
        r"claude-(instant|2|3)|claude-(sonnet|opus)-4(-0|-2025|$)|claude-opus-4-1"
    ),
    "gemini": re.compile(r"(models/)?gemini-(1\.|pro)"),
}
_STRUCTURED_MODELS = {
    "openai": "gpt-4o-mini, gpt-4o, gpt-4.1, gpt-5 or an o-series model from o1 on",
    "anthropic": "Claude Haiku 4.5, Sonnet 4.5, Opus 4.5 or later",
    "gemini": "Gemini 2.0 or later",
}


def model_refusal(protocol: str, provider: str, model: str) -> errors.UsageError | None:
    """A usage error when `model` has no structured output at all (before anything is sent)."""
    pattern = _NO_STRUCTURED.get(protocol)
    if pattern is None or not pattern.match(model):
        return None
    return errors.UsageError(
        f"{provider} model {model} has no structured output: it cannot honour --schema",
        f"choose a model that has: {_STRUCTURED_MODELS[protocol]} (-m)",
    )


def anthropic_refusal(provider: str, schema_text: str) -> errors.UsageError | None:
    problems = anthropic_problems(for_provider(schema_text))
    if not problems:
        return None
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return errors.UsageError(
        f"{provider} cannot honour --schema: {problems[0]}{more}",
        "its structured output is always strict: drop the keyword, or use openai or gemini "
        "(`llmcli schema check` lists what each provider takes)",
    )


def report(schema: dict[str, Any]) -> dict[str, Any]:
    """What each provider makes of a schema: `schema check`'s verdicts, as data."""
    sent = for_provider(canonical(schema))
    strict = openai_strict_problems(sent)
    refused = anthropic_problems(sent)
    ignored = gemini_ignored(sent)
    return {
        "openai": {
            "accepted": True,
            "strict": not strict,
            "problems": [str(p) for p in strict],
            "note": "sent with strict: true"
            if not strict
            else "sent with strict: false (the model is guided, not bound; llmcli still validates)",
        },
        "anthropic": {
            "accepted": not refused,
            "strict": not refused,
            "problems": [str(p) for p in refused],
            "note": "structured output (always strict)"
            if not refused
            else "refused before sending (exit 2): its structured output is always strict",
        },
        "gemini": {
            "accepted": True,
            "strict": not ignored,
            "problems": [str(p) for p in ignored],
            "note": "every keyword enforced"
            if not ignored
            else "sent as it is; these keywords are ignored by Gemini and checked by llmcli only",
        },
        "echo": {
            "accepted": True,
            "strict": False,
            "problems": [],
            "note": "repeats the prompt, validated like any answer",
        },
    }
