"""A multi-turn conversation: the history the provider sees, what it cost, and the log.

The seed's core idea: the messages array is the conversation, and each turn sends all of it.
A turn joins the history only when it succeeds, so a failed or cancelled turn never leaves an
unanswered user message behind. No terminal I/O here: `commands/chat.py` owns the prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from llmcli import config, core, errors
from llmcli.journal import Journal, new_conversation_id
from llmcli.journal import resume as continue_conversation
from llmcli.retry import RetryNotice
from llmcli.types import Message, Response


@dataclass
class Totals:
    """What a session has used so far; unknown costs are counted, never added as $0."""

    turns: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    unpriced: int = 0

    def add(self, response: Response) -> None:
        self.turns += 1
        self.input_tokens += response.usage.input_tokens or 0
        self.output_tokens += response.usage.output_tokens or 0
        if response.cost_usd is None:
            self.unpriced += 1
        else:
            self.cost_usd += response.cost_usd

    def __str__(self) -> str:
        from llmcli.wording import plural

        cost = f"${self.cost_usd:,.6f}"
        if self.unpriced:
            cost += f" + n/a ({plural(self.unpriced, 'turn')})"
        return f"{plural(self.turns, 'turn')} · tokens: {self.input_tokens:,} in, {self.output_tokens:,} out · cost {cost}"


@dataclass
class ChatSession:
    """One conversation: settings that slash commands may change, its history and its totals."""

    env: config.Environment
    flags: dict[str, Any]
    journal: Journal
    conversation_id: str = field(default_factory=new_conversation_id)
    history: list[Message] = field(default_factory=list)
    totals: Totals = field(default_factory=Totals)
    last_prompt: str | None = None
    last_joined: bool = False  # whether the last turn's exchange is the end of `history`
    on_retry: Callable[[RetryNotice], None] | None = None

    @classmethod
    def start(
        cls,
        env: config.Environment,
        flags: Mapping[str, Any],
        journal: Journal,
        *,
        resume: bool = False,
        conversation_id: str | None = None,
    ) -> ChatSession:
        """A new session, or one resuming the latest (`resume`) or a given conversation."""
        flags = dict(flags)
        session = cls(env, flags, journal)
        if resume or conversation_id:
            session.conversation_id, session.history = continue_conversation(
                journal, conversation_id, session.flags, env
            )
        session.check()
        return session

    def check(self) -> core.Call:
        """Resolve and validate the current settings (fail fast, before anything is typed)."""
        return core.prepare([Message("user", "check")], self.flags, self.env)

    @property
    def provider(self) -> str:
        return self.check().request.provider

    @property
    def model(self) -> str:
        return self.check().request.model

    def turn(self, text: str) -> core.Stream:
        """Start a turn: a stream to iterate; call `finish` with it, or `abandon` on failure."""
        self.last_prompt = text
        self.last_joined = False
        call = core.prepare([*self.history, Message("user", text)], self.flags, self.env)
        return core.Stream(call, on_retry=self.on_retry, price=False)

    def finish(self, stream: core.Stream) -> tuple[Response, errors.IncompleteAnswer | None]:
        """The reply arrived: it joins the totals and the log, and the history if it is whole.

        A filtered reply is returned with its error (exit 8), as `ask` would; it stays out of the
        history, as would an empty reply, which providers reject as an assistant turn.
        """
        assert stream.response is not None
        response = core.priced(stream.call, stream.response)  # after the reply is on screen
        problem = core.incomplete(response, strict=False)
        if response.text and problem is None:
            self.history = [*stream.call.request.messages, Message("assistant", response.text)]
            self.last_joined = True
        self.totals.add(response)
        self.journal.record(
            stream.call, conversation_id=self.conversation_id, response=response, error=problem
        )
        return response, problem

    def abandon(
        self, stream: core.Stream | None, error: errors.LlmcliError, *, interrupted: bool = False
    ) -> None:
        """The turn failed or was cancelled: log it, and leave the history as it was."""
        if stream is None or stream.started is None:  # never sent: nothing to log
            return
        self.journal.record(
            stream.call,
            conversation_id=self.conversation_id,
            error=error,
            status="interrupted" if interrupted else "error",
            partial_text=stream.text,
        )

    def retry_prompt(self) -> str | None:
        """The message `/retry` sends again; drops its earlier answer from the history."""
        if self.last_prompt is None:
            return None
        if self.last_joined:  # only the last turn's own exchange, never an earlier look-alike
            self.history = self.history[:-2]
            self.last_joined = False
        return self.last_prompt

    def clear(self) -> None:
        """Forget the history and start a new conversation id (settings and totals stay)."""
        self.history = []
        self.conversation_id = new_conversation_id()
        self.last_prompt = None
        self.last_joined = False

    def set(self, name: str, value: Any) -> None:
        """Change a setting for the next turns (checked now; the old value stays on error)."""
        before = dict(self.flags)
        self.flags[name] = value
        if name == "provider":
            self.flags["model"] = None if before.get("provider") != value else before.get("model")
        try:
            self.check()
        except errors.LlmcliError:
            self.flags = before
            raise
