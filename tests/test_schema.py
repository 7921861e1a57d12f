"""Structured output (`--schema`), as a user meets it: the installed `llmcli` against the fake
provider server, which checks each provider's structured-output fields as the real API does.

What is proven here: the schema reaches each provider through its own mechanism (never the
prompt), the answer is checked locally (exit 8 with the first error and its JSON path), a
schema llmcli cannot send is refused before anything is sent (exit 2), and `schema check`
says what each provider makes of a schema.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.conftest import LLMCLI, PROVIDERS, base_env, modules_loaded
from tests.fakeserver import Reply

PERSON = '{"name": "Ada", "age": 36}'
CONCISE = "name, age int"
# What the concise form above expands to, and what every provider is sent for it.
EXPANDED = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
# A schema as people write them in files: a `$schema` note and no `additionalProperties`,
# which llmcli drops and adds (an answer without extra keys still matches the file's schema).
FILE_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "person",
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}
FILE_SENT = {k: v for k, v in FILE_SCHEMA.items() if k != "$schema"} | {
    "additionalProperties": False
}


def schema_sent(fake, provider: str) -> tuple[dict, dict]:
    """The schema the provider was sent, and the whole request body."""
    assert fake.wait_idle(5)
    (rec,) = fake.requests_for(provider)
    body = rec.body
    if provider == "openai":
        return body["response_format"]["json_schema"]["schema"], body
    if provider == "anthropic":
        return body["output_config"]["format"]["schema"], body
    return body["generationConfig"]["responseJsonSchema"], body


def schema_file(tmp_path: Path, schema: dict | str = FILE_SCHEMA, name="person.json") -> str:
    path = tmp_path / name
    path.write_text(schema if isinstance(schema, str) else json.dumps(schema), encoding="utf-8")
    return str(path)


# --- the schema on the wire ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["file", "inline", "concise"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_each_provider_gets_the_schema_through_its_structured_output(
    cli, fake, tmp_path, provider, kind
):
    given, expected = {
        "file": (schema_file(tmp_path), FILE_SENT),
        "inline": (json.dumps(EXPANDED), EXPANDED),
        "concise": (CONCISE, EXPANDED),
    }[kind]
    fake.script(provider, Reply(text=PERSON))
    result = cli("ask", "-p", provider, "--schema", given, "Invent a person")

    assert (result.code, result.out, result.err) == (0, '{"name":"Ada","age":36}\n', "")
    sent, body = schema_sent(fake, provider)
    assert sent == expected
    assert "name" not in json.dumps(body.get("messages") or body.get("contents"))  # not the prompt
    if provider == "openai":
        name = "person" if kind == "file" else "response"
        assert body["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": name, "schema": expected, "strict": True},
        }
    elif provider == "anthropic":
        assert body["output_config"] == {"format": {"type": "json_schema", "schema": expected}}
        (rec,) = fake.requests_for("anthropic")
        assert "anthropic-beta" not in {k.lower() for k in rec.headers}  # GA: no beta header
    else:
        config = body["generationConfig"]
        assert config["responseMimeType"] == "application/json"
        assert "responseSchema" not in config and "response_schema" not in config


def test_openai_is_sent_strict_false_for_a_schema_strict_mode_refuses(cli, fake):
    optional_age = {**EXPANDED, "required": ["name"]}
    fake.script("openai", Reply(text='{"name": "Ada"}'))
    result = cli("ask", "-p", "openai", "--schema", json.dumps(optional_age), "Invent a person")

    assert result.code == 0, result.err
    _, body = schema_sent(fake, "openai")
    assert body["response_format"]["json_schema"]["strict"] is False


@pytest.mark.parametrize("provider", PROVIDERS)
def test_schema_multi_asks_for_a_list_of_them(cli, fake, provider):
    people = '{"items": [{"name": "Ada", "age": 36}, {"name": "Alan", "age": 41}]}'
    fake.script(provider, Reply(text=people))
    result = cli("ask", "-p", provider, "--schema", CONCISE, "--schema-multi", "Every person")

    assert result.code == 0, result.err
    assert json.loads(result.out) == json.loads(people)
    sent, _ = schema_sent(fake, provider)
    assert sent == {
        "type": "object",
        "properties": {"items": {"type": "array", "items": EXPANDED}},
        "required": ["items"],
        "additionalProperties": False,
    }


def test_an_endpoint_speaking_openai_is_sent_json_schema_as_openai(cli, fake):
    home = Path(os.environ["LLMCLI_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'[providers.local]\nprotocol = "openai"\nbase_url = "{fake.url}/local/v1"\n'
        'default_model = "llama3.2"\n'
    )
    fake.script("openai", Reply(text=PERSON), prefix="/local")
    result = cli("ask", "-p", "local", "--schema", CONCISE, "Invent a person")

    assert result.code == 0, result.err
    (rec,) = fake.requests_for("openai", prefix="/local")
    assert rec.body["response_format"]["type"] == "json_schema"
    assert rec.body["response_format"]["json_schema"]["schema"] == EXPANDED


def test_llm_schema_is_the_default_schema(cli, fake):
    fake.script("gemini", Reply(text=PERSON))
    result = cli("ask", "-p", "gemini", "Invent a person", extra_env={"LLM_SCHEMA": CONCISE})
    assert (result.code, result.out) == (0, '{"name":"Ada","age":36}\n'), result.err
    assert schema_sent(fake, "gemini")[0] == EXPANDED


def test_a_schema_file_named_by_an_untrusted_env_file_is_not_read(cli, fake, isolated, tmp_path):
    (isolated / ".env").write_text(f"LLM_SCHEMA={schema_file(tmp_path)}\n")
    result = cli("ask", "-p", "openai", "Invent a person")
    assert result.code == 3
    assert "LLM_SCHEMA names a file" in result.err
    assert fake.requests == []


@pytest.mark.parametrize("value", ['{"type": "object"', "name, age integer"])
def test_a_malformed_llm_schema_is_a_configuration_error_in_ask_and_validate(cli, fake, value):
    result = cli("ask", "-p", "openai", "Invent a person", extra_env={"LLM_SCHEMA": value})
    assert (result.code, result.out) == (3, "")
    assert result.err.startswith("Error: ")
    assert fake.requests == []
    checked = cli("config", "validate", "-p", "echo", "--json", extra_env={"LLM_SCHEMA": value})
    assert checked.code == 3
    (row,) = [c for c in json.loads(checked.out)["checks"] if c["variable"] == "LLM_SCHEMA"]
    assert (row["status"], row["source"]) == ("invalid", "environment")
    good = cli("config", "validate", "-p", "echo", "--json", extra_env={"LLM_SCHEMA": CONCISE})
    assert good.code == 0, good.out


# --- the answer, checked -------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_answer_that_does_not_match_exits_8_with_the_first_error_and_its_path(
    cli, fake, provider
):
    fake.script(provider, Reply(text='{"name": "Ada", "age": "thirty-six"}'))
    result = cli("ask", "-p", provider, "--schema", CONCISE, "Invent a person")

    assert result.code == 8
    assert result.out == ""  # no JSON a script could mistake for an answer
    assert result.err.splitlines()[0] == (
        "Error: the answer does not match the schema at $.age: "
        "'thirty-six' is not of type 'integer'"
    )


def test_the_first_error_is_named_by_its_json_path_inside_a_list(cli, fake):
    fake.script("openai", Reply(text='{"items": [{"name": "Ada", "age": 36}, {"name": "Al"}]}'))
    result = cli("ask", "-p", "openai", "--schema", CONCISE, "--schema-multi", "Every person")
    assert result.code == 8
    assert "at $.items[1]: 'age' is a required property" in result.err


def test_an_answer_that_is_not_json_exits_8_and_is_printed_only_with_raw(cli, fake):
    words = "Sure! Here is a person: Ada, 36."
    fake.script("anthropic", Reply(text=words), Reply(text=words))
    plain = cli("ask", "-p", "anthropic", "--schema", CONCISE, "Invent a person")
    raw = cli("ask", "-p", "anthropic", "--schema", CONCISE, "--raw", "Invent a person")

    assert (plain.code, plain.out) == (8, "")
    assert plain.err.startswith("Error: the answer is not JSON: Expecting value (line 1, column 1)")
    assert (raw.code, raw.out) == (8, words + "\n")
    assert "Error: the answer is not JSON" in raw.err


def test_the_raw_answer_is_logged_even_when_it_does_not_match(cli, fake):
    fake.script("openai", Reply(text="not json at all"))
    assert cli("ask", "-p", "openai", "--schema", CONCISE, "Invent a person").code == 8
    logged = cli("logs", "-n", "1", "--json")
    assert logged.code == 0, logged.err
    assert "not json at all" in logged.out


@pytest.mark.parametrize("command", ["ask", "stream"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_truncated_answer_under_a_schema_always_exits_8(cli, fake, provider, command):
    # Even a cut answer that happens to parse: the rest of it is missing.
    fake.script(provider, Reply(text='{"name": "Ada", "age": 36}', finish="length"))
    result = cli(command, "-p", provider, "--schema", CONCISE, "Invent a person")

    assert (result.code, result.out) == (8, "")
    assert "Error: the answer was truncated at --max-tokens" in result.err
    assert "half a JSON object is no answer" in result.err


def test_json_gains_parsed(cli, fake):
    fake.script("openai", Reply(text=PERSON), Reply(text='{"name": 1}'))
    good = cli("ask", "-p", "openai", "--schema", CONCISE, "--json", "Invent a person")
    bad = cli("ask", "-p", "openai", "--schema", CONCISE, "--json", "Invent a person")

    assert good.code == 0, good.err
    assert json.loads(good.out)["parsed"] == {"name": "Ada", "age": 36}
    assert json.loads(good.out)["content"] == PERSON
    assert bad.code == 8
    data = json.loads(bad.out)
    assert (data["parsed"], data["content"]) == (None, '{"name": 1}')
    assert "Error: the answer does not match the schema at $" in bad.err


def test_json_without_a_schema_has_no_parsed(cli, fake):
    result = cli("ask", "-p", "openai", "--json", "Hello")
    assert "parsed" not in json.loads(result.out)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_stream_prints_the_checked_json_at_the_end_and_raw_text_only_with_raw(cli, fake, provider):
    spaced = '{ "name" : "Ada" , "age" : 36 }'
    fake.script(provider, Reply(text=spaced), Reply(text=spaced))
    checked = cli("stream", "-p", provider, "--schema", CONCISE, "Invent a person")
    raw = cli("stream", "-p", provider, "--schema", CONCISE, "--raw", "Invent a person")

    assert (checked.code, checked.out, checked.err) == (0, '{"name":"Ada","age":36}\n', "")
    assert (raw.code, raw.out, raw.err) == (0, spaced + "\n", "")


def test_a_stream_that_does_not_match_prints_nothing(cli, fake):
    fake.script("gemini", Reply(text='{"name": "Ada"}'))
    result = cli("stream", "-p", "gemini", "--schema", CONCISE, "Invent a person")
    assert (result.code, result.out) == (8, "")
    assert "at $: 'age' is a required property" in result.err


def test_the_echo_provider_repeats_the_prompt_and_checks_it_like_any_answer(cli):
    good = cli("ask", "-p", "echo", "--schema", CONCISE, stdin=PERSON)
    bad = cli("ask", "-p", "echo", "--schema", CONCISE, "Invent a person")
    assert (good.code, good.out, good.err) == (0, '{"name":"Ada","age":36}\n', "")
    assert (bad.code, bad.out) == (8, "")
    assert "the answer is not JSON" in bad.err


def test_chat_prints_each_checked_reply_as_one_json_line(cli, fake):
    fake.script("openai", Reply(text=PERSON), Reply(text="no"))
    result = cli("chat", "-p", "openai", "--schema", CONCISE, stdin="first\nsecond\n")
    assert result.code == 8  # the second reply did not match
    assert result.out.splitlines()[0] == '{"name":"Ada","age":36}'
    assert "Error: the answer is not JSON" in result.err


def test_a_terminal_gets_the_json_indented():
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(
        LLMCLI,
        ["ask", "-p", "echo", "--no-log", "--schema", CONCISE, PERSON],
        env=base_env(),
        encoding="utf-8",
        timeout=20,
    )
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert child.before.replace("\r\n", "\n") == '{\n  "name": "Ada",\n  "age": 36\n}\n'


# --- schemas llmcli will not send ----------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--schema", '{"type": "object",'], "--schema is not valid JSON"),
        (["--schema", "[1, 2]"], "--schema must be a JSON object"),
        (["--schema", '{"type": "strnig"}'], "--schema is not a valid JSON Schema at $.type"),
        (["--schema", "name, age integer"], "'integer' (field 'age') is not a type"),
        (["--schema", "name, name"], "field 'name' is given twice"),
        (["--schema", "full name str extra"], "is more than a name and a type"),
        (["--schema", "person.schema"], "'person.schema' is not a field name"),
        (["--schema", "./missing.json"], "schema file not found: ./missing.json"),
        (["--schema", "./"], "is a folder, not a schema file"),
        (["--schema-multi"], "--schema-multi needs a --schema"),
        (["--schema", CONCISE, "--response-format", "json"], "not both"),
        (["--raw"], "--raw goes with --schema"),
    ],
)
def test_a_schema_that_cannot_be_used_exits_2_before_sending(cli, fake, args, said):
    result = cli("ask", "-p", "openai", *args, "Invent a person")
    assert result.code == 2, result.err
    assert said in result.err.splitlines()[0]
    assert result.out == ""
    assert fake.requests == []


def test_an_unreadable_schema_file_exits_2(cli, fake, tmp_path):
    path = schema_file(tmp_path)
    os.chmod(path, 0)
    if os.access(path, os.R_OK):  # root reads anything: a file no one can read from offset 0
        path = "/proc/self/mem"
    result = cli("ask", "-p", "openai", "--schema", path, "hi")
    assert result.code == 2
    assert f"Error: --schema: cannot read schema file {path}: " in result.err
    assert fake.requests == []


def test_a_schema_file_that_is_not_text_exits_2_without_quoting_it(cli, fake, tmp_path):
    path = tmp_path / "key.json"
    path.write_bytes(b"\xff\xfe secret-ish bytes")
    result = cli("ask", "-p", "openai", "--schema", str(path), "hi")
    assert result.code == 2
    assert f"schema file {path} is not UTF-8 text" in result.err
    assert "secret-ish" not in result.err


def test_anthropic_refuses_a_keyword_its_strict_mode_lacks_before_sending(cli, fake):
    bounded = {
        "type": "object",
        "properties": {"score": {"type": "number", "minimum": 0, "maximum": 1}},
        "required": ["score"],
    }
    result = cli("ask", "-p", "anthropic", "--schema", json.dumps(bounded), "Rate it")
    assert result.code == 2
    assert result.err.splitlines()[0] == (
        "Error: anthropic cannot honour --schema: keyword 'minimum' is not supported at "
        "$.properties.score (and 1 more)"
    )
    assert fake.requests == []
    # The same schema goes to OpenAI (not strict) and Gemini as it is, checked by llmcli.
    fake.script("gemini", Reply(text='{"score": 0.5}'))
    assert cli("ask", "-p", "gemini", "--schema", json.dumps(bounded), "Rate it").code == 0


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("anthropic", "claude-3-5-haiku-latest"),
        ("openai", "gpt-3.5-turbo"),
        ("gemini", "gemini-1.5-flash"),
    ],
)
def test_a_model_without_structured_output_exits_2(cli, fake, provider, model):
    result = cli("ask", "-p", provider, "-m", model, "--schema", CONCISE, "hi")
    assert result.code == 2
    assert f"{provider} model {model} has no structured output" in result.err
    assert fake.requests == []


# --- the response cache --------------------------------------------------------------------


def test_a_different_schema_misses_the_cache(cli, fake):
    fake.script("openai", Reply(text=PERSON), Reply(text='{"name": "Ada"}'))
    first = cli("ask", "-p", "openai", "--cache", "--schema", CONCISE, "Invent a person")
    again = cli("ask", "-p", "openai", "--cache", "--schema", CONCISE, "Invent a person")
    other = cli("ask", "-p", "openai", "--cache", "--schema", "name", "Invent a person")

    assert (first.code, again.code, other.code) == (0, 0, 0), first.err + again.err + other.err
    assert first.out == again.out == '{"name":"Ada","age":36}\n'
    assert other.out == '{"name":"Ada"}\n'
    assert fake.wait_idle(5)
    assert len(fake.requests_for("openai")) == 2  # the second was a hit, the third a miss


# --- schema check --------------------------------------------------------------------------


def test_schema_check_prints_the_full_schema_and_each_providers_verdict(cli):
    result = cli("schema", "check", "name, age int, tags list, score float: 0 to 1")
    assert result.code == 0, result.err
    assert json.loads(result.out) == {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "score": {"type": "number", "description": "0 to 1"},
        },
        "required": ["name", "age", "tags", "score"],
        "additionalProperties": False,
    }
    assert "openai: strict mode accepts it" in result.err
    assert "anthropic: accepts it" in result.err
    assert "gemini: enforces all of it" in result.err


def test_schema_check_says_why_a_strict_mode_refuses(cli, tmp_path):
    loose = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 1}, "note": {"type": "string"}},
        "required": ["n"],
        "additionalProperties": True,
    }
    result = cli("schema", "check", "--json", schema_file(tmp_path, loose))
    assert result.code == 0, result.err
    verdicts = json.loads(result.out)["providers"]
    assert verdicts["openai"]["strict"] is False
    assert verdicts["openai"]["problems"] == [
        "additionalProperties is not false at $",
        "not every property is required (note) at $",
    ]
    assert verdicts["anthropic"]["accepted"] is False
    assert verdicts["anthropic"]["problems"] == [
        "additionalProperties must be false at $",
        "keyword 'minimum' is not supported at $.properties.n",
    ]
    assert verdicts["gemini"] == {**verdicts["gemini"], "accepted": True, "strict": True}


def test_schema_check_of_a_bad_schema_exits_2(cli):
    result = cli("schema", "check", "name,, age")
    assert (result.code, result.out) == (2, "")
    assert "Error: invalid concise schema: field 2 is empty" in result.err


# --- what a command loads ------------------------------------------------------------------


def test_jsonschema_is_loaded_only_with_a_schema():
    assert "jsonschema" not in modules_loaded("ask", "-p", "echo", "--no-log", "hi")
    inline = json.dumps(EXPANDED)
    assert "jsonschema" in modules_loaded(
        "ask", "-p", "echo", "--no-log", "--schema", inline, "--json", PERSON
    )
    # A concise schema is valid by construction, and an answer that matches it is vouched for
    # without jsonschema's 30-45 ms import (the benchmark's goal: --schema adds at most 10 ms).
    assert "jsonschema" not in modules_loaded(
        "ask", "-p", "echo", "--no-log", "--schema", CONCISE, PERSON
    )


def test_the_quick_check_of_concise_answers_agrees_with_jsonschema():
    """`_matches` may only say yes where jsonschema does: across answers of every shape, right
    and wrong, for a concise schema (and its --schema-multi), the two verdicts are the same."""
    import itertools

    from jsonschema import Draft202012Validator

    from llmcli import schema

    one = json.loads(schema.resolve("name, age int, tags list, ok bool, score float"))
    many = json.loads(schema.resolve("name, age int, tags list, ok bool, score float", many=True))
    scalars = ["x", "", 0, 7, -3, 1.0, 2.5, True, False, None, [], ["a"], [1], {}, float("nan")]
    answers: list = list(scalars)
    fields = list(one["properties"])
    good = {"name": "Ada", "age": 36, "tags": ["a"], "ok": True, "score": 0.5}
    for name, value in itertools.product(fields, scalars):
        answers.append({**good, name: value})
    answers += [good, {**good, "extra": 1}, {k: good[k] for k in fields[:-1]}]
    answers += [{"items": []}, {"items": [good, good]}, {"items": [good, {**good, "age": "x"}]}]
    answers += [{"items": good}, {"items": [good], "more": 1}, [good]]
    for node in (one, many):
        validator = Draft202012Validator(node)
        for answer in answers:
            assert schema._matches(node, answer) == validator.is_valid(answer), (node, answer)


def test_the_library_returns_parsed_and_raises_on_a_mismatch():
    code = (
        "import json, llmcli\n"
        f"r = llmcli.ask({PERSON!r}, provider='echo', schema={CONCISE!r})\n"
        "print(json.dumps(r.parsed))\n"
        "try:\n"
        "    llmcli.ask('no', provider='echo', schema={'type': 'object'})\n"
        "except llmcli.errors.IncompleteAnswer as exc:\n"
        "    print(exc.exit_code.value, exc.message)\n"
    )
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=base_env(), timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        '{"name": "Ada", "age": 36}',
        "8 the answer is not JSON: Expecting value (line 1, column 1)",
    ]
