"""`llmcli models` as a library: per provider, the models llmcli can price, and their aliases.

A model's price here is the one a call to it would be charged now, decided as `pricing.cost`
decides: a free provider (echo, an endpoint with `prices = "free"`) costs $0; else the user's
`prices.toml`; else genai-prices' bundled data for the provider's `pricing_id`; else unknown
(None, shown `n/a`: never $0). So what `models` shows is what `cost` will later report.

Offline (the default) nothing touches the network and no provider SDK is imported. genai-prices
is imported only when a listed provider is priced by it; it loads pydantic and httpx2 as it
is imported (it can fetch newer prices, which llmcli never asks it to do), so a listing of
only `echo` or free endpoints stays light. `live=True` adds one request per provider that costs
no tokens (`Provider.list_models`), its failures mapped as `config validate --live` maps them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from llmcli import checks, config, endpoints, errors, paths, providers
from llmcli.providers.base import ProviderSpec

if TYPE_CHECKING:
    from llmcli.pricing import Override

FREE = "free"
PRICES_TOML = "prices.toml"


@dataclass(frozen=True)
class Tier:
    """Prices from a prompt size up: crossing it prices the whole call at this rate."""

    from_input_tokens: int
    input: Decimal | None
    output: Decimal | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "from_input_tokens": self.from_input_tokens,
            "input_usd_per_mtok": self.input,
            "output_usd_per_mtok": self.output,
        }


@dataclass(frozen=True)
class Model:
    """One model of a provider: USD per million tokens (None: unknown) and context window."""

    name: str
    input: Decimal | None = None
    output: Decimal | None = None
    context_window: int | None = None
    #: Where the prices come from: `genai-prices 0.2.3`, `prices.toml`, `free`; None: unknown.
    source: str | None = None
    default: bool = False
    deprecated: bool = False
    #: Higher prices from a prompt size up; `input`/`output` are the prices below the first.
    tiers: tuple[Tier, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "default": self.default,
            "input_usd_per_mtok": self.input,
            "output_usd_per_mtok": self.output,
            "context_window": self.context_window,
            "price_source": self.source,
            "deprecated": self.deprecated,
            "tiers": [t.to_dict() for t in self.tiers],
        }


@dataclass(frozen=True)
class Listing:
    """One provider's models; with `live`, the outcome of asking the provider for its list."""

    provider: str
    protocol: str
    default_model: str
    #: How its calls are priced: `free`, a genai-prices provider id, or None (unknown).
    prices: str | None
    models: tuple[Model, ...]
    #: `--live` only: `ok`, or the failing `config validate --live` check (status, fix, code).
    live: checks.Check | None = None
    #: Worth knowing, not failures (a prices id genai-prices does not know, ...): for stderr.
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        live = None
        if self.live is not None:
            live = {
                "status": self.live.status,
                "exit_code": self.live.exit_code,
                "problem": self.live.problem,
                "fix": self.live.fix,
            }
        return {
            "provider": self.provider,
            "protocol": self.protocol,
            "default_model": self.default_model,
            "prices": self.prices,
            "models": [m.to_dict() for m in self.models],
            "live": live,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class Alias:
    """A name from `[aliases]`, what it is written as, and the provider and model it means."""

    name: str
    target: str
    provider: str
    model: str

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Catalog:
    """What `llmcli models` prints: every selected provider's listing, and the aliases."""

    listings: tuple[Listing, ...]
    aliases: tuple[Alias, ...]
    live: bool

    @property
    def failures(self) -> tuple[checks.Check, ...]:
        return tuple(x.live for x in self.listings if x.live is not None and x.live.failed)

    @property
    def exit_code(self) -> int:
        """0, or the smallest failing code, as `config validate` decides (3 before 4 before 7)."""
        return self._report().exit_code

    def error(self, where: str) -> errors.LlmcliError | None:
        """The failure to end on (right class, message and fix, `N more problems`), or None."""
        return self._report().error(where)

    def _report(self) -> checks.Report:
        names = tuple(x.provider for x in self.listings)
        return checks.Report(self.failures, names, self.live, None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.exit_code == 0,
            "exit_code": self.exit_code,
            "live": self.live,
            "providers": [x.to_dict() for x in self.listings],
            "aliases": [a.to_dict() for a in self.aliases],
        }


# --- genai-prices ----------------------------------------------------------------------------


class GenaiPrices:
    """genai-prices' bundled data, imported on first use and read at one instant."""

    def __init__(self) -> None:
        from genai_prices import data_snapshot

        from llmcli import pricing

        self.snapshot = data_snapshot.get_snapshot()
        self.source = pricing.genai_prices_version()
        self.now = dt.datetime.now(dt.UTC)

    def provider(self, pricing_id: str) -> Any | None:
        """The genai-prices provider `calc_price` would use for this id, or None."""
        try:
            return self.snapshot.find_provider(None, pricing_id, None)
        except LookupError:
            return None

    def lookup(self, pricing_id: str, name: str) -> Model | None:
        """`name` priced as `calc_price` matches it (dated names, aliases), or None."""
        try:
            _, info = self.snapshot.find_provider_model(name, None, pricing_id, None)
        except LookupError:
            return None
        return dataclasses.replace(self.model(info), name=name)

    def model(self, info: Any) -> Model:
        """A genai-prices ModelInfo as a Model, at its prices of today."""
        from genai_prices.types import TieredPrices

        prices = info.get_prices(self.now)
        raw_in = getattr(prices, "input_mtok", None)
        raw_out = getattr(prices, "output_mtok", None)
        starts = sorted(
            {t.start for p in (raw_in, raw_out) if isinstance(p, TieredPrices) for t in p.tiers}
        )
        tiers = tuple(Tier(s, _price_at(raw_in, s), _price_at(raw_out, s)) for s in starts)
        return Model(
            name=info.id,
            input=_price_at(raw_in, 0),
            output=_price_at(raw_out, 0),
            context_window=info.context_window,
            source=self.source if raw_in is not None or raw_out is not None else None,
            deprecated=bool(info.deprecated),
            tiers=tiers,
        )


def _price_at(price: Any, input_tokens: int) -> Decimal | None:
    """A genai-prices price (a Decimal, tiered, or None) for a prompt of `input_tokens`."""
    if price is None or isinstance(price, Decimal):
        return price
    applies = price.base
    for tier in price.tiers:  # sorted by start
        if tier.start <= input_tokens:
            applies = tier.price
    return applies


# --- building the catalog --------------------------------------------------------------------


def build(env: config.Environment, names: Sequence[str] = (), *, live: bool = False) -> Catalog:
    """The catalog of `names` (every provider when empty), read from `env`.

    Reads `config.toml` (its endpoints and aliases) and `prices.toml`; a malformed one is the
    ConfigError a call would raise. Names must be known providers (the CLI checked them).
    """
    found = endpoints.load(env)
    selected = list(dict.fromkeys(names)) if names else providers.names()
    from llmcli import pricing

    overrides = pricing.load_overrides(paths.prices_file(env))
    specs = [providers.spec(name) for name in selected]
    prices = GenaiPrices() if any(_genai_id(s) for s in specs) else None
    timeout = _live_timeout(env) if live else None
    listings = []
    for spec in specs:
        mine = {model: o for (p, model), o in overrides.items() if p == spec.name}
        if timeout is None:
            listings.append(_offline(spec, mine, prices))
        else:
            listings.append(_online(spec, mine, prices, env, timeout))
    aliases = []
    for alias, target in found.aliases.items():
        provider, model = found.expand(alias)
        if provider is not None and provider in selected:
            aliases.append(Alias(alias, target, provider, model))
    return Catalog(tuple(listings), tuple(aliases), live)


def _genai_id(spec: ProviderSpec) -> str | None:
    """The genai-prices provider that prices this provider's calls, if any."""
    return None if _is_free(spec) else spec.pricing_id


def _is_free(spec: ProviderSpec) -> bool:
    # As `pricing.cost` decides: a provider that never leaves the machine, or says it is free.
    return not spec.remote or spec.free


def _offline(
    spec: ProviderSpec, overrides: dict[str, Override], prices: GenaiPrices | None
) -> Listing:
    """What llmcli can price for this provider, without asking it anything."""
    notes: list[str] = []
    known: list[Model] = []
    pricing_id = _genai_id(spec)
    if pricing_id is not None and prices is not None:
        found = prices.provider(pricing_id)
        if found is None:
            notes.append(unknown_prices_id(spec, prices))
        else:
            known = [prices.model(info) for info in found.models]
    names = [m.name for m in known] + [n for n in overrides if n not in {m.name for m in known}]
    by_name = {m.name: m for m in known}
    if spec.default_model not in names:
        names.append(spec.default_model)
    models = [_priced(spec, name, overrides, prices, by_name.get(name)) for name in names]
    return _listing(spec, models, notes)


def _online(
    spec: ProviderSpec,
    overrides: dict[str, Override],
    prices: GenaiPrices | None,
    env: config.Environment,
    timeout: float,
) -> Listing:
    """The models the provider lists for this key (one request), each priced as a call would be."""
    outcome, listed = _ask(spec, env, timeout)
    if listed is None:
        return _listing(spec, [], [], outcome)
    notes = []
    if spec.default_model not in listed:
        notes.append(
            f"{spec.name} does not list its default model {spec.default_model!r} for this key"
        )
    models = [_priced(spec, name, overrides, prices, None) for name in dict.fromkeys(listed)]
    return _listing(spec, models, notes, outcome)


def _listing(
    spec: ProviderSpec,
    models: list[Model],
    notes: list[str],
    live: checks.Check | None = None,
) -> Listing:
    """The default model first (the one a call without -m uses), then by name."""
    marked = [dataclasses.replace(m, default=m.name == spec.default_model) for m in models]
    marked.sort(key=lambda m: (not m.default, m.name.casefold(), m.name))
    how = FREE if _is_free(spec) else spec.pricing_id
    return Listing(
        spec.name, spec.protocol, spec.default_model, how, tuple(marked), live, tuple(notes)
    )


def _priced(
    spec: ProviderSpec,
    name: str,
    overrides: dict[str, Override],
    prices: GenaiPrices | None,
    known: Model | None,
) -> Model:
    """`name` at the price a call to it would be charged (`pricing.cost`'s order)."""
    pricing_id = _genai_id(spec)
    if known is None and prices is not None and pricing_id is not None:
        known = prices.lookup(pricing_id, name)
    model = known or Model(name)
    if _is_free(spec):
        return dataclasses.replace(
            model, input=Decimal(0), output=Decimal(0), source=FREE, tiers=()
        )
    override = overrides.get(name)
    if override is not None:
        return dataclasses.replace(
            model, input=override.input, output=override.output, source=PRICES_TOML, tiers=()
        )
    return model


def unknown_prices_id(spec: ProviderSpec, prices: GenaiPrices) -> str:
    """Why an endpoint's models are all n/a, with the ids it may have meant."""
    import difflib

    ids = [p.id for p in prices.snapshot.providers]
    close = difflib.get_close_matches(str(spec.pricing_id), ids, n=3)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return (
        f"genai-prices knows no provider {spec.pricing_id!r} (prices = {spec.pricing_id!r} in "
        f"[providers.{spec.name}] of config.toml), so its calls are unpriced (n/a){hint}"
    )


# --- live ------------------------------------------------------------------------------------


def _live_timeout(env: config.Environment) -> float:
    """LLM_TIMEOUT when set, else `config validate --live`'s shorter wait: a listing that hangs
    a minute on a black-holed address helps nobody."""
    found = env.lookup("LLM_TIMEOUT")
    if found is None:
        return checks.LIVE_TIMEOUT
    try:
        return config.parse_timeout(found[0])
    except ValueError as exc:
        setting = config.SETTINGS_BY_NAME["timeout"]
        raise config.invalid_setting(setting, found[0], found[1], str(exc)) from None


def _ask(
    spec: ProviderSpec, env: config.Environment, timeout: float
) -> tuple[checks.Check, list[str] | None]:
    """One `list_models` request; its failure as the row `config validate --live` would show."""
    name = spec.name
    check = f"{name} live"
    try:
        creds = config.credentials(name, env)
    except errors.LlmcliError as exc:
        unset = bool(spec.key_env_vars) and env.lookup(*spec.key_env_vars) is None
        status = checks.MISSING if unset else checks.INVALID
        failed = checks.Check(
            check,
            spec.key_env_vars[-1] if spec.key_env_vars else "-",
            status,
            problem=exc.message,
            message=exc.message,
            fix=exc.hint,
            provider=name,
            exit_code=int(exc.exit_code),
        )
        return failed, None
    variable = creds.key_var or "-"
    source = str(creds.key_source) if creds.key_source else None
    provider = providers.connect(spec, creds.api_key, creds.base_url)
    try:
        listed = provider.list_models(timeout)
    except Exception as exc:  # every SDK failure becomes this provider's row; the others go on
        return checks.live_failure(name, creds, provider, exc), None
    count = f"{len(listed)} model{'s' if len(listed) != 1 else ''} listed"
    return checks.Check(check, variable, checks.OK, source, problem=count, provider=name), listed
