"""Bundled model artefacts (installed as ``intentkit.models``): see ``smart-home/README.md``."""
