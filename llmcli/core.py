"""The library behind every command: turn settings and messages into a checked request, send it
with one retry policy, and assemble one `Response`, streamed or not.

Nothing here imports Click or prints: callers get return values, our typed errors, and an
optional `on_retry` callback. `llmcli.ask()` and `llmcli.stream()` are the Python entry points.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from llmcli import config, errors, paths, pricing, providers, redact
from llmcli.providers.base import Provider
from llmcli.retry import Retrier, RetryNotice, RetryPolicy
from llmcli.types import FinishReason, Message, Request, Response, Usage

# How each optional capability is spelled on the command line, for error messages.
OPTION_FLAGS = {
    "temperature": "--temperature",
    "top_p": "--top-p",
    "stop": "--stop",
    "seed": "--seed",
    "response_format": "--response-format json",
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
        return {
            "provider": self.request.provider,
            "model": self.request.model,
            "endpoint": redact.display_url(creds.base_url)
            if creds.base_url
            else "(the provider's default)",
            "api_key": redact.mask(creds.api_key) if creds.api_key else None,
            "api_key_variable": creds.key_var,
            "timeout_s": self.request.timeout,
            "retries": self.request.retries,
            "params": self.provider.params(self.request),
        }


def check_supported(provider_cls: type[Provider], request: Request) -> None:
    """A flag the provider cannot honour is a usage error, never silently dropped."""
    unsupported = [o for o in request.options_set() if o not in provider_cls.supports]
    if unsupported:
        flags = ", ".join(OPTION_FLAGS[o] for o in unsupported)
        able = [
            name
            for name in providers.names()
            if all(o in providers.provider_class(name).supports for o in unsupported)
        ]
        hint = f"drop {flags}, or choose a provider that supports it: {', '.join(able)}"
        raise errors.UsageError(f"{provider_cls.name} cannot honour {flags}", hint)
    limit = provider_cls.max_stop_sequences
    if limit is not None and len(request.stop) > limit:
        raise errors.UsageError(
            f"{provider_cls.name} accepts at most {limit} --stop sequences, got {len(request.stop)}"
        )


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
    )
    provider_cls = providers.provider_class(settings.provider)
    check_supported(provider_cls, request)
    creds = config.credentials(settings.provider, env, required=require_key)
    provider = provider_cls(api_key=creds.api_key, base_url=creds.base_url)
    prices = pricing.load_overrides(paths.prices_file(env)) if provider_cls.remote else {}
    return Call(request, provider, creds, settings, prices)


def _translator(call: Call) -> Callable[[BaseException], errors.LlmcliError | None]:
    secrets = [call.credentials.api_key]

    def translate(exc: BaseException) -> errors.LlmcliError | None:
        error = call.provider.translate_error(exc)
        if error is not None:
            # SDK messages can echo request details: never let a key through.
            error.message = redact.scrub(error.message, secrets)
            if error.hint:
                error.hint = redact.scrub(error.hint, secrets)
        return error

    return translate


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
    retrier = Retrier(RetryPolicy(call.request.retries, sleep=sleep), _translator(call), on_retry)
    started = time.monotonic()
    reply, attempts = retrier.run(lambda: call.provider.complete(call.request))
    assert isinstance(reply, Response)
    reply = reply._replace(
        requested_model=call.request.model,
        duration_ms=_ms(time.monotonic() - started),
        attempts=attempts,
    )
    return priced(call, reply) if price else reply


class Stream:
    """Iterate for text deltas as they arrive; `response` holds the whole answer afterwards.

    A stream is retried only while nothing has been yielded: once text reached the caller, a
    failure is raised with what was received kept in `text`.
    """

    def __init__(
        self,
        call: Call,
        *,
        on_retry: Callable[[RetryNotice], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        price: bool = True,
    ) -> None:
        self.call = call
        self.price = price
        self.retrier = Retrier(
            RetryPolicy(call.request.retries, sleep=sleep), _translator(call), on_retry
        )
        self.parts: list[str] = []
        self.response: Response | None = None
        self.started: float | None = None
        self.first_token_at: float | None = None
        self.attempts = 0

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def __iter__(self) -> Iterator[str]:
        self.started = time.monotonic()
        while True:
            self.attempts += 1
            usage: Usage | None = None
            finish: tuple[FinishReason | None, str | None] = (None, None)
            model = request_id = None
            refusal: list[str] = []  # not text: never printed, kept for the error and --json
            try:
                for chunk in self.call.provider.stream(self.call.request):
                    model = chunk.model or model
                    request_id = chunk.request_id or request_id
                    usage = chunk.usage or usage
                    if chunk.finish_reason is not None or chunk.raw_finish_reason is not None:
                        finish = (chunk.finish_reason, chunk.raw_finish_reason)
                    if chunk.refusal:
                        refusal.append(chunk.refusal)
                    if chunk.text:
                        if self.first_token_at is None:
                            self.first_token_at = time.monotonic()
                        self.parts.append(chunk.text)
                        yield chunk.text
                break
            except (KeyboardInterrupt, GeneratorExit):
                raise
            except Exception as exc:
                try:
                    self.retrier.handle(exc, self.attempts, may_retry=not self.parts)
                except errors.LlmcliError as error:
                    if self.parts:
                        error.message = (
                            f"stream broken off after {len(self.text)} characters: {error.message}"
                        )
                    raise
        now = time.monotonic()
        response = Response(
            text=self.text,
            provider=self.call.request.provider,
            model=model or self.call.request.model,
            requested_model=self.call.request.model,
            usage=usage or Usage(),
            finish_reason=finish[0] or FinishReason.OTHER,
            raw_finish_reason=finish[1],
            duration_ms=_ms(now - self.started),
            ttft_ms=_ms(self.first_token_at - self.started) if self.first_token_at else None,
            attempts=self.attempts,
            request_id=request_id,
            refusal="".join(refusal).strip() or None,
        )
        self.response = priced(self.call, response) if self.price else response


def incomplete(response: Response, *, strict: bool) -> errors.IncompleteAnswer | None:
    """The error to exit with for a filtered (or, under `--strict`, truncated) answer."""
    if response.finish_reason is FinishReason.CONTENT_FILTER and (strict or not response.text):
        if response.refusal:
            return errors.IncompleteAnswer(
                f"{response.provider} declined to answer: {' '.join(response.refusal.split())}",
                "rephrase the prompt",
            )
        return errors.IncompleteAnswer(
            f"{response.provider} withheld the answer: content filtered ({response.raw_finish_reason})",
            "rephrase the prompt; the provider's safety filter stopped the answer",
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


def ask(prompt: str | Sequence[Message], **options: Any) -> Response:
    """Ask once and return the complete answer, e.g. `llmcli.ask("hi", provider="echo")`.

    Options are the command-line names with underscores (provider, model, system, temperature,
    max_tokens, timeout, retries, top_p, stop, seed, response_format); unset ones come from the
    environment and `.env`, as on the command line.
    """
    return complete(prepare(_messages(prompt), options))


def stream(prompt: str | Sequence[Message], **options: Any) -> Stream:
    """Like `ask`, but iterate the result for text as it arrives; `.response` afterwards."""
    return Stream(prepare(_messages(prompt), options))
