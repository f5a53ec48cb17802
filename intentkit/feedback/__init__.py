"""The improvement loop: a request log (SQLite or PostgreSQL), feedback on its rows, the review
queue, and labelled rows back out as training data. ``pip install 'intentkit-router[log]'``."""

from .records import CorrectionError, dataset_row, dataset_rows, export_corrections, from_result, validate_correction
from .store import FeedbackRow, LoggedRequest, RequestLog, Vote

__all__ = [
    "CorrectionError",
    "FeedbackRow",
    "LoggedRequest",
    "RequestLog",
    "Vote",
    "dataset_row",
    "dataset_rows",
    "export_corrections",
    "from_result",
    "validate_correction",
]
