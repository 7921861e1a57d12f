"""`llmcli config validate` and `config show` as a library: every check, every problem, no Click.

`ask` fails fast on the first bad setting; a deploy check must instead report every problem at
once, each with where its value came from and how to fix it, so CI can be fixed in one round.
The checks reuse `config`'s parsers, lookups and error wording, so `validate` can never accept
what `ask` would refuse, nor word a problem differently.

Without `live=True` nothing here imports a provider SDK or touches the network: the provider
modules are light, and their SDKs are imported only inside `list_models`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llmcli import config, errors, paths, providers, redact

# Statuses. Only `ok`, `warning` and `skipped` pass; every other one carries a non-zero exit code.
OK = "ok"
MISSING = "missing"
INVALID = "invalid"
REJECTED = "rejected"  # --live: the provider refused the key (exit 4)
UNREACHABLE = "unreachable"  # --live: no answer from the endpoint (exit 7)
FAILED = "failed"  # --live: any other provider failure (its own exit code)
WARNING = "warning"  # worth knowing, not a failure (e.g. LLM_MODEL not in the provider's list)
SKIPPED = "skipped"  # --live not attempted because a check it depends on failed

#: Seconds a live check waits when LLM_TIMEOUT is not set: long enough for a slow proxy, short
#: enough that a container start-up script does not hang a minute on a black-holed address.
LIVE_TIMEOUT = 10.0

# Placeholders people paste from examples (ours included) instead of a real key.
_ERROR_CLASSES: dict[int, type[errors.LlmcliError]] = {
    int(cls.exit_code): cls
    for cls in (
        errors.ConfigError,
        errors.AuthError,
        errors.RateLimitError,
        errors.ProviderError,
        errors.NetworkError,
        errors.RequestRejected,
    )
}


@dataclass(frozen=True)
class Check:
    """One line of the report: what was checked, its status, and what to do about a problem.

    `value` is always safe to print: keys are masked, URLs lose credentials and query strings.
    `problem` is the short reason for the table; `message` is the full sentence `ask` would print
    for the same problem; `fix` says what to do. `exit_code` is 0 for a passing check.
    """

    check: str
    variable: str
    status: str
    source: str | None = None
    value: str | None = None
    problem: str | None = None
    message: str | None = None
    fix: str | None = None
    provider: str | None = None
    exit_code: int = 0

    @property
    def failed(self) -> bool:
        return self.exit_code != 0

    def advice(self) -> str:
        """The reason and the fix in one cell: `must be ... Set it with: export ...`."""
        fix = self.fix[:1].upper() + self.fix[1:] if self.fix else ""
        if self.problem and fix:
            return f"{self.problem.rstrip('.')}. {fix}"
        return self.problem or fix

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Report:
    """The result of `validate`: the checks in order, and what they add up to."""

    checks: tuple[Check, ...]
    providers: tuple[str, ...]
    live: bool
    env_file: str | None

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.failed)

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def exit_code(self) -> int:
        """0 when everything passed; else the most fundamental failure's code.

        A configuration problem (3) wins over a rejected key (4) over a network failure (7): the
        smaller code names the problem to fix first, and the result does not depend on the order
        in which providers were checked.
        """
        return min((c.exit_code for c in self.failures), default=0)

    @property
    def decisive(self) -> Check | None:
        """The first failure with the reported exit code: the one the `Error:` line describes."""
        return next((c for c in self.failures if c.exit_code == self.exit_code), None)

    def error(self, where: str = "in the table above") -> errors.LlmcliError | None:
        """The failure as our typed error (right exit code, message and fix), or None if ok."""
        check = self.decisive
        if check is None:
            return None
        cls = _ERROR_CLASSES.get(check.exit_code, errors.LlmcliError)
        hint = check.fix
        others = len(self.failures) - 1
        if others:
            more = f"{others} more problem{'s' if others > 1 else ''} listed {where}"
            hint = f"{hint}\n{more}" if hint else more
        return cls(check.message or check.problem or check.status, hint, provider=check.provider)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document `config validate --json` prints."""
        return {
            "ok": self.ok,
            "exit_code": self.exit_code,
            "live": self.live,
            "providers": list(self.providers),
            "env_file": self.env_file,
            "checks": [c.to_dict() for c in self.checks],
        }


@dataclass(frozen=True)
class Shown:
    """One line of `config show`: an effective setting, its printable value and its source."""

    setting: str
    variable: str
    value: str
    source: str
    note: str = ""

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


# --- loading ------------------------------------------------------------------------------------


@contextlib.contextmanager
def _dotenv_log_silenced() -> Iterator[None]:
    """Mute python-dotenv's "could not parse" log line: the checks report it, with the fix."""
    import logging  # only when a .env file is read: python-dotenv imports it then anyway

    logger = logging.getLogger("dotenv.main")
    previous = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = previous


def load_environment(
    env_file: str | os.PathLike | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: str | os.PathLike | None = None,
) -> config.Environment:
    """The process environment plus `.env` (or `env_file`), as every command reads them."""
    if env_file is None and not os.path.isfile(".env"):
        # No file to parse: skip importing logging.
        return config.Environment(environ, config_file=config_file)
    with _dotenv_log_silenced():
        return config.Environment(environ, env_file=env_file, config_file=config_file)


def _config_checks(env: config.Environment) -> list[Check]:
    """`config.toml`, if there is one: its endpoints and aliases, or what is wrong with it.

    Read before any provider name is judged, since it adds names; a broken file is one failing
    row, and the built-in providers are still checked.
    """
    from llmcli import endpoints

    try:
        found = endpoints.load(env)
    except errors.LlmcliError as exc:
        try:  # the file that was read (LLMCLI_CONFIG's too), or the variable that was refused
            where = str(endpoints.location(env) or "config.toml")
        except errors.LlmcliError:
            where = "LLMCLI_CONFIG"
        return [
            Check(
                "config",
                where,
                INVALID,
                problem=exc.message,
                message=exc.message,
                fix=exc.hint,
                exit_code=int(errors.ExitCode.CONFIG),
            )
        ]
    if found.path is None:
        return []
    names = ", ".join(p.name for p in found.providers) or "no endpoints"
    aliases = f"; aliases: {', '.join(found.aliases)}" if found.aliases else ""
    rows = [Check("config", str(found.path), OK, "file", f"{names}{aliases}")]
    priced = [spec for spec in found.providers if spec.pricing_id]
    if priced:  # genai-prices loads only when an endpoint names its prices
        from llmcli import catalog

        prices = catalog.GenaiPrices()
        for spec in priced:
            if prices.provider(spec.pricing_id) is None:
                why = catalog.unknown_prices_id(spec, prices)
                rows.append(
                    Check(
                        "config",
                        f"[providers.{spec.name}] prices",
                        WARNING,
                        "file",
                        spec.pricing_id,
                        problem=why,
                        message=why,
                        fix="use an id genai-prices knows, or leave prices out",
                    )
                )
    return rows


# --- small helpers ------------------------------------------------------------------------------


def cell(text: str | None, width: int | None = 40) -> str:
    """A value for a table cell: one line, cut to `width` characters (a prompt can be pages long;
    None: never cut).

    Only for display, and only after `_scrubbed`: cutting first could leave a key's first
    characters unrecognised by the scrub.
    """
    text = " ".join(str(text or "").split())
    return text if width is None or len(text) <= width else text[: width - 3] + "..."


def _config_error(call: Callable[[], object]) -> errors.LlmcliError | None:
    """The ConfigError a `config` function raises, so its exact wording is reused."""
    try:
        call()
    except errors.LlmcliError as exc:
        return exc
    return None


def _secrets(env: config.Environment) -> list[str]:
    """Every key value in either layer, so no printed text can carry one by accident."""
    names = {var for name in providers.names() for var in providers.spec(name).key_env_vars}
    found = []
    for layer in (env.environ, env.dotenv):
        for var in names:
            value = layer.get(var)
            if value and value.strip():
                found += [value, value.strip()]
    return found


def _scrubbed(item: Any, secrets: list[str]) -> Any:
    """A copy of a Check or Shown whose every text field is scrubbed of the keys in use."""
    changes = {
        f.name: redact.scrub(value, secrets)
        for f in dataclasses.fields(item)
        if isinstance(value := getattr(item, f.name), str)
    }
    return dataclasses.replace(item, **changes)


def _source_of(found: tuple[str, config.Source, str] | None) -> str | None:
    return str(found[1]) if found else None


# --- validate -----------------------------------------------------------------------------------


def validate(
    *,
    env_file: str | os.PathLike | None = None,
    environ: Mapping[str, str] | None = None,
    provider_names: Sequence[str] = (),
    all_providers: bool = False,
    live: bool = False,
    config_file: str | os.PathLike | None = None,
) -> Report:
    """Check the `.env` file, every LLM_* setting that is set, and each selected provider.

    Providers: every one with `all_providers` (the endpoints of `config.toml` too), else
    `provider_names`, else LLM_PROVIDER (or openai); plus every provider of the LLM_FALLBACK chain.
    `live` adds one free request per provider (list models) through its SDK; without it no SDK is
    imported and nothing touches the network. Never raises for a configuration problem: each one
    becomes a failing `Check`.
    """
    try:
        env = load_environment(env_file, environ, config_file)
    except errors.LlmcliError as exc:
        # A missing or unreadable --env-file: nothing else can be judged without it.
        check = Check(
            ".env",
            str(env_file) if env_file is not None else ".env",
            MISSING if env_file is not None and not os.path.exists(env_file) else INVALID,
            source=str(config.FLAG) if env_file is not None else None,
            problem=exc.message,
            message=exc.message,
            fix=exc.hint or "check the file's path and that it is UTF-8 text",
            exit_code=int(errors.ExitCode.CONFIG),
        )
        return Report((check,), (), live, str(env_file) if env_file else None)

    problems = config.dotenv_problems(env) if env.env_file else ()
    checks: list[Check] = _dotenv_checks(env, problems)
    checks += _config_checks(env)
    unknown = [n for n in provider_names if not providers.known(n.strip().lower())]
    if unknown:
        raise errors.UsageError(
            f"unknown provider: {', '.join(unknown)}",
            f"choose from: {', '.join(providers.names())}",
        )
    names, selection = _selection(env, provider_names, all_providers)
    names += [n for n in _fallback_providers(env) if n not in names]
    checks += selection
    checks += _setting_checks(env, names)
    checks += _home_checks(env)
    checks += _log_checks(env, live)
    checks += _prices_checks(env)
    checks += _budget_checks(env)
    checks += _schema_checks(env)
    # A key on a line python-dotenv skipped looks "not set"; the fix should point at that line.
    unparsed = {p.name: p.line for p in problems if p.name}
    usable: dict[str, config.Credentials] = {}
    for name in names:
        provider_checks, creds = _provider_checks(name, env, unparsed)
        checks += provider_checks
        if creds is not None:
            usable[name] = creds
    if live:
        for name in names:
            checks += _live_checks(name, env, usable.get(name))
    secrets = _secrets(env)
    return Report(
        tuple(_scrubbed(c, secrets) for c in checks),
        tuple(names),
        live,
        str(env.env_file) if env.env_file else None,
    )


def _schema_checks(env: config.Environment) -> list[Check]:
    """LLM_SCHEMA, read as `ask` reads it (a file, inline JSON or the concise form)."""
    found = env.lookup("LLM_SCHEMA")
    if found is None:
        return []
    raw, source = found[0], found[1]
    from llmcli import core

    shown = redact.mask_keys(raw.strip())
    shown = shown if len(shown) <= 60 else shown[:59] + "…"
    try:
        core._schema({}, env)
    except errors.LlmcliError as exc:
        return [
            Check(
                "settings",
                "LLM_SCHEMA",
                INVALID,
                str(source),
                shown,
                problem=exc.message,
                message=exc.message,
                fix=exc.hint,
                exit_code=int(errors.ExitCode.CONFIG),
            )
        ]
    return [Check("settings", "LLM_SCHEMA", OK, str(source), shown)]


def _configured_budget(env: config.Environment) -> tuple[Any, bool]:
    """config.toml's `[budget]` as `ask` reads it (None when absent), and whether the file could
    be read at all (a broken one has its own row)."""
    from llmcli import endpoints

    try:
        return endpoints.load(env).budget, True
    except errors.LlmcliError:
        return None, False


def _budget_checks(env: config.Environment) -> list[Check]:
    """Each spending limit in force, and each malformed one, which would refuse every call.

    The environment's limits are parsed by the function `ask` uses (`budget.env_limit`), so a
    value passes here exactly when a call would accept it. A malformed `[budget]` table fails
    the config.toml row already (`_config_checks`).
    """
    from llmcli import budget

    configured = _configured_budget(env)[0] or budget.Budget()
    rows = []
    for var, field, name in (
        (budget.ENV_DAILY, "daily_usd", "daily"),
        (budget.ENV_MONTHLY, "monthly_usd", "monthly"),
    ):
        from_file = getattr(configured, field)
        try:
            found = budget.env_limit(env, var)
            refusal = None if found is None else budget.raise_refusal(env, var, found, from_file)
            if refusal is not None:
                raise refusal
        except errors.LlmcliError as exc:
            raw, source, _ = env.lookup(var) or ("", config.DEFAULT, var)
            rows.append(
                Check(
                    "budget",
                    var,
                    INVALID,
                    str(source),
                    redact.mask_keys(raw.strip()),
                    problem=_usd_problem(raw) or exc.message,
                    message=exc.message,
                    fix=exc.hint,
                    exit_code=int(errors.ExitCode.CONFIG),
                )
            )
            continue
        if found is not None:
            over = (
                f"; wins over config.toml's {budget.dollars(from_file)}"
                if from_file is not None
                else ""
            )
            rows.append(
                Check(
                    "budget",
                    var,
                    OK,
                    str(found[1]),
                    budget.dollars(found[0]),
                    problem=f"{name} limit{over}",
                )
            )
        elif from_file is not None:
            rows.append(
                Check(
                    "budget",
                    f"[budget] {field}",
                    OK,
                    "config.toml",
                    budget.dollars(from_file),
                    problem=f"{name} limit",
                )
            )
    for tag, limit in configured.tags.items():
        rows.append(
            Check(
                "budget",
                f"[budget.tags] {tag}",
                OK,
                "config.toml",
                budget.dollars(limit),
                problem=f"daily limit for calls tagged {tag}",
            )
        )
    if configured.allow_unpriced:
        rows.append(
            Check(
                "budget",
                "[budget] allow_unpriced",
                OK,
                "config.toml",
                "true",
                problem="models with no known price are sent, and count as $0",
            )
        )
    return rows


def _usd_problem(raw: str) -> str | None:
    """What is wrong with an amount in USD, in the words `ask` uses (None: nothing)."""
    from llmcli import budget

    try:
        budget.parse_usd(raw)
    except ValueError as exc:
        return str(exc)
    return None


def _prices_checks(env: config.Environment) -> list[Check]:
    """`prices.toml`, if there is one: every remote call refuses to start when it is malformed."""
    from llmcli import pricing

    if _home_checks(env):
        return []  # no usable folder: `_home_checks` says why
    path = paths.prices_file(env)
    if not path.is_file():
        return []
    problem = _config_error(lambda: pricing.load_overrides(path))
    if problem is None:
        return [Check("prices", str(path), OK, "file")]
    return [
        Check(
            "prices",
            str(path),
            INVALID,
            "file",
            problem=problem.message,
            message=problem.message,
            fix="see docs/cost.md for the format",
            exit_code=int(errors.ExitCode.CONFIG),
        )
    ]


def _home_checks(env: config.Environment) -> list[Check]:
    """A failing row when LLMCLI_HOME is refused, or the folder is not the user's alone."""
    found = env.lookup("LLMCLI_HOME")
    problem = env.home_refusal()
    if problem is None:
        problem = paths.folder_problem(paths.home(env))
    if problem is None:
        return []
    return [
        Check(
            "settings",
            "LLMCLI_HOME",
            INVALID,
            _source_of(found) or str(config.DEFAULT),
            redact.mask_keys(found[0].strip()) if found else None,
            problem=problem.message,
            message=problem.message,
            fix=problem.hint,
            exit_code=int(errors.ExitCode.CONFIG),
        )
    ]


def _log_checks(env: config.Environment, live: bool) -> list[Check]:
    """A team log (LLMCLI_DB or `[log] url`): its URL's form and its driver; with `live`, the
    server's version and the schema's. The local log has no row: it has nothing to check."""
    from llmcli import logdb

    found = env.lookup("LLMCLI_DB")
    variable = "LLMCLI_DB" if found is not None else "[log] url"
    source = _source_of(found) or "config.toml"
    try:
        where = logdb.target(env)
        if not where.shared:
            return []
        logdb.require_driver(where)
    except errors.LlmcliError as exc:
        shown = redact.display_url(found[0]) if found else None
        return [
            Check("log", variable, INVALID, source, shown, problem=exc.message,
                  message=exc.message, fix=exc.hint, exit_code=int(errors.ExitCode.CONFIG))
        ]  # fmt: skip
    if found is None:
        source = where.source or source
    row = Check("log", variable, OK, source, where.location, problem="a team log on PostgreSQL")
    if not live:
        return [row]
    return [row, _live_log_check(where, variable)]


def _live_log_check(where: Any, variable: str) -> Check:
    """Connect to the team log (without migrating it): the server's and the schema's versions."""
    from llmcli import logtrouble
    from llmcli.calllog import LogFailure
    from llmcli.pgstore import MIGRATIONS, PgStore

    try:
        with PgStore(where.url, migrate=False) as log:
            server, schema = log.server_version(), log.version
    except LogFailure as exc:
        trouble = logtrouble.describe(exc.error, where.location, writing=False)
        away = trouble.kind == "unreachable"
        return Check(
            "log live", variable, UNREACHABLE if away else FAILED, None, where.location,
            problem=trouble.message, message=trouble.message, fix=trouble.hint,
            exit_code=int(errors.ExitCode.NETWORK if away else errors.ExitCode.CONFIG),
        )  # fmt: skip
    latest = len(MIGRATIONS)
    if schema == 0:
        state = "not created yet (the first call creates it)"
    elif schema < latest:
        state = f"{schema} of {latest} (the next call migrates it)"
    else:
        state = f"{schema}" + (" (newer than this llmcli knows)" if schema > latest else "")
    return Check(
        "log live", variable, OK, None, where.location,
        problem=f"PostgreSQL {server}, schema version {state}",
    )  # fmt: skip


def _dotenv_checks(
    env: config.Environment, problems: Sequence[config.DotenvProblem]
) -> list[Check]:
    """One row for the `.env` file in use, or one per line python-dotenv could not parse."""
    if env.env_file is None:
        return []
    path = str(env.env_file)
    source = str(config.Source(".env", path))
    if not problems:
        return [Check(".env", path, OK, source=source)]
    rows = []
    for problem in problems:
        what = f" ({problem.name})" if problem.name else ""
        rows.append(
            Check(
                ".env",
                f"line {problem.line}{what}",
                INVALID,
                source=source,
                problem="python-dotenv cannot parse this line, so it is ignored",
                message=f"cannot parse line {problem.line}{what} of {path}; it is ignored",
                fix="Write it as NAME=value; quote a value that has spaces or #, and close every quote",
                exit_code=int(errors.ExitCode.CONFIG),
            )
        )
    return rows


def _selection(
    env: config.Environment, requested: Sequence[str], all_providers: bool
) -> tuple[list[str], list[Check]]:
    """Which providers to check, and a row saying so when a flag chose them."""
    if all_providers:
        names = providers.names()
        return names, [Check("providers", "--all", OK, str(config.FLAG), ", ".join(names))]
    if requested:
        names = list(dict.fromkeys(n.strip().lower() for n in requested))
        return names, [Check("providers", "--provider", OK, str(config.FLAG), ", ".join(names))]
    found = env.lookup("LLM_PROVIDER")
    if found is None:
        default = config.DEFAULT_PROVIDER
        row = Check("settings", "LLM_PROVIDER", OK, str(config.DEFAULT), default)
        return [default], [row]
    try:
        return [config.parse_provider(found[0])], []
    except ValueError:
        return [], []  # the settings rows report the unknown provider


def _fallback_providers(env: config.Environment) -> list[str]:
    """The providers of the LLM_FALLBACK chain (a bad entry is reported as a setting)."""
    found = env.lookup("LLM_FALLBACK")
    if found is None:
        return []
    try:
        chain = _fallback_problem_free(found[0])
    except ValueError:
        return []
    return list(dict.fromkeys(entry.partition("/")[0] for entry in chain))


def _fallback_problem_free(raw: str) -> tuple[str, ...]:
    """LLM_FALLBACK resolved as `ask` resolves it (ValueError saying what is wrong)."""
    from llmcli import endpoints

    return endpoints.current().chain(config.parse_fallback(raw))


def _setting_checks(env: config.Environment, names: list[str]) -> list[Check]:
    """Every LLM_* (and LLMCLI_*) setting that is set: parsed as `ask` would parse it."""
    rows = []
    for setting in config.SETTINGS:
        if setting.env is None:
            continue
        found = env.lookup(setting.env)
        if found is None:
            continue
        raw, source = found[0], found[1]
        try:
            value = setting.parse(raw)
            problem = None
            if setting.name == "temperature":
                problem = _temperature_problem(value, names)
            elif setting.name == "fallback":
                _fallback_problem_free(raw)
        except ValueError as exc:
            problem = str(exc)
        if problem is None:
            rows.append(Check("settings", setting.env, OK, str(source), raw.strip()))
            continue
        error = config.invalid_setting(setting, raw, source, problem)
        rows.append(
            Check(
                "settings",
                setting.env,
                INVALID,
                str(source),
                redact.mask_keys(raw.strip()),  # a key pasted into the wrong variable
                problem=problem,
                message=error.message,
                fix=error.hint,
                exit_code=int(errors.ExitCode.CONFIG),
            )
        )
    return rows


def _temperature_problem(value: float, names: list[str]) -> str | None:
    """LLM_TEMPERATURE applies to whichever provider is used, so it must suit each one checked."""
    for name in names:
        low, high = providers.protocol(name).temperature_range
        if not low <= value <= high:
            return f"is out of range for {name}: must be from {low:g} to {high:g}"
    return None


def _provider_checks(
    name: str, env: config.Environment, unparsed: Mapping[str, int]
) -> tuple[list[Check], config.Credentials | None]:
    """The provider's key and endpoint; the credentials too when both are usable."""
    cls = providers.spec(name)
    rows: list[Check] = []
    usable = True
    if not cls.key_env_vars:
        rows.append(Check(name, "-", OK, value="no key needed", provider=name))
    elif (found := env.lookup(*cls.key_env_vars)) is None:
        usable = False
        error = _config_error(lambda: config.credentials(name, env))
        fix = error.hint if error else env.where_to_set(cls.key_env_vars[-1])
        lines = [f"{v} is on line {unparsed[v]}" for v in cls.key_env_vars if v in unparsed]
        if lines:
            fix = f"{'; '.join(lines)} of {env.env_file}, which cannot be parsed: fix that line"
        rows.append(
            Check(
                name,
                cls.key_env_vars[-1],
                MISSING,
                problem="not set",
                message=error.message if error else f"{cls.key_env_vars[-1]} is not set",
                fix=fix,
                provider=name,
                exit_code=int(errors.ExitCode.CONFIG),
            )
        )
    else:
        raw, source, var = found
        key = raw.strip()
        problem = config.key_problem(key)
        if problem:
            usable = False
            rows.append(
                Check(
                    name,
                    var,
                    INVALID,
                    str(source),
                    redact.mask(key),
                    problem=problem,
                    message=f"{var} {problem}",
                    fix=f"Copy the key again from {name}'s console and set {var} to exactly that",
                    provider=name,
                    exit_code=int(errors.ExitCode.CONFIG),
                )
            )
        else:
            rows.append(Check(name, var, OK, str(source), redact.mask(key), provider=name))
            rows += _other_key_name(name, env, var, key)
    if cls.base_url_env and (found := env.lookup(cls.base_url_env)) is not None:
        raw, source, shown = found[0], found[1], redact.display_url(found[0])
        key = env.lookup(*cls.key_env_vars) if cls.key_env_vars else None
        error = env.endpoint_refusal(found, *((key[2], key[1]) if key else (None, None)))
        problem = (
            "not used: a .env found in the current directory may not set it" if error else None
        )
        if error is None:
            try:
                config.parse_url(raw)
            except ValueError as exc:
                problem = str(exc)
                error = _config_error(lambda: config.credentials(name, env, required=False))
        if problem is None:
            rows.append(Check(name, cls.base_url_env, OK, str(source), shown, provider=name))
        else:
            usable = False
            rows.append(
                Check(
                    name,
                    cls.base_url_env,
                    INVALID,
                    str(source),
                    shown,
                    problem=problem,
                    message=error.message if error else f"invalid {cls.base_url_env}: {problem}",
                    fix=error.hint if error else None,
                    provider=name,
                    exit_code=int(errors.ExitCode.CONFIG),
                )
            )
    if not usable:
        return rows, None
    return rows, config.credentials(name, env, required=bool(cls.key_env_vars))


def _other_key_name(name: str, env: config.Environment, used: str, key: str) -> list[Check]:
    """Gemini reads two names; a different key under the one not used is a trap worth a warning."""
    cls = providers.spec(name)
    rows = []
    for other in cls.key_env_vars:
        found = env.lookup(other) if other != used else None
        if found is not None and found[0].strip() != key:
            rows.append(
                Check(
                    name,
                    other,
                    WARNING,
                    str(found[1]),
                    redact.mask(found[0].strip()),
                    problem=f"also set, to a different key, and ignored: {used} is used",
                    fix=f"Unset {other}, or set it to the same key as {used}",
                    provider=name,
                )
            )
    return rows


def _live_checks(
    name: str, env: config.Environment, creds: config.Credentials | None
) -> list[Check]:
    """One request that costs no tokens (list models) through the provider's own SDK."""
    check = f"{name} live"
    if creds is None:
        return [
            Check(
                check,
                "-",
                SKIPPED,
                problem="not tried: fix the problems above first",
                provider=name,
            )
        ]
    variable = creds.key_var or "-"
    source = str(creds.key_source) if creds.key_source else None
    shown_key = str(creds.api_key) if creds.api_key else None
    model, model_source, timeout = _model_and_timeout(name, env)
    provider = providers.connect(name, creds.api_key, creds.base_url)
    try:
        listed = provider.list_models(timeout)
    except Exception as exc:  # every SDK failure becomes a row; translate_error names it
        return [live_failure(name, creds, provider, exc)]
    rows = [
        Check(
            check,
            variable,
            OK,
            source,
            shown_key,
            problem=f"{len(listed)} model{'s' if len(listed) != 1 else ''} listed",
            provider=name,
        )
    ]
    if model is not None and model.removeprefix("models/") not in listed:
        sample = ", ".join(listed[:5]) + (", ..." if len(listed) > 5 else "")
        rows.append(
            Check(
                check,
                "LLM_MODEL",
                WARNING,
                model_source,
                model,
                problem=f"{name} does not list this model for this key",
                message=f"{name} does not list the model {model!r} (LLM_MODEL)",
                fix=f"Check the name; {name} lists: {sample or 'no models'}",
                provider=name,
            )
        )
    return rows


def live_failure(name: str, creds: config.Credentials, provider: Any, exc: BaseException) -> Check:
    """The row for a provider whose model list failed (`config validate --live`, `models --live`):
    rejected key, unreachable endpoint or another failure, with its fix and exit code."""
    spec = providers.spec(name)
    error = provider.translate_error(exc) or errors.LlmcliError(
        f"{name}: unexpected {type(exc).__name__}: {exc}",
        "run again with --debug, and please report it",
        provider=name,
    )
    variable = creds.key_var or "-"
    source = str(creds.key_source) if creds.key_source else None
    if creds.base_url:
        endpoint = f"{spec.base_url_env}={redact.display_url(creds.base_url)}"
    else:
        endpoint = redact.display_url(spec.base_url) if spec.base_url else None
    secrets = [creds.api_key]
    message = redact.scrub(error.message, secrets)
    if isinstance(error, errors.AuthError):
        status = REJECTED
        fix = f"Check that {variable} (from {source}) is a current key for {name}" + (
            f" and for the endpoint {endpoint}" if endpoint else ""
        )
    else:
        status = UNREACHABLE if isinstance(error, errors.NetworkError) else FAILED
        fix = error.hint or "try again later"
        if endpoint:
            fix += f" (in use: {endpoint})"
    return Check(
        f"{name} live",
        variable,
        status,
        source,
        str(creds.api_key) if creds.api_key else None,
        problem=message,
        message=message,
        fix=redact.scrub(fix, secrets),
        provider=name,
        exit_code=int(error.exit_code),
    )


def _model_and_timeout(name: str, env: config.Environment) -> tuple[str | None, str | None, float]:
    """LLM_MODEL when it applies to this provider (as `ask -p name` decides), and the timeout."""
    try:
        settings = config.resolve({"provider": name}, env)
    except errors.LlmcliError:
        return None, None, LIVE_TIMEOUT  # already reported as a setting problem
    model_source = settings.sources["model"]
    model = settings.model if model_source.kind in ("environment", ".env") else None
    timeout = settings.timeout
    if settings.sources["timeout"] is config.DEFAULT:
        timeout = LIVE_TIMEOUT
    return model, str(model_source) if model else None, timeout


# --- show ---------------------------------------------------------------------------------------


def _format(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def show(
    *,
    env_file: str | os.PathLike | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: str | os.PathLike | None = None,
) -> tuple[Shown, ...]:
    """Every effective setting with its printable value and source, plus llmcli's own paths.

    It reports rather than judges: a malformed value is shown as written, with a note, and
    `validate` is the command that fails on it. A missing `--env-file` raises ConfigError.
    """
    env = load_environment(env_file, environ, config_file)
    rows: list[Shown] = []
    provider = config.DEFAULT_PROVIDER
    endpoint_rows = _shown_endpoints(env)  # read first: it names providers the rows below use
    for setting in config.SETTINGS:
        if setting.env is None:
            continue
        found = env.lookup(setting.env)
        if found is None:
            rows.append(_shown_default(setting, provider))
            continue
        raw, source = found[0], found[1]
        try:
            value = setting.parse(raw)
        except ValueError as exc:
            rows.append(
                Shown(
                    setting.name,
                    setting.env,
                    redact.mask_keys(raw.strip()),  # a key pasted into the wrong variable
                    str(source),
                    f"invalid: {exc} (see llmcli config validate)",
                )
            )
            continue
        if setting.name == "provider":
            provider = value
        rows.append(Shown(setting.name, setting.env, _format(value), str(source)))
    rows += _shown_providers(env)
    rows += endpoint_rows
    rows += _shown_budgets(env)
    rows += _shown_paths(env, env_file)
    secrets = _secrets(env)
    return tuple(_scrubbed(r, secrets) for r in rows)


def _shown_endpoints(env: config.Environment) -> list[Shown]:
    """The config file, each endpoint it names (where, which key variable) and each alias."""
    from llmcli import endpoints

    try:
        found = endpoints.load(env)
    except errors.LlmcliError as exc:
        return [Shown("config file", "LLMCLI_CONFIG", "(invalid)", "-", f"invalid: {exc.message}")]
    if found.path is None:
        return [Shown("config file", "LLMCLI_CONFIG", "(none)", "-", "no config.toml")]
    rows = [Shown("config file", "LLMCLI_CONFIG", str(found.path), "file")]
    for spec in found.providers:
        key = " or ".join(spec.key_env_vars) or "no key"
        value = f"{spec.protocol} at {redact.display_url(spec.base_url or '')}"
        rows.append(Shown(f"{spec.name} endpoint", key, value, "config.toml", spec.default_model))
    for alias, target in found.aliases.items():
        rows.append(Shown(f"alias {alias}", "-", target, "config.toml"))
    return rows


def _shown_budgets(env: config.Environment) -> list[Shown]:
    """Each spending limit, its value and where it comes from (environment over config.toml)."""
    from llmcli import budget

    found_file, readable = _configured_budget(env)
    configured = found_file or budget.Budget()
    unknown = (
        "" if readable else "config.toml is invalid (see config file): its [budget] is not known"
    )
    rows = []
    for var, field, name in (
        (budget.ENV_DAILY, "daily_usd", "daily budget"),
        (budget.ENV_MONTHLY, "monthly_usd", "monthly budget"),
    ):
        from_file = getattr(configured, field)
        found = env.lookup(var)
        if found is not None:
            try:
                value = budget.dollars(budget.parse_usd(found[0]))
                note = (
                    f"wins over config.toml's {budget.dollars(from_file)}"
                    if from_file is not None
                    else ""
                )
            except ValueError as exc:
                value = redact.mask_keys(found[0].strip())
                note = f"invalid: {exc} (see llmcli config validate)"
            rows.append(Shown(name, var, value, str(found[1]), note))
        elif from_file is not None:
            rows.append(
                Shown(name, var, budget.dollars(from_file), "config.toml", f"[budget] {field}")
            )
        else:
            rows.append(Shown(name, var, "(none)", str(config.DEFAULT), unknown))
    for tag, limit in configured.tags.items():
        rows.append(
            Shown(
                f"daily budget, tag {tag}",
                "-",
                budget.dollars(limit),
                "config.toml",
                f"[budget.tags] {tag}",
            )
        )
    if configured.allow_unpriced:
        rows.append(
            Shown(
                "unpriced models",
                "-",
                "allowed",
                "config.toml",
                "[budget] allow_unpriced: sent under a budget, counted as $0",
            )
        )
    return rows


def _shown_default(setting: config.Setting, provider: str) -> Shown:
    default = str(config.DEFAULT)
    if setting.name == "model":
        model = providers.spec(provider).default_model
        return Shown(setting.name, "LLM_MODEL", model, default, f"{provider}'s default")
    if setting.name == "temperature":
        return Shown(setting.name, "LLM_TEMPERATURE", "(the provider's)", default)
    return Shown(setting.name, setting.env or "", _format(setting.default), default)


def _shown_providers(env: config.Environment) -> list[Shown]:
    rows = []
    for name in providers.names():
        cls = providers.spec(name)
        if cls.key_env_vars:
            found = env.lookup(*cls.key_env_vars)
            if found is None:
                variable = " or ".join(reversed(cls.key_env_vars))
                rows.append(Shown(f"{name} key", variable, "(not set)", "-"))
            else:
                note = (
                    _key_name_note(env, cls.key_env_vars, found)
                    if len(cls.key_env_vars) > 1
                    else ""
                )
                rows.append(
                    Shown(
                        f"{name} key", found[2], redact.mask(found[0].strip()), str(found[1]), note
                    )
                )
        if cls.base_url_env:
            url = env.lookup(cls.base_url_env)
            if url is None:
                rows.append(
                    Shown(f"{name} endpoint", cls.base_url_env, "(the provider's)", "default")
                )
            else:
                rows.append(
                    Shown(
                        f"{name} endpoint",
                        cls.base_url_env,
                        redact.display_url(url[0]),
                        str(url[1]),
                        _endpoint_note(env, url, found if cls.key_env_vars else None),
                    )
                )
    return rows


def _endpoint_note(
    env: config.Environment,
    url: tuple[str, config.Source, str],
    key: tuple[str, config.Source, str] | None,
) -> str:
    """Why a base URL would not be used (untrusted `.env`, or malformed), as other rows say it."""
    if key is not None and env.endpoint_refusal(url, key[2], key[1]) is not None:
        return (
            f"not used: a .env found in the current directory may not send {key[2]} from the "
            f"{key[1]} elsewhere (see llmcli config validate)"
        )
    try:
        config.parse_url(url[0])
    except ValueError as exc:
        return f"invalid: {exc} (see llmcli config validate)"
    return ""


def _key_name_note(
    env: config.Environment, names: tuple[str, ...], used: tuple[str, config.Source, str]
) -> str:
    """Which of several key variables is used, and why (Gemini: GOOGLE_API_KEY or GEMINI_API_KEY)."""
    note = f"{used[2]} is used"
    for other in names:
        found = env.lookup(other) if other != used[2] else None
        if found is None:
            continue
        if found[1].kind == used[1].kind:
            # Same layer: the order of names decides, as google-genai decides (wire.md §2).
            why = f"{used[2]} wins, as in google-genai"
        else:
            why = "the environment wins over .env"
        note += f"; {other} ({found[1]}) is also set and ignored: {why}"
    return note


def _shown_team_log(env: config.Environment) -> Shown | None:
    """The team log in use (its URL masked), or None when the log is the local file."""
    from llmcli import logdb

    found = env.lookup("LLMCLI_DB")
    try:
        where = logdb.target(env)
    except errors.LlmcliError:
        shown = redact.display_url(found[0]) if found else "(invalid)"
        return Shown("team log", "LLMCLI_DB", shown, _source_of(found) or "config.toml",
                     "invalid: see llmcli config validate")  # fmt: skip
    if not where.shared:
        return None
    source = _source_of(found) if found else (where.source or "config.toml")
    return Shown("team log", "LLMCLI_DB", where.location, source or "-",
                 f"local spool: {where.spool}")  # fmt: skip


def _shown_paths(env: config.Environment, env_file: str | os.PathLike | None) -> list[Shown]:
    if env.env_file is None:
        dotenv = Shown(".env file", "--env-file", "(none)", "-", f"no .env in {os.getcwd()}")
    elif env_file is not None:
        dotenv = Shown(".env file", "--env-file", str(env.env_file), str(config.FLAG))
    else:
        dotenv = Shown(".env file", "--env-file", str(env.env_file), "current directory")
    home_found = env.lookup("LLMCLI_HOME")
    home_source = _source_of(home_found) or str(config.DEFAULT)
    if env.home_refusal() is not None and home_found is not None:
        note = (
            "not used: a .env found in the current directory may not move the call log while "
            "keys come from the environment (see llmcli config validate)"
        )
        shown = redact.mask_keys(home_found[0].strip())
        return [
            dotenv,
            Shown("config folder", "LLMCLI_HOME", shown, home_source, note),
            Shown("log database", "-", "(none)", home_source, "LLMCLI_HOME is not used"),
        ]
    home = paths.home(env)
    log_db = paths.log_db(env)
    refused = paths.folder_problem(home)
    team = _shown_team_log(env)
    return [
        *([team] if team else []),
        dotenv,
        Shown(
            "config folder",
            "LLMCLI_HOME",
            str(home),
            home_source,
            f"refused: {refused.message}"
            if refused
            else ("" if home.is_dir() else "not created yet"),
        ),
        Shown(
            "log database",
            "-",
            str(log_db),
            home_source,
            "" if log_db.is_file() else "not created yet",
        ),
    ]
