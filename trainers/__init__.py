"""Training: data → fine-tune → evaluate → export. Depends on intentkit, never the reverse."""
