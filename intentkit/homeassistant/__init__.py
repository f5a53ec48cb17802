"""Home Assistant and Wyoming (``pip install 'intentkit-router[homeassistant]'``): Home
Assistant's intents as a registry (:func:`registry_for`), the home whose names they use
(:class:`Home`), and the services that connect intentkit to a real Home Assistant."""

from .home import Area, Entity, Floor, Home
from .intents import language_intents, registry_for, slot_values

__all__ = ["Area", "Entity", "Floor", "Home", "language_intents", "registry_for", "slot_values"]
