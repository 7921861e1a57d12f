"""Named endpoints and model aliases: `config.toml`, beside the log and `prices.toml`.

    [providers.ollama]
    protocol = "openai"                     # the wire it speaks: openai | anthropic | gemini
    base_url = "http://localhost:11434/v1"
    key_env = "OLLAMA_API_KEY"              # optional: the variable that holds its key
    default_model = "llama3.2"
    prices = "free"                         # or a genai-prices provider id; omitted: unknown

    [aliases]
    fast = "anthropic/claude-haiku-4-5"

An endpoint becomes one more `ProviderSpec` (`providers.register`), served by the module of the
protocol it speaks; an alias names a provider and a model (or another alias). Keys are never read
from this file, only from the environment variable it names. The file is read once per process
(per path and modification), and only by what needs provider names: `--help` never reads it.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

from llmcli import errors, providers
from llmcli.providers.base import ProviderSpec

if TYPE_CHECKING:
    from llmcli.budget import Budget
    from llmcli.config import Environment

PROTOCOLS = ("openai", "anthropic", "gemini")
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
_FIELDS = ("protocol", "base_url", "key_env", "default_model", "prices")
# Fields people write when they mean to put a key in the file: refused, with the fix.
_KEY_FIELDS = ("api_key", "key", "apikey", "token", "secret", "password", "auth", "authorization")
MAX_ALIAS_DEPTH = 8
MAX_BYTES = 1024 * 1024


class Endpoints(NamedTuple):
    """What `config.toml` adds: its path (None when there is none), endpoints and aliases."""

    path: Path | None
    providers: tuple[ProviderSpec, ...] = ()
    aliases: Mapping[str, str] = MappingProxyType({})
    budget: Budget | None = None  # [budget] (llmcli.budget)
    log_url: str | None = None  # [log] url: a team's PostgreSQL log (llmcli.logdb)

    def expand(self, model: str) -> tuple[str | None, str]:
        """`(provider, model)` from an alias, or from `provider/model`; (None, model) otherwise.

        `ollama/llama3.2` names the provider only when `ollama` is one; an aggregator's own
        model names (`meta-llama/Llama-3-70b`) are left whole.
        """
        for _ in range(MAX_ALIAS_DEPTH):  # loops were refused when the file was read
            if model not in self.aliases:
                break
            model = self.aliases[model]
        prefix, slash, rest = model.partition("/")
        if slash and rest and providers.known(prefix):
            return prefix, rest
        return None, model

    def chain(self, entries: tuple[str, ...]) -> tuple[str, ...]:
        """A fallback chain as `provider/model` or `provider` (its default model) each;
        ValueError naming an entry that is no provider and no alias."""
        resolved = []
        for entry in entries:
            prefix, rest = self.expand(entry)
            if prefix is not None:
                resolved.append(f"{prefix}/{rest}")
            elif providers.known(entry.lower()):
                resolved.append(entry.lower())
            else:
                known = ", ".join(providers.names())
                raise ValueError(f"names no provider or alias ({entry!r}); providers: {known}")
        return tuple(resolved)


_NONE = Endpoints(None)
_cache: dict[tuple[str, int, int], Endpoints] = {}

# How long a file's stat (and resolved path) is trusted. `serve` prepares every request, which
# stats config.toml (resolving its path) and prices.toml: about 0.05 ms a request for files that
# hardly ever change. A file written is still seen within this time (docs/serve.md).
STAT_TTL_S = 1.0
_seen: dict[tuple[str, str], tuple[float, Any]] = {}
_registered: tuple[str, ...] = ()
_current = _NONE


def current() -> Endpoints:
    """What the last `load` read (nothing, before any): for a check that must not fail twice."""
    return _current


def _problem(path: Path, where: str, what: str, fix: str) -> errors.ConfigError:
    return errors.ConfigError(f"{path}: {where}: {what}", fix)


def _recent(kind: str, path: Path, look: Callable[[Path], Any]) -> Any:
    """`look(path)` as it was at most `STAT_TTL_S` ago (a relative path, which depends on the
    working directory, is looked at every time)."""
    if not path.is_absolute():
        return look(path)
    key, now = (kind, os.fspath(path)), time.monotonic()
    seen = _seen.get(key)
    if seen is not None and now - seen[0] < STAT_TTL_S:
        return seen[1]
    value = look(path)
    if len(_seen) >= 256:  # paths come from settings: a few; never let them grow unbounded
        _seen.clear()
    _seen[key] = (now, value)
    return value


def _stat(path: Path) -> os.stat_result | OSError:
    try:
        return os.stat(path)
    except OSError as exc:
        return exc


def recent_stat(path: Path) -> os.stat_result:
    """`path.stat()` as it was at most `STAT_TTL_S` ago; raises its OSError likewise."""
    info = _recent("stat", path, _stat)
    if isinstance(info, OSError):
        raise info
    return info


def recent_is_file(path: Path) -> bool:
    """`path.is_file()` as it was at most `STAT_TTL_S` ago."""
    info = _recent("stat", path, _stat)
    return not isinstance(info, OSError) and stat.S_ISREG(info.st_mode)


def location(env: Environment) -> Path | None:
    """The config file to read: `--config`, else LLMCLI_CONFIG, else `$LLMCLI_HOME/config.toml`
    when it exists; None when there is none to read."""
    from llmcli import paths

    named = getattr(env, "config_file", None)
    if named is not None:
        return Path(named)
    refusal = env.location_refusal("LLMCLI_CONFIG", "choose the config file")
    if refusal is not None:
        raise refusal
    found = env.lookup("LLMCLI_CONFIG")
    if found is not None:
        return Path(found[0].strip()).expanduser()
    default = paths.home(env) / "config.toml"
    return default if recent_is_file(default) else None


def load(env: Environment) -> Endpoints:
    """Read the config file (once per path and modification) and register its endpoints."""
    path = location(env)
    if path is None:
        _register(_NONE)
        return _NONE
    try:
        info = recent_stat(path)
    except OSError as exc:
        raise errors.ConfigError(
            f"cannot read the config file {path}: {exc.strerror or exc}",
            "check the path given with --config or LLMCLI_CONFIG",
        ) from None
    key = (_recent("resolved", path, lambda p: str(p.resolve())), info.st_mtime_ns, info.st_size)
    found = _cache.get(key)
    if found is None:
        found = _parse(path, _remembered(env, path, key))
        _cache[key] = found
    refusal = _key_refusal(env, found)
    if refusal is not None:
        raise refusal
    _register(found)
    return found


def _key_refusal(env: Environment, found: Endpoints) -> errors.ConfigError | None:
    """Why a config file chosen by a `.env` found in the current directory may not be used.

    `key_env` may name any variable (GROQ_API_KEY, GITHUB_TOKEN...), so a cloned repository's
    `.env` pointing LLMCLI_CONFIG (or LLMCLI_HOME, whose config.toml is read) at its own file
    could send any key exported in the user's shell to a host of its choosing. Such a file is
    used only while none of the keys it reads comes from the process environment; `--config`,
    an exported variable and a `.env` named with `--env-file` are the user's own choice.
    """
    if getattr(env, "config_file", None) is not None or not env.implicit:
        return None
    chooser = env.lookup("LLMCLI_CONFIG") or env.lookup("LLMCLI_HOME")
    if chooser is None or chooser[1].kind != ".env":
        return None
    for spec in found.providers:
        for var in spec.key_env_vars:
            if (env.environ.get(var) or "").strip():
                from llmcli import redact

                name = chooser[2]
                return errors.ConfigError(
                    f"{name}={redact.mask_keys(chooser[0].strip())} in {env.env_file} is not "
                    "used: a .env found in the current directory may not choose where "
                    f"{var} from the environment is sent (endpoint {spec.name} in {found.path})",
                    f"export {name} yourself if you want it, or, if you trust {env.env_file}, "
                    f"name it: llmcli --env-file {env.env_file} ...",
                )
    return None


def _register(found: Endpoints) -> None:
    """Make `found`'s endpoints the registered ones (a different file replaces the last)."""
    global _registered, _current
    _current = found
    names = tuple(p.name for p in found.providers)
    if names == _registered and all(
        providers.known(n) and providers.spec(n) == p
        for n, p in zip(names, found.providers, strict=True)
    ):
        return
    for name in _registered:
        providers.unregister(name)
    for spec in found.providers:
        providers.register(spec)
    _registered = names
    from llmcli.secret import remember

    for spec in found.providers:
        for var in spec.key_env_vars:
            remember(os.environ.get(var))


def _read(path: Path) -> dict[str, Any]:
    import tomllib

    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_BYTES + 1)
    except OSError as exc:
        raise errors.ConfigError(
            f"cannot read the config file {path}: {exc.strerror or exc}",
            "check the path given with --config or LLMCLI_CONFIG, and its permissions",
        ) from None
    if len(data) > MAX_BYTES:
        raise errors.ConfigError(
            f"the config file {path} is over 1 MiB; it is not a config file",
            "point --config or LLMCLI_CONFIG at llmcli's config.toml",
        )
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise errors.ConfigError(f"{path} is not UTF-8 text", "save it as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise errors.ConfigError(
            f"{path} is not valid TOML: {exc}",
            "fix that line; docs/endpoints.md shows the format",
        ) from None


def _remembered(env: Environment, path: Path, key: tuple[str, int, int]) -> dict[str, Any]:
    """The file's content, parsed: from `$LLMCLI_HOME/config.cache.json` while the file is
    unchanged, else read with tomllib (and remembered there for the next command).

    Importing tomllib costs about 3 ms, more than a command should pay for a few lines it read
    a moment ago; json is loaded already. The cache lives in the private llmcli folder, and only
    when that folder exists (reading settings never creates it); it is checked against the
    file's path, modification time and size, and its content is validated like the file's.
    """
    import json

    from llmcli import paths

    try:
        home = paths.home(env)
    except errors.LlmcliError:
        return _read(path)
    cache = home / "config.cache.json"
    try:
        remembered = json.loads(cache.read_text(encoding="utf-8"))
        if remembered.get("key") == list(key) and isinstance(remembered.get("data"), dict):
            return remembered["data"]
    except (OSError, ValueError, AttributeError):
        pass
    data = _read(path)
    if home.is_dir():
        try:
            text = json.dumps({"key": list(key), "data": data})
            partial = cache.with_name(f".{cache.name}.{os.getpid()}")
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as stream:
                stream.write(text)
            os.replace(partial, cache)
        except (OSError, TypeError, ValueError):  # a TOML date has no JSON form: not cached
            pass
    return data


def _parse(path: Path, data: dict[str, Any]) -> Endpoints:
    unknown = sorted(set(data) - {"providers", "aliases", "budget", "log"})
    if unknown:
        raise _problem(
            path,
            f"[{unknown[0]}]",
            "is not a section llmcli reads",
            "use [providers.NAME], [aliases], [budget] and [log] (prices go in prices.toml)",
        )
    tables = data.get("providers", {})
    if not isinstance(tables, dict):
        raise _problem(path, "providers", "must be tables", "write [providers.NAME] sections")
    specs = tuple(_endpoint(path, name, table) for name, table in tables.items())
    aliases = data.get("aliases", {})
    if not isinstance(aliases, dict):
        raise _problem(path, "aliases", "must be a table", 'write [aliases] then fast = "p/m"')
    names = {spec.name for spec in specs}
    for alias, target in aliases.items():
        _check_alias(path, alias, target, aliases, names)
    budget = None
    if "budget" in data:
        from llmcli import budget as budgets

        try:
            budget = budgets.from_table(data["budget"], "[budget]")
        except ValueError as exc:
            raise errors.ConfigError(
                f"{path}: {exc}", "see docs/cost.md for the [budget] section"
            ) from None
    return Endpoints(path, specs, MappingProxyType(dict(aliases)), budget, _log_url(path, data))


def _log_url(path: Path, data: dict[str, Any]) -> str | None:
    """`[log] url`: where a team keeps its shared log (docs/team.md); None when not set."""
    table = data.get("log")
    if table is None:
        return None
    fix = 'write [log] then url = "postgresql://user@host:5432/dbname" (docs/team.md)'
    if not isinstance(table, dict):
        raise _problem(path, "log", "must be a table", fix)
    unknown = sorted(set(table) - {"url"})
    if unknown:
        raise _problem(path, f"[log] {unknown[0]}", "is not a setting llmcli reads", fix)
    url = table.get("url")
    if url is None:
        return None
    if not isinstance(url, str):
        raise _problem(path, "[log] url", "must be a string", fix)
    return url.strip() or None


def _endpoint(path: Path, name: str, table: Any) -> ProviderSpec:
    where = f"[providers.{name}]"
    if not isinstance(table, dict):
        raise _problem(path, where, "must be a table", f"write [providers.{name}] and its fields")
    if name in providers.BUILTIN:
        raise _problem(
            path,
            where,
            f"would shadow the built-in provider {name!r}",
            f"give the endpoint another name, e.g. [providers.my-{name}]",
        )
    if not _NAME.match(name):
        raise _problem(
            path,
            where,
            "is not a usable name",
            "use lowercase letters, digits, - and _ (at most 40), starting with a letter",
        )
    inline = [k for k in table if k.lower() in _KEY_FIELDS]
    if inline:
        raise _problem(
            path,
            f"{where} {inline[0]}",
            "a key is never read from the config file",
            f'put the key in an environment variable and name it: key_env = "{name.upper()}_API_KEY"',
        )
    unknown = [k for k in table if k not in _FIELDS]
    if unknown:
        raise _problem(
            path,
            f"{where} {unknown[0]}",
            "is not a field llmcli reads",
            f"use {', '.join(_FIELDS)}",
        )
    protocol = table.get("protocol")
    if protocol not in PROTOCOLS:
        shown = "missing" if protocol is None else f"{protocol!r} is not a protocol llmcli speaks"
        raise _problem(
            path, f"{where} protocol", shown, 'set protocol = "openai" (or "anthropic", "gemini")'
        )
    from llmcli import config, redact

    base_url = table.get("base_url")
    if not isinstance(base_url, str):
        raise _problem(
            path,
            f"{where} base_url",
            "missing",
            'set base_url, e.g. "http://localhost:11434/v1" (OpenAI-compatible servers end in /v1)',
        )
    try:
        config.parse_url(base_url)
    except ValueError as exc:
        raise _problem(
            path, f"{where} base_url={redact.display_url(base_url)!r}", str(exc), "fix the URL"
        ) from None
    key_env = table.get("key_env")
    # A Groq key (`gsk_` and letters) is a valid variable name: judged by its looks as well,
    # or it would be echoed as "missing variable gsk_..." by every command and `config show`.
    if key_env is not None and not (
        isinstance(key_env, str) and _VARIABLE.match(key_env) and not redact.looks_like_key(key_env)
    ):
        shown = redact.mask_keys(str(key_env))
        raise _problem(
            path,
            f"{where} key_env={shown!r}",
            "must name an environment variable, not hold the key",
            f'key_env = "{name.upper()}_API_KEY", and export that variable',
        )
    model = table.get("default_model")
    try:
        model = config.parse_model(model) if isinstance(model, str) else None
    except ValueError as exc:
        raise _problem(path, f"{where} default_model", str(exc), "name the model to use") from None
    if model is None:
        raise _problem(
            path, f"{where} default_model", "missing", 'set default_model, e.g. "llama3.2"'
        )
    prices = table.get("prices")
    if prices is not None and not (isinstance(prices, str) and prices.strip()):
        raise _problem(
            path,
            f"{where} prices",
            'must be "free" or a genai-prices provider id',
            'prices = "free", or e.g. prices = "groq"; leave it out when prices are unknown',
        )
    free = prices == "free"
    return ProviderSpec(
        name=name,
        protocol=protocol,
        default_model=model,
        key_env_vars=(key_env,) if key_env else (),
        base_url=base_url.strip(),
        pricing_id=None if free or prices is None else prices.strip(),
        free=free,
    )


def _check_alias(
    path: Path, alias: Any, target: Any, aliases: Mapping[str, Any], names: set[str]
) -> None:
    where = f"[aliases] {alias}"
    if not isinstance(target, str) or not target.strip():
        raise _problem(path, where, "must be a string", f'{alias} = "provider/model"')
    if "/" in alias or alias in providers.BUILTIN or alias in names:
        raise _problem(
            path, where, "is not a usable alias name", "use a name that is not a provider's"
        )
    seen = [alias]
    current = target
    while current in aliases:
        if current in seen:
            loop = " -> ".join([*seen, current])
            raise _problem(path, where, f"is a loop: {loop}", "point one of them at provider/model")
        seen.append(current)
        current = aliases[current]
        if not isinstance(current, str):
            return  # reported for that alias
    prefix, slash, rest = current.partition("/")
    if not (slash and rest) or not (prefix in providers.BUILTIN or prefix in names):
        known = ", ".join([*providers.BUILTIN, *sorted(names)])
        raise _problem(
            path,
            where,
            f"points at {current!r}, which names no provider",
            f'write provider/model, e.g. "anthropic/claude-haiku-4-5"; providers: {known}',
        )
