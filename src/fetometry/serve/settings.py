"""Start-up settings of ``fetometry serve``: what the operator chose (trusted, unlike request fields).

Its own module so that the app, the middlewares and the exam service can all read the
settings without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass
class ServeSettings:
    """What the operator chose at start-up (trusted, unlike request fields)."""

    model: str | None = None
    max_upload_mb: float = 20.0
    db_url: str | None = None
    max_pending: int = 16
    #: JSON token file (``fetometry token create``); None: no login (loopback only).
    tokens_file: str | None = None
    #: SQLite file of the append-only audit log; None: the log is kept in memory (lost at exit).
    audit_path: str | None = None
    #: Requests a minute per token (per "local" without tokens); None: no limit.
    rate_limit_per_minute: int | None = None
    session_ttl_s: float = 8 * 3600.0
    #: Measured exams kept for correction, and for how long.
    exam_cache_size: int = 16
    exam_ttl_s: float = 1800.0

    def __post_init__(self) -> None:
        if not 0 < self.max_upload_mb <= 1024:
            raise ValueError(f"max upload {self.max_upload_mb} MB: choose 0-1024 MB")
        if self.max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        if self.rate_limit_per_minute is not None and self.rate_limit_per_minute < 1:
            raise ValueError(f"rate limit {self.rate_limit_per_minute}: choose at least 1 request a minute")
        if self.exam_cache_size < 1 or self.exam_ttl_s <= 0 or self.session_ttl_s <= 0:
            raise ValueError("exam_cache_size, exam_ttl_s and session_ttl_s must be positive")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MIB)
