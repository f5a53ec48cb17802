"""The embedded default: a ready router on the bundled model and the demo intents.

:meth:`Router.default() <intentkit.Router.default>` (through :func:`default_router`) loads gemma-3-270m
Q4_K_M with the bundled smart-home adapter through llama.cpp (offline; the derived files are
built once into the cache) and registers the demo handlers (:class:`intentkit.demo.SmartHome`).
This module is the one place where the router meets a specific engine and the demo: it knows
them, and the router module knows neither (it is given the router class, so no import runs back).
"""

from __future__ import annotations

from typing import Any

from .backends.llamacpp import LlamaCppBackend
from .demo import SmartHome

__all__ = ["default_router"]


def default_router(router_class: Any, *, home: SmartHome | None = None, **settings: Any) -> Any:
    """A ``router_class`` (:class:`~intentkit.Router` or a subclass) on the embedded model with
    the demo intents registered on ``home`` (a new :class:`SmartHome` by default). ``settings``
    are :class:`~intentkit.RouterConfig` fields; the prompt is the one the adapter was trained with."""
    backend = LlamaCppBackend.default()
    try:
        router = router_class(backend, **settings)
        (home or SmartHome()).register(router)
    except BaseException:
        backend.close()
        raise
    return router
