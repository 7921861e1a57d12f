"""The provider registry: adding a protocol is one module plus one line here.

`PROTOCOLS` names modules rather than importing them, so listing providers (for `--help`, `config
validate`, `cost`) costs nothing; each module imports its SDK only inside its methods. A provider
is a `ProviderSpec` (the built-in ones are each module's `SPEC`; a named endpoint from a config
file is `register`ed at run time) and an instance of its protocol's class, made by `connect`.
"""

from __future__ import annotations

import importlib
import threading
from collections import OrderedDict
from types import ModuleType

from llmcli.providers.base import Provider, ProviderSpec
from llmcli.secret import Secret

PROTOCOLS: dict[str, str] = {
    "openai": "llmcli.providers.openai",
    "anthropic": "llmcli.providers.anthropic",
    "gemini": "llmcli.providers.gemini",
    "echo": "llmcli.providers.echo",
}
# The built-in providers are named after the protocol they speak.
BUILTIN = tuple(PROTOCOLS)

_registered: dict[str, ProviderSpec] = {}
_connected: OrderedDict[tuple[object, ...], Provider] = OrderedDict()
_KEEP_CONNECTED = 16  # instances (and their connections) kept for reuse across calls
_lock = threading.Lock()  # threads of one server share the kept instances


def _module(protocol: str) -> ModuleType:
    return importlib.import_module(PROTOCOLS[protocol])


def names() -> list[str]:
    """Every provider name: the built-in ones in registry order, then registered endpoints."""
    return [*BUILTIN, *_registered]


def known(name: str) -> bool:
    return name in BUILTIN or name in _registered


def spec(name: str) -> ProviderSpec:
    """The spec for `name` (KeyError if unknown: callers validate names first)."""
    if name in _registered:
        return _registered[name]
    if name not in BUILTIN:
        raise KeyError(name)
    return _module(name).SPEC


def register(provider: ProviderSpec) -> None:
    """Add a named endpoint that speaks one of the protocols (e.g. from a config file)."""
    if provider.name in BUILTIN:
        raise ValueError(f"{provider.name!r} is a built-in provider")
    if provider.protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {provider.protocol!r}")
    _registered[provider.name] = provider


def unregister(name: str) -> None:
    """Forget a registered endpoint and close its kept instances (a reloaded config, tests).

    Its instances go too: one kept under the old spec would go on answering for a name that
    no longer means it.
    """
    found = _registered.pop(name, None)
    with _lock:
        for key in [k for k in _connected if k[0] == found]:
            _connected.pop(key).close()


def protocol(provider: str | ProviderSpec) -> type[Provider]:
    """The class that speaks `provider`'s wire: its capabilities are class attributes."""
    found = provider if isinstance(provider, ProviderSpec) else spec(provider)
    return _module(found.protocol).PROVIDER


def connect(
    provider: str | ProviderSpec, api_key: Secret | None = None, base_url: str | None = None
) -> Provider:
    """A provider instance for this key and endpoint, reused while the process lives.

    Reuse is the point: a chat's turns and a call's retries share one SDK client and its open
    connections instead of a new TLS handshake each time.
    """
    found = provider if isinstance(provider, ProviderSpec) else spec(provider)
    key = (found, api_key, base_url)
    with _lock:
        instance = _connected.get(key)
        if instance is None:
            instance = protocol(found)(found, api_key, base_url)
            _connected[key] = instance
            while len(_connected) > _KEEP_CONNECTED:
                _connected.popitem(last=False)[1].close()
        _connected.move_to_end(key)
        return instance


def disconnect() -> None:
    """Close every kept provider's connections (tests, a server shutting down)."""
    with _lock:
        while _connected:
            _connected.popitem()[1].close()
