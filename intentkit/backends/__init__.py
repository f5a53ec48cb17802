"""Backends: the interface (:mod:`.base`), a fake for tests (:mod:`.fake`), one module or package
per engine (:mod:`.llamacpp`, :mod:`.transformers`, :mod:`.openai`), the machinery the in-process
ones share (:mod:`.local`, :mod:`.generator`, :mod:`.decoding`) and :func:`load_backend`. Only the
interface, the fake and the factory are imported here; the real backends load their heavy
dependencies when constructed."""

from .base import Backend, GenerateRequest, Generation
from .factory import load_backend
from .fake import FakeBackend

__all__ = ["Backend", "FakeBackend", "GenerateRequest", "Generation", "load_backend"]
