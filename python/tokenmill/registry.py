"""Encoding names: tokenmill's built-in definitions plus every `tiktoken_ext` plugin.

Plugins are found exactly as tiktoken finds them (modules of the `tiktoken_ext` namespace package
defining `ENCODING_CONSTRUCTORS`), so installed plugins work unchanged. Plugins import
`tiktoken.load`; when tiktoken itself is not installed, that import is served by `tokenmill.load`
for the duration of the plugin import.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import threading
import types
from collections.abc import Callable
from typing import Any

from tokenmill import _builtin_encodings
from tokenmill.core import Encoding

__all__ = ["ENCODINGS", "get_encoding", "list_encoding_names"]

_lock = threading.RLock()
ENCODINGS: dict[str, Encoding] = {}
_constructors: dict[str, Callable[[], dict[str, Any]]] | None = None

# tiktoken ships its own definitions of the public encodings as a plugin; ours are identical.
_SHADOWED_PLUGINS = {"tiktoken_ext.openai_public"}


def _plugin_modules() -> list[str]:
    try:
        import tiktoken_ext
    except ImportError:
        return []
    prefix = tiktoken_ext.__name__ + "."
    return [name for _, name, _ in pkgutil.iter_modules(tiktoken_ext.__path__, prefix)]


def _import_plugin(mod_name: str) -> types.ModuleType:
    try:
        import tiktoken  # noqa: F401
    except ImportError:
        pass
    else:
        return importlib.import_module(mod_name)
    from tokenmill import load

    shim = types.ModuleType("tiktoken")
    shim.load = load  # type: ignore[attr-defined]
    shim.__path__ = []  # a package, so that `tiktoken.load` resolves
    saved = {k: sys.modules.get(k) for k in ("tiktoken", "tiktoken.load")}
    sys.modules["tiktoken"] = shim
    sys.modules["tiktoken.load"] = load
    try:
        return importlib.import_module(mod_name)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def _find_constructors() -> dict[str, Callable[[], dict[str, Any]]]:
    global _constructors
    with _lock:
        if _constructors is not None:
            return _constructors
        found = dict(_builtin_encodings.ENCODING_CONSTRUCTORS)
        for mod_name in _plugin_modules():
            if mod_name in _SHADOWED_PLUGINS:
                continue
            mod = _import_plugin(mod_name)
            try:
                constructors = mod.ENCODING_CONSTRUCTORS
            except AttributeError as e:
                raise ValueError(
                    f"tiktoken plugin {mod_name} does not define ENCODING_CONSTRUCTORS"
                ) from e
            for name, constructor in constructors.items():
                if name in found:
                    raise ValueError(
                        f"Duplicate encoding name {name} in tiktoken plugin {mod_name}"
                    )
                found[name] = constructor
        _constructors = found
        return found


def get_encoding(encoding_name: str) -> Encoding:
    """The encoding of that name (cached). Unknown names raise ValueError listing the known
    ones; a file that is not on this machine raises `tokenmill.load.FileUnavailableError`."""
    if not isinstance(encoding_name, str):
        raise ValueError(f"Expected a string in get_encoding, got {type(encoding_name)}")
    if encoding_name in ENCODINGS:
        return ENCODINGS[encoding_name]
    with _lock:
        if encoding_name in ENCODINGS:
            return ENCODINGS[encoding_name]
        constructors = _find_constructors()
        if encoding_name not in constructors:
            raise ValueError(
                f"Unknown encoding {encoding_name}. Plugins found: {sorted(_plugin_modules())}; "
                f"available encodings: {sorted(constructors)}"
            )
        enc = Encoding(**constructors[encoding_name]())
        ENCODINGS[encoding_name] = enc
        return enc


def list_encoding_names() -> list[str]:
    return list(_find_constructors())
