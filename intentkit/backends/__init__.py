"""Backends: one module each. Only the interface and the fake are imported here; the real
backends load their heavy dependencies when constructed."""

from .base import Backend, GenerateRequest, Generation
from .fake import FakeBackend

__all__ = ["Backend", "FakeBackend", "GenerateRequest", "Generation"]
