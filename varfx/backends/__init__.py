"""The backend registry.

Built-in backends are listed in :data:`BUILTIN` and imported when named.
Third-party packages add backends under the entry-point group ``varfx.backends``
(``name = "package.module:BackendClass"``); they are imported only when asked for.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from ..errors import OptionError
from .base import Backend

GROUP = "varfx.backends"

#: name -> "module:Class"
BUILTIN = {
    "torchscript": "varfx.backends.torchscript:TorchScriptBackend",
    "keras": "varfx.backends.keras:KerasBackend",
    "clipnet": "varfx.backends.clipnet:ClipnetBackend",
    "enformer": "varfx.backends.enformer:EnformerBackend",
    "spliceai": "varfx.backends.spliceai:SpliceAIBackend",
}


def _plugins() -> dict:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def available() -> dict[str, dict]:
    """Every backend name with its origin, summary and needs (plugins are imported to describe them)."""
    out = {}
    for name, target in BUILTIN.items():
        cls = _import(target)
        out[name] = {"origin": "built-in", "summary": cls.summary, "needs": cls.needs}
    for name, ep in _plugins().items():
        if name in out:
            continue
        dist = getattr(ep, "dist", None)
        origin = f"plugin ({dist.name})" if dist is not None else "plugin"
        try:
            cls = ep.load()
            out[name] = {"origin": origin, "summary": getattr(cls, "summary", ""), "needs": getattr(cls, "needs", "")}
        except Exception as exc:  # a broken plugin must not break the listing
            out[name] = {"origin": origin, "summary": f"(cannot be imported: {exc})", "needs": ""}
    return out


def _import(target: str):
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def backend_class(name: str) -> type[Backend]:
    if name in BUILTIN:
        return _import(BUILTIN[name])
    plugins = _plugins()
    if name in plugins:
        return plugins[name].load()
    known = sorted(set(BUILTIN) | set(plugins))
    raise OptionError(f"unknown backend {name!r}; known backends: {', '.join(known)} (see `varfx backends`)")


def load_backend(name: str, weights: list[str] | str | None = None, **options) -> Backend:
    """Build backend ``name`` from local weight files and backend options."""
    if isinstance(weights, str):
        weights = [weights]
    return backend_class(name)(weights=list(weights or []), **options)


__all__ = ["Backend", "BUILTIN", "GROUP", "available", "backend_class", "load_backend"]
