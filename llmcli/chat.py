"""A multi-turn conversation: the history the provider sees, what it cost, and the log.

The seed's core idea: the messages array is the conversation, and each turn sends all of it.
A turn joins the history only when it succeeds, so a failed or cancelled turn never leaves an
unanswered user message behind. Each turn goes through the one call lifecycle, and its log row
refers to the previous turn's instead of repeating the conversation, so a long chat's log grows
with what is said, not with its square. No terminal I/O here: `commands/chat.py` owns the prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from llmcli import config, core, errors, lifecycle
from llmcli.calllog import Conversation
from llmcli.journal import Journal, messages_of, new_conversation_id
from llmcli.journal import resume as continue_conversation
from llmcli.retry import RetryNotice
from llmcli.types import Attachment, Message, Response, Text


@dataclass
class Totals:
    """What a session has used so far; unknown costs are counted, never added as $0."""

    turns: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
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
        from llmcli.money import usd
        from llmcli.wording import plural

        cost = usd(self.cost_usd)
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
    #: The conversation as logged (its last answered row): the next turn's row refers to it.
    logged: Conversation | None = None
    #: `history` and `logged` before the last turn joined, for `/retry`.
    previous: tuple[list[Message], Conversation | None] | None = None
    #: Files for the next message (`-a`, `/attach`), and those the last message took.
    pending: list[Attachment] = field(default_factory=list)
    last_files: list[Attachment] = field(default_factory=list)

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
            session.logged = continue_conversation(journal, conversation_id, session.flags, env)
            session.conversation_id = session.logged.conversation_id
            session.history = messages_of(session.logged)
        session.check(chain=True)
        return session

    def check(self, *, chain: bool = False) -> core.Call:
        """Resolve and validate the current settings (fail fast, before anything is typed);
        with `chain`, the `--fallback` providers too (their keys and options)."""
        call = core.prepare([Message("user", "check")], self.flags, self.env)
        if chain:
            core.fallbacks(call, self.flags, self.env)
        return call

    @property
    def provider(self) -> str:
        return self.check().request.provider

    @property
    def model(self) -> str:
        return self.check().request.model

    def send(self, text: str, deliver: Callable[[str], object]) -> lifecycle.Outcome:
        """One turn: the reply streams to `deliver`, then joins the totals and the log, and the
        history if it is whole.

        A filtered reply comes back with its problem (exit 8), as `ask` would; it stays out of the
        history, as would an empty reply, which providers reject as an assistant turn. A failed
        or cancelled turn is logged by the lifecycle and raised; the history stays as it was.
        """
        self.last_prompt = text
        self.last_joined = False
        files = self.pending
        content = (*files, Text(text)) if files else text
        call = core.prepare([*self.history, Message("user", content)], self.flags, self.env)
        # They went with this message (sent, or failed with it): /retry sends them again.
        self.pending, self.last_files = [], files
        outcome = lifecycle.run(
            call,
            self.journal,
            conversation_id=self.conversation_id,
            before=self.logged,
            stream=True,
            deliver=deliver,
            on_retry=self.on_retry,
            fallbacks=core.fallbacks(call, self.flags, self.env),
            on_fallback=self.on_retry,
        )
        response = outcome.response
        self.totals.add(response)
        if response.text and outcome.problem is None:
            self.previous = (self.history, self.logged)
            self.history = [*call.request.messages, Message("assistant", response.text)]
            self.logged = Conversation(
                self.conversation_id,
                call.request.system,
                tuple(m.to_dict() for m in self.history),
                outcome.logged.uid if outcome.logged else None,
            )
            self.last_joined = True
        return outcome

    def retry_prompt(self) -> str | None:
        """The message `/retry` sends again; drops its earlier answer from the history."""
        if self.last_prompt is None:
            return None
        self.pending = [*self.last_files, *self.pending]
        if self.last_joined and self.previous is not None:
            # Only the last turn's own exchange, never an earlier look-alike.
            self.history, self.logged = self.previous
            self.previous = None
            self.last_joined = False
        return self.last_prompt

    def attach(self, attachment: Attachment) -> None:
        """Add a file to the next message, checked now against the provider's types and limits
        (with the conversation's files), so a refusal comes before the message is typed."""
        files = (*self.pending, attachment, Text("check"))
        core.prepare([*self.history, Message("user", files)], self.flags, self.env)
        self.pending.append(attachment)

    def clear(self) -> None:
        """Forget the history and start a new conversation id (settings and totals stay)."""
        self.history = []
        self.logged = None
        self.previous = None
        self.conversation_id = new_conversation_id()
        self.last_prompt = None
        self.last_joined = False

    def set(self, name: str, value: Any) -> None:
        """Change a setting for the next turns (checked now; the old value stays on error)."""
        setting = config.SETTINGS_BY_NAME[name]
        if value != "" or name != "system":
            try:
                setting.parse(value)
            except ValueError as exc:
                raise errors.UsageError(f"invalid value for /{name}: {value!r} {exc}") from None
        before = dict(self.flags)
        self.flags[name] = value
        if name == "provider":
            self.flags["model"] = None if before.get("provider") != value else before.get("model")
        try:
            self.check()
        except errors.LlmcliError:
            self.flags = before
            raise
