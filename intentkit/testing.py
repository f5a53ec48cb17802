"""Public test helpers: route through a scripted backend instead of a model."""

from .backends.fake import FakeBackend

__all__ = ["FakeBackend"]
