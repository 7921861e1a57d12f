"""Recording calls in the log, and reading conversations back from it.

The log must never cost the user an answer: a log that cannot be opened or written (read-only
folder, corrupt file, disk full) is reported by `problem` for the caller to warn about, and the
call goes on.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from llmcli import config, errors, paths
from llmcli.types import Message, Response

if TYPE_CHECKING:
    from llmcli.core import Call
    from llmcli.store import Store

# sqlite3 and the store load only when the log is really read or written (not with --no-log).


def new_conversation_id() -> str:
    return secrets.token_hex(6)


class Journal:
    """The log for one command run; opened on first use."""

    def __init__(self, env: config.Environment, *, enabled: bool = True) -> None:
        self.path: Path = paths.log_db(env)
        self.enabled = enabled
        self.problem: str | None = None
        self._store: Store | None = None

    def _open(self) -> Store:
        if self._store is None:
            from llmcli.store import Store

            self._store = Store(self.path)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def record(
        self,
        call: Call,
        *,
        conversation_id: str | None,
        response: Response | None = None,
        error: errors.LlmcliError | None = None,
        status: str = "ok",
        partial_text: str | None = None,
    ) -> int | None:
        """Write one row for `call`; its id, or None if not logged."""
        if not self.enabled:
            return None

        from llmcli.store import CallRecord

        request = call.request
        record = CallRecord(
            provider=request.provider,
            status=status,
            requested_model=request.model,
            conversation_id=conversation_id,
            system_prompt=request.system,
            messages=[m.to_dict() for m in request.messages],
            tag=call.settings.tag,
        )
        if response is not None:
            usage = response.usage
            record.model = response.model
            record.answer = response.text
            record.finish_reason = response.finish_reason.value
            record.raw_finish_reason = response.raw_finish_reason
            record.input_tokens = usage.input_tokens
            record.output_tokens = usage.output_tokens
            record.cached_input_tokens = usage.cached_input_tokens
            record.cache_write_tokens = usage.cache_write_tokens
            record.reasoning_tokens = usage.reasoning_tokens
            record.cost_usd = response.cost_usd
            record.price_source = response.price_source
            record.duration_ms = response.duration_ms
            record.ttft_ms = response.ttft_ms
            record.attempts = response.attempts
            record.response_id = response.request_id
            record.exit_code = 0
        if partial_text is not None and record.answer is None:
            record.answer = partial_text
        if error is not None:
            record.error_class = type(error).__name__
            record.error_message = error.message
            record.exit_code = int(error.exit_code)
            record.attempts = record.attempts or error.attempts
        try:
            return self._open().add(record)
        except Exception as exc:  # the log must never cost the user an answer or its exit code
            from llmcli import logtrouble

            self.problem = str(logtrouble.describe(exc, self.path, writing=True))
            return None

    def history(self, conversation_id: str | None) -> tuple[str, str | None, list[dict[str, str]]]:
        """(id, system prompt, messages) of a conversation; None = the latest one."""
        import sqlite3

        if not self.path.is_file():  # nothing logged yet; reading must not create the log
            raise errors.UsageError(
                "there is no conversation to continue yet", "start one without -c/--continue"
            )
        try:
            store = self._open()
            cid = conversation_id or store.latest_conversation()
            found = store.history(cid) if cid else None
        except (sqlite3.Error, OSError) as exc:
            from llmcli import logtrouble

            trouble = logtrouble.describe(exc, self.path, writing=False)
            raise errors.ConfigError(trouble.message, trouble.hint) from None
        if cid is None:
            raise errors.UsageError(
                "there is no conversation to continue yet", "start one without -c/--continue"
            )
        if found is None:
            raise errors.UsageError(
                f"no conversation with id {cid!r} in the log", "see the ids with: llmcli logs"
            )
        return cid, found[0], found[1]


def resume(
    journal: Journal, conversation_id: str | None, flags: dict[str, object], env: config.Environment
) -> tuple[str, list[Message]]:
    """A conversation to continue (None = the latest): its id and messages so far.

    It keeps its system prompt unless one is given now (a flag or LLM_SYSTEM_PROMPT): `flags`
    is updated in place.
    """
    cid, system, past = journal.history(conversation_id)
    if flags.get("system") is None and env.lookup("LLM_SYSTEM_PROMPT") is None:
        flags["system"] = system
    return cid, [Message(m["role"], m["content"]) for m in past]
