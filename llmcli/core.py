"""The library behind every command: turn settings and messages into a checked request, send it
with one retry policy, and assemble one `Response`, streamed or not.

Nothing here imports Click or prints: callers get return values, our typed errors, and an
optional `on_retry` callback. `llmcli.ask()` and `llmcli.stream()` are the Python entry points.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from llmcli import config, errors, paths, pricing, providers, redact
from llmcli.providers.base import Provider, malformed
from llmcli.retry import Retrier, RetryNotice, RetryPolicy
from llmcli.types import Chunk, FinishReason, Message, Request, Response, Usage

# How each optional capability is spelled on the command line, for error messages.
OPTION_FLAGS = {
    "temperature": "--temperature",
    "top_p": "--top-p",
    "stop": "--stop",
    "seed": "--seed",
    "response_format": "--response-format json",
    "schema": "--schema",
}


def compose_prompt(words: Sequence[str], stdin_text: str | None) -> str:
    """The user message: piped text, a blank line, then the prompt words (DESIGN §2)."""
    prompt = " ".join(words)
    piped = stdin_text if stdin_text and stdin_text.strip() else ""
    if piped and prompt.strip():
        message = f"{piped.rstrip(chr(10))}\n\n{prompt}"
    else:
        message = piped or prompt
    if not message.strip():
        raise errors.UsageError(
            "no prompt given",
            'pass it as arguments (llmcli ask "Why is the sky blue?") or pipe it in (cat notes.txt | llmcli ask "Summarize")',
        )
    if "\x00" in message:
        raise errors.UsageError(
            "the prompt contains NUL bytes; is that a binary file?",
            "pipe in text only (for binary data, encode it first, e.g. with base64)",
        )
    return message


class Call(NamedTuple):
    """A validated request, bound to its provider and credentials, ready to send."""

    request: Request
    provider: Provider
    credentials: config.Credentials
    settings: config.Settings
    prices: Mapping[tuple[str, str], pricing.Override]

    def describe(self) -> dict[str, Any]:
        """What `--dry-run` shows: everything that would be sent, the key masked."""
        creds = self.credentials
        endpoint = self.provider.base_url
        return {
            "provider": self.request.provider,
            "model": self.request.model,
            "endpoint": redact.display_url(endpoint) if endpoint else "(the provider's default)",
            "api_key": str(creds.api_key) if creds.api_key else None,
            "api_key_variable": creds.key_var,
            "timeout_s": self.request.timeout,
            "retries": self.request.retries,
            "params": self.provider.params(self.request),
        }


def check_supported(provider_cls: type[Provider], request: Request) -> None:
    """A flag the provider cannot honour is a usage error, never silently dropped."""
    name = request.provider
    unsupported = [o for o in request.options_set() if o not in provider_cls.supports]
    if unsupported:
        flags = ", ".join(OPTION_FLAGS[o] for o in unsupported)
        able = [
            other
            for other in providers.names()
            if all(o in providers.protocol(other).supports for o in unsupported)
        ]
        hint = f"drop {flags}, or choose a provider that supports it: {', '.join(able)}"
        raise errors.UsageError(f"{name} cannot honour {flags}", hint)
    limit = provider_cls.max_stop_sequences
    if limit is not None and len(request.stop) > limit:
        raise errors.UsageError(
            f"{name} accepts at most {limit} --stop sequences, got {len(request.stop)}"
        )
    if (
        request.seed is not None
        and not -provider_cls.max_seed - 1 <= request.seed <= provider_cls.max_seed
    ):
        raise errors.UsageError(
            f"invalid value for --seed: {request.seed} is out of range for {name} "
            f"(from {-provider_cls.max_seed - 1} to {provider_cls.max_seed})"
        )
    if request.schema is not None:
        if request.response_format == "json":
            raise errors.UsageError(
                "use --schema or --response-format json, not both",
                "--schema asks for JSON already, and for its shape too",
            )
        refusal = provider_cls.schema_refusal(request)
        if refusal is not None:
            raise refusal
    if any(message.attachments for message in request.messages):
        from llmcli import attach  # only when something is attached

        attach.check(provider_cls, name, request.messages)


def prepare(
    messages: Sequence[Message],
    flags: Mapping[str, Any] | None = None,
    env: config.Environment | None = None,
    *,
    require_key: bool = True,
) -> Call:
    """Resolve settings, build the request and check it, all before any network call.

    `flags` holds command-line values (None = not given), including `stop`, `seed` and
    `response_format`, which have no environment variable.
    """
    flags = dict(flags or {})
    env = env if env is not None else config.Environment()
    settings = config.resolve(flags, env)
    request = Request(
        provider=settings.provider,
        model=settings.model,
        messages=tuple(messages),
        system=settings.system,
        max_tokens=settings.max_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
        stop=tuple(flags.get("stop") or ()),
        seed=flags.get("seed"),
        response_format=flags.get("response_format") or "text",
        timeout=settings.timeout,
        retries=settings.retries,
        schema=_schema(flags, env),
    )
    spec = providers.spec(settings.provider)
    check_supported(providers.protocol(spec), request)
    creds = config.credentials(settings.provider, env, required=require_key)
    provider = providers.connect(spec, creds.api_key, creds.base_url)
    prices = pricing.load_overrides(paths.prices_file(env)) if spec.remote else {}
    return Call(request, provider, creds, settings, prices)


def _schema(flags: Mapping[str, Any], env: config.Environment) -> str | None:
    """`Request.schema` from `--schema` (or LLM_SCHEMA) and `--schema-multi`; None for text.

    llmcli.schema (and jsonschema) are imported only when a schema is given.
    """
    given, where, trusted = flags.get("schema"), "--schema", True
    if given is None:
        found = env.lookup("LLM_SCHEMA")
        if found is None:
            if flags.get("schema_multi"):
                raise errors.UsageError("--schema-multi needs a --schema to wrap")
            return None
        given, source, _ = found
        where = "LLM_SCHEMA"
        # A .env that came with a cloned repository may not pick a local file to send away.
        trusted = not env.untrusted(source)
    from llmcli import schema

    try:
        return schema.resolve(
            given, many=bool(flags.get("schema_multi")), where=where, allow_file=trusted
        )
    except errors.UsageError as exc:
        if where == "--schema":
            raise
        # A setting, not the command line: a configuration error, like every other one.
        raise errors.ConfigError(exc.message, exc.hint) from None


def structured(request: Request, response: Response) -> Response:
    """Under a schema, the answer parsed and checked (`parsed`), or why it is none
    (`schema_error`: `incomplete` makes that exit 8). A truncated answer is never one, even
    if what arrived happens to parse: half a JSON object is no answer."""
    if request.schema is None:
        return response
    if response.finish_reason is FinishReason.LENGTH:
        return response._replace(
            schema_error=f"the answer was truncated at --max-tokens ({response.raw_finish_reason}): "
            "half a JSON object is no answer"
        )
    from llmcli import schema

    parsed, problem = schema.validate(request.schema, response.text)
    return response._replace(parsed=parsed, schema_error=problem)


def fallbacks(
    call: Call, flags: Mapping[str, Any], env: config.Environment, *, require_key: bool = True
) -> tuple[Call, ...]:
    """The calls `--fallback` (LLM_FALLBACK) names, each prepared as the first was: same
    messages and options, its own provider and model, its key checked now, before anything is
    sent (a chain that could not run is a configuration error at once, not after an outage).

    A provider and model already in the chain is left out: LLM_FALLBACK is set once for every
    command, so `-p anthropic` with `LLM_FALLBACK=anthropic,gemini` must not spend anthropic's
    retries twice before gemini is asked."""
    source = call.settings.sources.get("fallback", config.DEFAULT)
    named_by = "--fallback" if source.kind == "flag" else "LLM_FALLBACK"
    seen = {(call.request.provider, call.request.model)}
    found = []
    for entry in call.settings.fallback:
        provider, _, model = entry.partition("/")
        options = {**flags, "provider": provider, "model": model or None, "fallback": ()}
        try:
            prepared = prepare(call.request.messages, options, env, require_key=require_key)
        except errors.LlmcliError as exc:
            # "Missing ANTHROPIC_API_KEY" while asking openai needs its reason: the chain.
            exc.message = f"{exc.message} (for {named_by} {entry})"
            raise
        if (prepared.request.provider, prepared.request.model) not in seen:
            seen.add((prepared.request.provider, prepared.request.model))
            found.append(prepared)
    return tuple(found)


def _translator(call: Call) -> Callable[[BaseException], errors.LlmcliError | None]:
    # Errors scrub every key in use as they are built (llmcli.errors); nothing more to do here.
    return call.provider.translate_error


def priced(call: Call, response: Response) -> Response:
    """The response with its cost; pricing trouble never costs the user the answer."""
    try:
        price = pricing.cost(
            call.request.provider,
            [response.model, call.request.model],
            response.usage,
            overrides=call.prices,
        )
    except Exception:  # a pricing-data bug must not lose a paid-for answer; the cost stays unknown
        return response
    return response._replace(cost_usd=price.usd, price_source=price.source)


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _retrier(
    call: Call, on_retry: Callable[[RetryNotice], None] | None, sleep: Callable[[float], None]
) -> Retrier:
    return Retrier(RetryPolicy(call.request.retries, sleep=sleep), _translator(call), on_retry)


def _finished(call: Call, reply: Response, started: float, attempts: int, price: bool) -> Response:
    reply = structured(call.request, reply)
    reply = reply._replace(
        requested_model=call.request.model,
        duration_ms=_ms(time.monotonic() - started),
        attempts=attempts,
    )
    return priced(call, reply) if price else reply


class Estimate(NamedTuple):
    """What a call may cost before it is sent: input tokens estimated offline (text at about 4
    characters a token, images by their size where the provider gives a formula), every one of
    `max_tokens` used, priced. `uncounted` are the attachments whose tokens cannot be told."""

    input_tokens: int
    price: pricing.Price
    uncounted: tuple[Any, ...] = ()


def estimate(call: Call, *, unknown_file_tokens: Callable[[Any], int] | None = None) -> Estimate:
    """The worst case of `call`, shared by `--dry-run` and the budget check.

    `unknown_file_tokens` gives a bound for an attachment whose tokens cannot be told (the budget
    must reserve something for a PDF); without it those are left out and listed.
    """
    request = call.request
    text = "\n".join(part for part in [request.system, *(m.text for m in request.messages)] if part)
    tokens = pricing.estimate_tokens(text)
    files = [a for m in request.messages for a in m.attachments]
    uncounted: tuple[Any, ...] = ()
    if files:
        from llmcli import attach

        counted, missed = attach.input_tokens(call.provider, files)
        tokens += counted
        uncounted = tuple(missed)
        if unknown_file_tokens is not None:
            tokens += sum(unknown_file_tokens(a) for a in uncounted)
    usage = Usage(input_tokens=tokens, output_tokens=request.max_tokens)
    return Estimate(tokens, pricing.cost(request.provider, [request.model], usage,
                                          overrides=call.prices), uncounted)  # fmt: skip


def complete(
    call: Call,
    *,
    on_retry: Callable[[RetryNotice], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    price: bool = True,
) -> Response:
    """Send the call, retrying by the one policy, and return the complete answer.

    `price=False` leaves `cost_usd` unset, for a caller that prints the answer first and prices
    it afterwards (pricing loads genai-prices: tens of milliseconds the user need not wait for).
    """
    started = time.monotonic()
    reply, attempts = _retrier(call, on_retry, sleep).run(
        lambda: call.provider.complete(call.request)
    )
    return _finished(call, reply, started, attempts, price)


async def acomplete(
    call: Call,
    *,
    on_retry: Callable[[RetryNotice], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    price: bool = True,
) -> Response:
    """`complete` on the provider's async client: the same policy, waits awaited."""
    started = time.monotonic()
    reply, attempts = await _retrier(call, on_retry, time.sleep).arun(
        lambda: call.provider.acomplete(call.request), sleep
    )
    return _finished(call, reply, started, attempts, price)


class _Attempt:
    """What one streamed attempt has said so far: the pieces that become its `Response`."""

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.finish: FinishReason | None = None
        self.raw_finish: str | None = None
        self.model: str | None = None
        self.request_id: str | None = None
        self.refusal: list[str] = []  # not text: never printed, kept for the error and --json

    def read(self, chunk: Chunk) -> None:
        self.model = chunk.model or self.model
        self.request_id = chunk.request_id or self.request_id
        self.usage = chunk.usage or self.usage
        if chunk.finish_reason is not None or chunk.raw_finish_reason is not None:
            self.finish, self.raw_finish = chunk.finish_reason, chunk.raw_finish_reason
        if chunk.refusal:
            self.refusal.append(chunk.refusal)

    @property
    def finished(self) -> bool:
        return self.finish is not None or self.raw_finish is not None


class _Streaming:
    """What `Stream` and `AsyncStream` share: the parts received and the rules for an attempt."""

    def __init__(
        self,
        call: Call,
        *,
        on_retry: Callable[[RetryNotice], None] | None = None,
        sleep: Callable[[float], Any] = time.sleep,
        price: bool = True,
    ) -> None:
        self.call = call
        self.price = price
        self.sleep = sleep
        self.retrier = _retrier(call, on_retry, time.sleep)
        self.parts: list[str] = []
        self.response: Response | None = None
        self.started: float | None = None
        self.first_token_at: float | None = None
        self.attempts = 0

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def _text(self, chunk: Chunk) -> str:
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()
        self.parts.append(chunk.text)
        return chunk.text

    def _unfinished(self, attempt: _Attempt) -> errors.LlmcliError | None:
        """A stream that ended without a finish reason was cut (by a proxy, a load balancer):
        for a provider that always sends one, that is a broken stream, not a complete answer."""
        if attempt.finished or not self.call.provider.always_finishes:
            return None
        name = self.call.request.provider
        if self.parts:
            return errors.BrokenOff(
                f"the stream from {name} ended without a finish reason: the answer was cut off",
                "try again; a proxy or load balancer between you and the provider may have closed it",
                provider=name,
            )
        return malformed(name, "a stream with no answer and no finish reason in it")

    def _failed(self, failure: BaseException) -> float:
        """The wait before the next attempt, or raise: retried only while nothing was yielded."""
        try:
            return self.retrier.decide(failure, self.attempts, may_retry=not self.parts).delay
        except errors.LlmcliError as error:
            if self.parts and not isinstance(failure, errors.BrokenOff):
                error.message = (
                    f"stream broken off after {len(self.text)} characters: {error.message}"
                )
            raise

    def _end(self, attempt: _Attempt) -> None:
        now = time.monotonic()
        assert self.started is not None
        response = Response(
            text=self.text,
            provider=self.call.request.provider,
            model=attempt.model or self.call.request.model,
            requested_model=self.call.request.model,
            usage=attempt.usage or Usage(),
            finish_reason=attempt.finish or FinishReason.OTHER,
            raw_finish_reason=attempt.raw_finish,
            duration_ms=_ms(now - self.started),
            ttft_ms=_ms(self.first_token_at - self.started) if self.first_token_at else None,
            attempts=self.attempts,
            request_id=attempt.request_id,
            refusal="".join(attempt.refusal).strip() or None,
        )
        response = structured(self.call.request, response)
        self.response = priced(self.call, response) if self.price else response


class Stream(_Streaming):
    """Iterate for text deltas as they arrive; `response` holds the whole answer afterwards.

    A stream is retried only while nothing has been yielded: once text reached the caller, a
    failure is raised with what was received kept in `text`.
    """

    def __iter__(self) -> Iterator[str]:
        self.started = time.monotonic()
        while True:
            self.attempts += 1
            attempt = _Attempt()
            failure: BaseException | None = None
            try:
                for chunk in self.call.provider.stream(self.call.request):
                    attempt.read(chunk)
                    if chunk.text:
                        yield self._text(chunk)
            except (KeyboardInterrupt, GeneratorExit):
                raise
            except Exception as exc:
                failure = exc
            failure = failure or self._unfinished(attempt)
            if failure is None:
                break
            self.sleep(self._failed(failure))
        self._end(attempt)


class AsyncStream(_Streaming):
    """`Stream` on the provider's async client: `async for` the deltas; `response` afterwards."""

    async def __aiter__(self) -> AsyncIterator[str]:
        import asyncio

        sleep = self.sleep if self.sleep is not time.sleep else asyncio.sleep  # never block a loop
        self.started = time.monotonic()
        while True:
            self.attempts += 1
            attempt = _Attempt()
            failure: BaseException | None = None
            try:
                # Closed as soon as this stream is: left to the collector, an async generator
                # keeps its connection (and the provider's billing) open until the loop ends.
                async with contextlib.aclosing(
                    self.call.provider.astream(self.call.request)
                ) as chunks:
                    async for chunk in chunks:
                        attempt.read(chunk)
                        if chunk.text:
                            yield self._text(chunk)
            except (KeyboardInterrupt, GeneratorExit, asyncio.CancelledError):
                raise
            except Exception as exc:
                failure = exc
            failure = failure or self._unfinished(attempt)
            if failure is None:
                break
            await sleep(self._failed(failure))
        self._end(attempt)


def incomplete(response: Response, *, strict: bool) -> errors.IncompleteAnswer | None:
    """The error to exit with for a filtered (or, under `--strict`, truncated) answer, or one
    that is not the JSON its schema asked for."""
    filtered = response.finish_reason is FinishReason.CONTENT_FILTER
    if filtered and (strict or not response.text or response.schema_error):
        if response.refusal:
            return errors.IncompleteAnswer(
                f"{response.provider} declined to answer: {' '.join(response.refusal.split())}",
                "rephrase the prompt",
            )
        return errors.IncompleteAnswer(
            f"{response.provider} withheld the answer: content filtered ({response.raw_finish_reason})",
            "rephrase the prompt; the provider's safety filter stopped the answer",
        )
    if response.schema_error is not None:
        truncated = response.finish_reason is FinishReason.LENGTH
        return errors.IncompleteAnswer(
            response.schema_error,
            "raise --max-tokens (or LLM_MAX_TOKENS)"
            if truncated
            else "the raw answer is in the log (llmcli logs); --raw prints it",
        )
    if strict and response.finish_reason is FinishReason.LENGTH:
        return errors.IncompleteAnswer(
            f"the answer was truncated at --max-tokens ({response.raw_finish_reason})",
            "raise --max-tokens (or LLM_MAX_TOKENS)",
        )
    return None


def _messages(prompt: str | Sequence[Message]) -> list[Message]:
    if isinstance(prompt, str):
        return [Message("user", prompt)]
    return list(prompt)


def _flags(
    provider: str | None,
    model: str | None,
    system: str | None,
    temperature: float | None,
    max_tokens: int | None,
    top_p: float | None,
    stop: str | Sequence[str] | None,
    seed: int | None,
    response_format: str | None,
    timeout: float | None,
    retries: int | None,
    schema: str | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The library's keyword arguments as `prepare` flags; a string `stop` is one sequence."""
    if isinstance(stop, str):
        stop = (stop,)
    return {
        "provider": provider,
        "model": model,
        "system": system,
        "temperature": temperature,
        "max_tokens": max_tokens,
        "top_p": top_p,
        "stop": tuple(stop) if stop else None,
        "seed": seed,
        "response_format": response_format,
        "timeout": timeout,
        "retries": retries,
        "schema": schema,
    }


def ask(
    prompt: str | Sequence[Message],
    *,
    provider: str | None = None,
    model: str | None = None,
    system: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    top_p: float | None = None,
    stop: str | Sequence[str] | None = None,
    seed: int | None = None,
    response_format: str | None = None,
    timeout: float | None = None,
    retries: int | None = None,
    schema: str | Mapping[str, Any] | None = None,
) -> Response:
    """Ask once and return the complete answer, e.g. `llmcli.ask("hi", provider="echo")`.

    Options are the command-line names with underscores; unset ones come from the environment
    and `.env`, as on the command line. `stop` is one sequence or a list of them. An unknown
    keyword is a TypeError, never silently ignored. `schema` (a dict, or text as `--schema`
    takes it) asks for JSON matching it: `.parsed` holds it, and an answer that does not match
    raises IncompleteAnswer.
    """
    flags = _flags(provider, model, system, temperature, max_tokens, top_p, stop, seed,
                   response_format, timeout, retries, schema)  # fmt: skip
    response = complete(prepare(_messages(prompt), flags))
    problem = incomplete(response, strict=False) if response.schema_error else None
    if problem is not None:
        raise problem
    return response


def stream(
    prompt: str | Sequence[Message],
    *,
    provider: str | None = None,
    model: str | None = None,
    system: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    top_p: float | None = None,
    stop: str | Sequence[str] | None = None,
    seed: int | None = None,
    response_format: str | None = None,
    timeout: float | None = None,
    retries: int | None = None,
    schema: str | Mapping[str, Any] | None = None,
) -> Stream:
    """Like `ask`, but iterate the result for text as it arrives; `.response` afterwards
    (with `.parsed`, or `.schema_error`, under a `schema`)."""
    flags = _flags(provider, model, system, temperature, max_tokens, top_p, stop, seed,
                   response_format, timeout, retries, schema)  # fmt: skip
    return Stream(prepare(_messages(prompt), flags))
