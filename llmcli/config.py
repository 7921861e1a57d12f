"""Settings: command-line flag > process environment > `.env` file > defaults.

Everything a call needs is resolved and validated here, before any network call, so a missing
key or a malformed value fails fast with a message naming the variable and how to fix it. The
`.env` file is parsed, never loaded into `os.environ`: the process environment stays what the
user set, and we pass every value to the SDKs explicitly.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

from llmcli import errors, providers
from llmcli.secret import Secret

DEFAULT_PROVIDER = "openai"
DEFAULT_MAX_TOKENS = 1000
# A deadline for each whole attempt, as the SDKs' own default: a long answer streams for minutes,
# and one cut off at its deadline is paid for and lost. A dead endpoint is found sooner: the
# connection itself must be made within CONNECT_TIMEOUT (llmcli.transport).
DEFAULT_TIMEOUT = 600.0
DEFAULT_RETRIES = 3
MAX_RETRIES_LIMIT = 10
# Bounds every SDK accepts: google-genai counts timeouts in whole milliseconds (0 = none at all),
# and a timeout past an hour overflows nothing but helps no one; no model writes more tokens.
MIN_TIMEOUT = 0.001
MAX_TIMEOUT = 3600.0
MAX_TOKENS_LIMIT = 10_000_000
MAX_MODEL_NAME = 256


class Source(NamedTuple):
    """Where a value came from: `flag`, `environment`, `.env` (with its path) or `default`."""

    kind: str
    path: str | None = None

    def __str__(self) -> str:
        return f".env ({self.path})" if self.kind == ".env" and self.path else self.kind


FLAG = Source("flag")
ENVIRONMENT = Source("environment")
DEFAULT = Source("default")


# --- value parsers: each returns the typed value or raises ValueError saying what is wrong -------


def parse_max_tokens(raw: Any) -> int:
    problem = f"must be a whole number from 1 to {MAX_TOKENS_LIMIT:,}, e.g. 1000"
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise ValueError(problem) from None
    if not 1 <= value <= MAX_TOKENS_LIMIT:
        raise ValueError(problem)
    return value


def parse_retries(raw: Any) -> int:
    problem = f"must be a whole number from 0 to {MAX_RETRIES_LIMIT}"
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise ValueError(problem) from None
    if not 0 <= value <= MAX_RETRIES_LIMIT:
        raise ValueError(problem)
    return value


def _parse_float(raw: Any, low: float, high: float | None, problem: str) -> float:
    try:
        value = float(str(raw).strip())
    except ValueError:
        raise ValueError(problem) from None
    if math.isnan(value) or value < low or (high is not None and value > high) or math.isinf(value):
        raise ValueError(problem)
    return value


def parse_temperature(raw: Any) -> float:
    # The widest range any provider accepts; the chosen provider's own range is checked later.
    return _parse_float(raw, 0.0, 2.0, "must be a number from 0 to 2")


def parse_top_p(raw: Any) -> float:
    return _parse_float(raw, 0.0, 1.0, "must be a number from 0 to 1")


def parse_timeout(raw: Any) -> float:
    return _parse_float(
        raw,
        MIN_TIMEOUT,
        MAX_TIMEOUT,
        f"must be a number of seconds from {MIN_TIMEOUT:g} to {MAX_TIMEOUT:g}, e.g. 60",
    )


def parse_provider(raw: Any) -> str:
    value = str(raw).strip().lower()
    if not providers.known(value):
        raise ValueError(f"unknown provider; choose one of: {', '.join(providers.names())}")
    return value


def parse_model(raw: Any) -> str:
    """A model name as the APIs take it: `gpt-4o-mini`, `models/gemini-2.5-flash`,
    `meta-llama/Llama-3-70b`, `llama3.2:latest`, `ft:gpt-4o-mini:org::id`.

    Gemini puts the name in the URL path, so a name that could leave that path (`..`, `?`, a
    space) is refused here for every provider, before anything is sent.
    """
    value = parse_text(raw).strip()
    if not value:
        raise ValueError("is empty; name a model, e.g. gpt-4o-mini")
    if len(value) > MAX_MODEL_NAME:
        raise ValueError(f"is longer than {MAX_MODEL_NAME} characters")
    bad = sorted({c for c in value if not (c.isalnum() or c in "-_.:/@+=")})
    if bad:
        shown = " ".join(repr(c) for c in bad)
        raise ValueError(f"contains characters no model name has ({shown})")
    segments = value.split("/")
    if any(s in ("", ".", "..") for s in segments):
        raise ValueError("is not a model name (empty, '.' or '..' between slashes)")
    return value


def parse_tag(raw: Any) -> str | None:
    """A label for `cost --by tag`; an empty one means no tag, as if none were given."""
    value = parse_text(raw).strip()
    if any(not c.isprintable() for c in value):
        raise ValueError("contains control characters")
    return value or None


def parse_text(raw: Any) -> str:
    value = str(raw)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes from argv or the environment
        raise ValueError("is not valid UTF-8; check your terminal's encoding") from None
    return value


def parse_url(raw: Any) -> str:
    from urllib.parse import urlsplit

    value = str(raw).strip()
    problem = "must be an http:// or https:// URL, e.g. https://api.example.com/v1"
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises for `user:pa/ss@host`, read as host `user`, port `pa`
    except ValueError:
        raise ValueError(
            f"{problem} (a password with / ? # or @ in it must be %-encoded)"
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(problem)
    return value


def parse_fallback(raw: Any) -> tuple[str, ...]:
    """Providers to try next, in order: `provider[/model]` or an alias each (repeatable
    `--fallback`, or a comma list in LLM_FALLBACK). Checked against the providers in `resolve`."""
    items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
    found = tuple(parse_text(item).strip() for item in items)
    if not all(found):
        raise ValueError("has an empty entry; write provider[/model] or an alias, comma-separated")
    return found


def parse_log_switch(raw: Any) -> bool:
    value = str(raw).strip().lower()
    if value in ("0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError("must be 0 (off) or 1 (on)")


class Setting(NamedTuple):
    """One user-facing setting: its field name, environment variable, flag, parser and default."""

    name: str
    env: str | None
    flag: str | None
    parse: Callable[[Any], Any]
    default: Any
    example: str


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "provider", "LLM_PROVIDER", "--provider", parse_provider, DEFAULT_PROVIDER, "anthropic"
    ),
    Setting("model", "LLM_MODEL", "--model", parse_model, None, "gpt-4o-mini"),
    Setting("system", "LLM_SYSTEM_PROMPT", "--system", parse_text, None, '"You are terse."'),
    Setting("temperature", "LLM_TEMPERATURE", "--temperature", parse_temperature, None, "0.7"),
    Setting(
        "max_tokens",
        "LLM_MAX_TOKENS",
        "--max-tokens",
        parse_max_tokens,
        DEFAULT_MAX_TOKENS,
        "1000",
    ),
    Setting("timeout", "LLM_TIMEOUT", "--timeout", parse_timeout, DEFAULT_TIMEOUT, "60"),
    Setting("retries", "LLM_MAX_RETRIES", "--retries", parse_retries, DEFAULT_RETRIES, "3"),
    Setting("tag", "LLM_TAG", "--tag", parse_tag, None, "nightly-report"),
    Setting("fallback", "LLM_FALLBACK", "--fallback", parse_fallback, (), "anthropic,gemini"),
    Setting("log", "LLMCLI_LOG", None, parse_log_switch, True, "0"),
    Setting("top_p", None, "--top-p", parse_top_p, None, "0.9"),
)
SETTINGS_BY_NAME = {s.name: s for s in SETTINGS}


class Environment:
    """The raw variables from the process environment and one `.env` file, with their sources.

    Empty or whitespace-only values count as unset: `export OPENAI_API_KEY=` is a missing key.
    The file is read once, into memory (`--env-file <(...)` is a pipe, readable only once), and
    `${VAR}` stays literal text: interpolation would let a `.env` copy any secret of the
    environment into a prompt, a tag and the log.

    A `.env` found in the current directory, not named with `--env-file`, is `implicit`: it may
    have come with a cloned repository, so it may not choose where a key from the environment is
    sent, nor where the log is written (`endpoint_refusal`, `home_refusal`).
    """

    #: Settings files larger than this are refused: python-dotenv's parser takes minutes on a
    #: few megabytes, and a real settings file is a few hundred bytes.
    MAX_BYTES = 1024 * 1024

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        env_file: str | os.PathLike | None = None,
        config_file: str | os.PathLike | None = None,
    ):
        self.environ = dict(os.environ if environ is None else environ)
        #: `--config`: the config file named on the command line (llmcli.endpoints)
        self.config_file = Path(config_file) if config_file is not None else None
        self.env_file: Path | None = None
        self.implicit = False
        self.dotenv: dict[str, str] = {}
        self.dotenv_text = ""  # the file as read, for `dotenv_problems`
        if env_file is not None:
            self._load(Path(env_file))
        elif Path(".env").is_file():  # a FIFO or folder named .env is not a settings file
            self.implicit = True
            self._load(Path(".env"))
        self._remember_keys()

    def _remember_keys(self) -> None:
        """Every provider key set anywhere is scrubbed from errors, not only the one in use."""
        from llmcli.secret import remember

        for name in providers.names():
            for var in providers.spec(name).key_env_vars:
                remember(self.environ.get(var), self.dotenv.get(var))

    def _load(self, path: Path) -> None:
        import io

        from dotenv import dotenv_values

        fix = (
            "fix or remove .env in the current directory"
            if self.implicit
            else "check the path given to --env-file"
        )
        self.dotenv_text = self._read(path, fix)
        # A pipe's resolved name (/proc/.../pipe:[123]) means nothing to the user: keep theirs.
        self.env_file = path.resolve() if path.is_file() else Path(os.path.abspath(path))
        values = dotenv_values(stream=io.StringIO(self.dotenv_text), interpolate=False)
        self.dotenv = {k: v for k, v in values.items() if v is not None}

    @classmethod
    def _read(cls, path: Path, fix: str) -> str:
        """The file's text, reading at most MAX_BYTES + 1 bytes, whatever kind of file it is.

        Any readable file but a folder will do (`/dev/null`, a pipe from `<(...)`), and every
        problem is a ConfigError (exit 3) with `fix` as its hint, whether the file was named or
        found.
        """
        chunks: list[bytes] = []
        left = cls.MAX_BYTES + 1
        try:
            with open(path, "rb", buffering=0) as stream:  # unbuffered: no read-ahead past `left`
                while left > 0 and (chunk := stream.read(left)):
                    chunks.append(chunk)
                    left -= len(chunk)
        except FileNotFoundError:
            raise errors.ConfigError(f"env file not found: {path}", fix) from None
        except IsADirectoryError:
            raise errors.ConfigError(f"env file {path} is a folder, not a file", fix) from None
        except OSError as exc:
            raise errors.ConfigError(
                f"cannot read env file {path}: {exc.strerror or exc}", fix
            ) from None
        if left <= 0:
            raise errors.ConfigError(
                f"env file {path} is over 1 MiB: too large for a settings file",
                f"{fix}; a settings file holds a few NAME=value lines",
            )
        try:
            text = b"".join(chunks).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise errors.ConfigError(f"cannot read env file {path}: {exc}", fix) from None
        # Universal newlines, as reading the file in text mode did.
        return text.replace("\r\n", "\n").replace("\r", "\n")

    def lookup(self, *names: str) -> tuple[str, Source, str] | None:
        """The first set variable among `names`: value, source and name.

        The process environment wins over `.env` whichever of the names it holds; within one
        source, earlier names win (Gemini: GOOGLE_API_KEY before GEMINI_API_KEY, as the SDK does).
        """
        layers = ((self.environ, ENVIRONMENT), (self.dotenv, Source(".env", str(self.env_file))))
        for values, source in layers:
            for name in names:
                value = values.get(name)
                if value is not None and value.strip():
                    return value, source, name
        return None

    def where_to_set(self, var: str) -> str:
        return f"Set it with: export {var}=your-key-here (or add it to {'.env' if self.env_file is None else self.env_file})"

    def untrusted(self, source: Source) -> bool:
        """Whether a value from `source` came from an implicit `.env` (maybe a cloned repository's)."""
        return self.implicit and source.kind == ".env"

    def trust_hint(self, var: str) -> str:
        return (
            f"export {var} yourself if you want it, or, if you trust {self.env_file}, "
            f"name it: llmcli --env-file {self.env_file} ..."
        )

    def endpoint_refusal(
        self,
        found: tuple[str, Source, str],
        key_var: str | None,
        key_source: Source | None,
    ) -> errors.ConfigError | None:
        """Why the base URL `found` may not be used with a key from `key_source`, or None.

        In a cloned repository, `git diff | llmcli ask` would otherwise send the key exported in
        the user's shell to whatever host the repository's `.env` names. A `.env` that holds the
        key itself, or one named with `--env-file`, is the user's own and is trusted.
        """
        if not self.untrusted(found[1]) or key_source is None or key_source.kind == ".env":
            return None
        from llmcli import redact

        var = found[2]
        return errors.ConfigError(
            f"{var}={redact.display_url(found[0])} in {self.env_file} is not used: a .env found "
            f"in the current directory may not choose where {key_var} from the {key_source} is sent",
            self.trust_hint(var),
        )

    def home_refusal(self) -> errors.ConfigError | None:
        """Why LLMCLI_HOME may not be taken from this environment's `.env`, or None.

        The log holds every prompt and answer: a repository's `.env` must not move it into the
        repository (`LLMCLI_HOME=./loot`) while the user's own keys are in use.
        """
        return self.location_refusal("LLMCLI_HOME", "move the call log")

    def location_refusal(self, var: str, what: str) -> errors.ConfigError | None:
        """Why `var` (LLMCLI_HOME, LLMCLI_CONFIG) may not come from this `.env`, or None: a
        repository's `.env` may not `what` while the user's own keys are in use (the config
        file names endpoints, so it could send a key elsewhere)."""
        found = self.lookup(var)
        if found is None or not self.untrusted(found[1]):
            return None
        key_vars = [
            var
            for name in providers.BUILTIN
            for var in providers.spec(name).key_env_vars
            if (self.environ.get(var) or "").strip()
        ]
        if not key_vars:
            return None
        from llmcli import redact

        return errors.ConfigError(
            f"{var}={redact.mask_keys(found[0].strip())} in {self.env_file} is not used: a "
            f".env found in the current directory may not {what} while {key_vars[0]} "
            "is set in the environment",
            self.trust_hint(var),
        )


class Settings(NamedTuple):
    """Validated values for one call, and where each came from (for `config show` and errors)."""

    provider: str
    model: str
    system: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int = DEFAULT_MAX_TOKENS
    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    tag: str | None = None
    fallback: tuple[str, ...] = ()  # `provider/model` (or `provider`) to try next, in order
    log: bool = True
    sources: Mapping[str, Source] = MappingProxyType({})


def _invalid(setting: Setting, raw: Any, source: Source, problem: str) -> errors.LlmcliError:
    from llmcli import redact

    # A key pasted into the wrong variable must not be echoed back: mask anything key-like.
    shown = redact.mask_keys(raw) if isinstance(raw, str) else raw
    if source is FLAG:
        return errors.UsageError(f"invalid value for {setting.flag}: {shown!r} {problem}")
    where = f" (from {source})" if source.kind == ".env" else ""
    return errors.ConfigError(
        f"invalid {setting.env}={redact.mask_keys(str(raw))!r}{where}: {problem}",
        f"Set it with: export {setting.env}={setting.example}",
    )


def _resolve(setting: Setting, flags: Mapping[str, Any], env: Environment) -> tuple[Any, Source]:
    flag_value = flags.get(setting.name)
    if flag_value is not None:
        raw, source = flag_value, FLAG
    elif setting.env and (found := env.lookup(setting.env)):
        raw, source = found[0], found[1]
    else:
        return setting.default, DEFAULT
    try:
        return setting.parse(raw), source
    except ValueError as exc:
        raise _invalid(setting, raw, source, str(exc)) from None


_RANK = {"flag": 3, "environment": 2, ".env": 2, "default": 0}


def _expand_model(values: dict[str, Any], sources: dict[str, Source], found: Any) -> None:
    """`-m provider/model` and `-m ALIAS` name the provider too, unless one named at least as
    strongly (`-p` beside `-m`) says otherwise: then a model name with a slash is the
    provider's own (an aggregator's `meta-llama/Llama-3-70b`), and an alias is a contradiction."""
    model, provider = values["model"], values["provider"]
    prefix, rest = found.expand(model)
    if prefix is None:
        values["model"] = rest
        return
    if prefix == provider:
        values["model"] = rest
        return
    if _RANK[sources["provider"].kind] >= _RANK[sources["model"].kind]:
        if model in found.aliases:
            by_flag = sources["model"] is FLAG
            named = "--model" if by_flag else "LLM_MODEL"
            chosen = "-p" if sources["provider"] is FLAG else "LLM_PROVIDER"
            raise (errors.UsageError if by_flag else errors.ConfigError)(
                f"{named}={model!r} is an alias of {prefix}/{rest}, but {chosen} is {provider}",
                f"leave {chosen} out (the alias names the provider), or name a model of {provider}",
            )
        return  # the provider's own model name, slash and all
    values["provider"], values["model"] = prefix, rest
    sources["provider"] = sources["model"]


def _fallbacks(values: dict[str, Any], sources: dict[str, Source], found: Any) -> tuple[str, ...]:
    """Each fallback as `provider/model` or `provider` (its default model), checked."""
    try:
        return found.chain(values["fallback"])
    except ValueError as exc:
        setting = SETTINGS_BY_NAME["fallback"]
        raise _invalid(
            setting, ",".join(values["fallback"]), sources["fallback"], str(exc)
        ) from None


def resolve(flags: Mapping[str, Any], env: Environment) -> Settings:
    """Validated settings from flags (None = not given) over the environment over defaults."""
    from llmcli import endpoints

    found = endpoints.load(env)  # named endpoints and aliases, before any name is checked
    values: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    for setting in SETTINGS:
        values[setting.name], sources[setting.name] = _resolve(setting, flags, env)

    # LLM_MODEL belongs with LLM_PROVIDER: when a flag picks another provider, a model set for the
    # first one would only earn a 404, so that provider's default model is used instead.
    env_provider = env.lookup("LLM_PROVIDER")
    model_for_other_provider = (
        sources["model"].kind in ("environment", ".env")
        and sources["provider"] is FLAG
        and (env_provider[0].strip().lower() if env_provider else DEFAULT_PROVIDER)
        != values["provider"]
    )
    if values["model"] is not None and not model_for_other_provider:
        _expand_model(values, sources, found)
    spec = providers.spec(values["provider"])
    if values["model"] is None or model_for_other_provider:
        values["model"], sources["model"] = spec.default_model, DEFAULT
    values["fallback"] = _fallbacks(values, sources, found)
    if (
        values["system"] == ""
    ):  # `-s ""` (or chat's `/system -`): no system prompt, whatever the env says
        values["system"] = None

    temperature = values["temperature"]
    low, high = providers.protocol(spec).temperature_range
    if temperature is not None and not low <= temperature <= high:
        setting = SETTINGS_BY_NAME["temperature"]
        raise _invalid(
            setting,
            temperature,
            sources["temperature"],
            f"is out of range for {values['provider']}: must be from {low:g} to {high:g}",
        )
    return Settings(**values, sources=sources)


_PLACEHOLDERS = frozenset({"your-key-here", "your_api_key", "changeme", "xxx", "..."})


def key_problem(key: str) -> str | None:
    """What makes a key unusable before it is even sent (copy-paste accidents, placeholders).

    A key with a line break or a non-ASCII character cannot travel in an HTTP header: the SDKs
    fail on it with messages that echo it, so it is refused here, before any network call.
    """
    if key.lower() in _PLACEHOLDERS or (key.startswith("<") and key.endswith(">")):
        return "is a placeholder, not a real key"
    if any(c.isspace() for c in key):
        return "contains spaces or line breaks"
    if any(c in "\"'`" for c in key):
        return "contains quote characters"
    if not key.isascii() or not key.isprintable():
        return "contains non-ASCII or control characters"
    return None


class Credentials(NamedTuple):
    """The key and endpoint for one provider. The key is a `Secret`: shown masked, always."""

    api_key: Secret | None
    key_var: str | None
    key_source: Source | None
    base_url: str | None
    base_url_source: Source | None

    def __repr__(self) -> str:
        """The endpoint without user, password or query: a base URL may carry credentials."""
        from llmcli.redact import display_url

        url = display_url(self.base_url) if self.base_url else None
        return (
            f"Credentials(api_key={self.api_key!r}, key_var={self.key_var!r}, "
            f"key_source={self.key_source!r}, base_url={url!r}, "
            f"base_url_source={self.base_url_source!r})"
        )


def credentials(provider: str, env: Environment, *, required: bool = True) -> Credentials:
    """The provider's key and base URL; a missing key is a ConfigError when `required`."""
    cls = providers.spec(provider)
    key = key_var = key_source = None
    if cls.key_env_vars and (found := env.lookup(*cls.key_env_vars)):
        key, key_source, key_var = found[0].strip(), found[1], found[2]
    if required and cls.key_env_vars and key is None:
        var = cls.key_env_vars[-1]
        also = f" (or {cls.key_env_vars[0]})" if len(cls.key_env_vars) > 1 else ""
        raise errors.ConfigError(
            f"Missing required environment variable: {var}{also}",
            env.where_to_set(var),
            provider=provider,
        )
    problem = key_problem(key) if key is not None else None
    if problem:
        raise errors.ConfigError(
            f"{key_var} {problem} (from {key_source})",
            f"copy the key again from {provider}'s console and set {key_var} to exactly that",
            provider=provider,
        )
    base_url = base_source = None
    if cls.base_url_env and (found := env.lookup(cls.base_url_env)):
        refusal = env.endpoint_refusal(found, key_var, key_source)
        if refusal is not None:
            refusal.provider = provider
            raise refusal
        try:
            base_url = parse_url(found[0])
        except ValueError as exc:
            from llmcli import redact

            raise errors.ConfigError(
                f"invalid {cls.base_url_env}={redact.display_url(found[0])!r}: {exc}",
                f"Set it with: export {cls.base_url_env}=https://... (or unset it to use the provider's own endpoint)",
            ) from None
        base_source = found[1]
    secret = Secret(key) if key is not None else None
    return Credentials(secret, key_var, key_source, base_url, base_source)


# --- for `config validate` and `config show`: report every problem, not only the first ----------


def invalid_setting(setting: Setting, raw: Any, source: Source, problem: str) -> errors.LlmcliError:
    """The error `resolve` raises for one bad value, so `config validate` words it identically."""
    return _invalid(setting, raw, source, problem)


class DotenvProblem(NamedTuple):
    """A statement in a `.env` file that python-dotenv could not parse (and therefore skipped).

    Only the line number and, when the line starts like `NAME=`, the variable's name are kept:
    the line's text may hold a key, so it is never shown.
    """

    line: int
    name: str | None


def dotenv_problems(source: Environment | str | os.PathLike) -> tuple[DotenvProblem, ...]:
    """The statements of a `.env` file python-dotenv cannot parse, with their line numbers.

    `dotenv_values` skips such a line and says so only through the `dotenv.main` logger, so a
    key that silently went missing would look like "not set"; this finds the lines with the same
    parser, so what is reported is exactly what was skipped. Given an `Environment`, it parses
    the text that was read: the file may be a pipe, which cannot be read a second time.
    """
    import io
    import re

    from dotenv.parser import parse_stream

    if isinstance(source, Environment):
        text = source.dotenv_text
    else:
        text = Environment._read(Path(source), "check the file's path")
    bindings = list(parse_stream(io.StringIO(text)))
    problems = []
    for binding in bindings:
        if binding.error:
            match = re.match(
                r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=", binding.original.string
            )
            problems.append(DotenvProblem(binding.original.line, match.group(1) if match else None))
    return tuple(problems)
