"""Access control for ``fetometry serve``: bearer tokens, page sessions, per-token rate limits.

Tokens
------
``fetometry token create NAME --tokens FILE`` prints a new token ONCE; the file keeps only
its sha256 with the name, the role (``user`` or ``admin``), when it was created and when
it was revoked. A plain, unsalted sha256 is right here because the tokens are 256-bit
random secrets (``secrets.token_urlsafe(32)``): nobody can guess or brute-force a
pre-image of one, so the slow, salted hashes that protect low-entropy PASSWORDS would add
cost and nothing else. Comparisons use ``hmac.compare_digest``.

The server re-reads the file whenever its inode, mtime or size changes (the CLI writes it
atomically, temp file + ``os.replace``), so a revoked token fails at its NEXT request; a
request that already passed the check runs to its end. An unreadable file fails closed.

Sessions
--------
``POST /api/login`` with a token opens a server-side session: a random id in an HttpOnly,
SameSite=Strict cookie; the server keeps the token's name and creation time (never the
token) and an expiry. A session dies with its token: every request re-checks that the
token it came from is still there and not revoked.

Rate limits
-----------
A token bucket per actor in memory: ``N`` requests a minute, bursts up to ``N``; beyond
that HTTP 429 with ``Retry-After`` (whole seconds).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import re
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

log = logging.getLogger(__name__)

ROLES = ("user", "admin")
#: Token names name a person or a service, never a patient: short, plain, no spaces.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
FILE_VERSION = 1
SESSION_COOKIE = "fetometry_session"
LOCAL_ACTOR = "local"


class TokenFileError(ValueError):
    """The token file is missing, unreadable or malformed, or a token command is invalid."""


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def hash_token(token: str) -> str:
    """sha256 hex of a token (see the module docstring for why a plain hash suffices)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TokenEntry:
    name: str
    role: str
    sha256: str
    created: str
    revoked: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked is None

    @property
    def admin(self) -> bool:
        return self.role == "admin"

    def public(self) -> dict:
        """What ``token list`` shows: everything but the hash."""
        return {"name": self.name, "role": self.role, "created": self.created, "revoked": self.revoked}


# ------------------------------------------------------------------------ the file


def read_tokens(path: str | Path) -> list[TokenEntry]:
    """The entries of a token file (TokenFileError when missing or malformed)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TokenFileError(f"{path}: no token file; create one with `fetometry token create NAME --tokens {path}`")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TokenFileError(f"{path}: not a readable token file ({type(error).__name__})") from None
    if not isinstance(data, dict) or not isinstance(data.get("tokens"), list):
        raise TokenFileError(f"{path}: not a fetometry token file (no 'tokens' list)")
    entries = []
    for item in data["tokens"]:
        try:
            entry = TokenEntry(
                str(item["name"]), str(item["role"]), str(item["sha256"]), str(item["created"]), item.get("revoked")
            )
        except (KeyError, TypeError):
            raise TokenFileError(f"{path}: a token entry lacks name, role, sha256 or created") from None
        if entry.role not in ROLES or not re.fullmatch(r"[0-9a-f]{64}", entry.sha256):
            raise TokenFileError(f"{path}: token {entry.name!r} has a bad role or hash")
        entries.append(entry)
    return entries


def write_tokens(path: str | Path, entries: list[TokenEntry]) -> None:
    """Write atomically (temp file in the same folder, fsync, ``os.replace``), mode 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "version": FILE_VERSION,
        "tokens": [{**entry.public(), "sha256": entry.sha256} for entry in entries],
    }
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp: mode 0600
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            os.fchmod(out.fileno(), 0o600)
            json.dump(payload, out, indent=2)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def create_token(path: str | Path, name: str, *, admin: bool = False) -> str:
    """Add a token named ``name``; return the token (shown once, never stored)."""
    if not NAME_PATTERN.match(name or ""):
        raise TokenFileError(
            f"token name {name!r}: 1-64 letters, digits, '.', '_', '@' or '-' (a person or a service, never a patient)"
        )
    path = Path(path)
    entries = read_tokens(path) if path.exists() else []
    if any(e.name == name and e.active for e in entries):
        raise TokenFileError(f"an active token named {name!r} exists; revoke it first or choose another name")
    token = secrets.token_urlsafe(32)
    entries.append(TokenEntry(name, "admin" if admin else "user", hash_token(token), _now_iso()))
    write_tokens(path, entries)
    return token


def revoke_token(path: str | Path, name: str) -> int:
    """Mark every active token named ``name`` revoked; return how many (TokenFileError if none)."""
    entries = read_tokens(path)
    stamp = _now_iso()
    count = sum(1 for e in entries if e.name == name and e.active)
    if count == 0:
        raise TokenFileError(f"no active token named {name!r} in {path}")
    write_tokens(path, [TokenEntry(**{**e.__dict__, "revoked": stamp}) if e.name == name else e for e in entries])
    return count


class TokenStore:
    """The token file as the server sees it: re-read when it changes, checked in constant time."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._entries: list[TokenEntry] = []
        self._entries = read_tokens(self.path)  # a bad file fails at start-up
        self._stamp = self._file_stamp()

    def _file_stamp(self) -> tuple | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def entries(self) -> list[TokenEntry]:
        """The current entries; an unreadable file gives none (fail closed) and a logged error."""
        stamp = self._file_stamp()
        with self._lock:
            if stamp != self._stamp:
                try:
                    self._entries = read_tokens(self.path) if stamp is not None else []
                except TokenFileError as error:
                    log.error("token file changed and cannot be read; refusing every token: %s", error)
                    self._entries = []
                if stamp is None:
                    log.error("token file %s is gone; refusing every token", self.path)
                self._stamp = stamp
            return self._entries

    def lookup(self, token: str) -> TokenEntry | None:
        """The entry whose hash matches ``token`` (revoked or not), or None; every entry is compared."""
        digest = hash_token(token)
        found = None
        for entry in self.entries():
            if hmac.compare_digest(entry.sha256, digest):
                found = entry
        return found

    def current(self, name: str, created: str) -> TokenEntry | None:
        """The active entry a session was opened with, or None when it was revoked or removed."""
        for entry in self.entries():
            if entry.name == name and entry.created == created and entry.active:
                return entry
        return None


# ------------------------------------------------------------------------ sessions


@dataclass
class Session:
    name: str
    role: str
    token_created: str
    expires: float


class SessionStore:
    """Server-side page sessions: random id -> token name and role; bounded, expiring."""

    def __init__(self, ttl_s: float = 8 * 3600, max_sessions: int = 1000, clock=time.monotonic):
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def open(self, entry: TokenEntry) -> str:
        session_id = secrets.token_urlsafe(32)
        with self._lock:
            self._expire()
            if len(self._sessions) >= self.max_sessions:  # drop the oldest to stay bounded
                oldest = min(self._sessions, key=lambda k: self._sessions[k].expires)
                del self._sessions[oldest]
            self._sessions[session_id] = Session(entry.name, entry.role, entry.created, self._clock() + self.ttl_s)
        return session_id

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        with self._lock:
            self._expire()
            return self._sessions.get(session_id)

    def close(self, session_id: str | None) -> None:
        with self._lock:
            self._sessions.pop(session_id or "", None)

    def _expire(self) -> None:
        now = self._clock()
        for key in [k for k, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[key]


# ---------------------------------------------------------------------- rate limits


class RateLimiter:
    """Token bucket per actor: ``per_minute`` requests a minute, bursts up to ``per_minute``."""

    def __init__(self, per_minute: int, clock=time.monotonic):
        if per_minute < 1:
            raise ValueError(f"--rate-limit {per_minute}: choose at least 1 request a minute")
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, actor: str) -> float:
        """0 when the request may go on, else the seconds to wait before the next one."""
        now = self._clock()
        with self._lock:
            level, last = self._buckets.get(actor, (self.capacity, now))
            level = min(self.capacity, level + (now - last) * self.rate)
            if level >= 1.0:
                self._buckets[actor] = (level - 1.0, now)
                return 0.0
            self._buckets[actor] = (level, now)
            return (1.0 - level) / self.rate


def retry_after_header(wait_s: float) -> str:
    return str(max(1, math.ceil(wait_s)))


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header, or None."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
