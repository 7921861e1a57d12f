"""What one server process holds for its whole life: settings, the log, the token, the catalog."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmcli import config

if TYPE_CHECKING:
    from llmcli.serve.writer import QueuedJournal


class State:
    """Read once at start-up and shared by every request of one worker (one event loop).

    The journal is shared too: one thread of its own writes the rows, in the order the loop
    queues them (`llmcli.serve.writer`), so the loop never waits for the disk.
    """

    def __init__(
        self, env: config.Environment, token: str | None, ready: list[str], *, log: bool
    ) -> None:
        import logging

        from llmcli.serve.writer import QueuedJournal

        warn = logging.getLogger("llmcli.serve").warning
        self.env = env
        self.token = token.encode("utf-8") if token else None
        self.ready = ready
        self.journal: QueuedJournal = QueuedJournal(
            env, enabled=log, source="serve", warn=lambda problem: warn("warning: %s", problem)
        )
        self._models: list[tuple[str, str]] | None = None
        self._page: str | None = None

    def models(self) -> list[tuple[str, str]]:
        """(provider, model) for every model llmcli knows of the providers this server can use."""
        if self._models is None:
            from llmcli import catalog

            found = catalog.build(self.env, self.ready)
            self._models = [(x.provider, m.name) for x in found.listings for m in x.models]
        return self._models

    def page(self) -> str:
        """The chat page shipped in the package (llmcli/static/index.html)."""
        if self._page is None:
            from importlib import resources

            self._page = resources.files("llmcli").joinpath("static/index.html").read_text("utf-8")
        return self._page
