"""A small Orthanc REST client: the change feed, tags, streamed downloads, uploads, UID look-ups.

Only what ``pacs watch`` needs. HTTP basic auth (the password comes from a file, see
``read_password_file``, and is never logged); a timeout on every request; connection
errors and 5xx answers are retried with bounded exponential back-off and jitter, after
which ``OrthancUnavailable`` is raised; 401/403 raise ``OrthancAuthError`` at once (a
wrong password never turns into a retry loop).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

__all__ = [
    "Change",
    "ChangePage",
    "OrthancAuthError",
    "OrthancClient",
    "OrthancError",
    "OrthancNotFound",
    "OrthancUnavailable",
    "read_password_file",
]

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20


class OrthancError(RuntimeError):
    """Orthanc answered something this client cannot use (the message says what)."""


class OrthancAuthError(OrthancError):
    """Orthanc refused the credentials (HTTP 401/403): stop, do not retry."""


class OrthancUnavailable(OrthancError):
    """Orthanc could not be reached (or kept answering 5xx) after the bounded retries."""


class OrthancNotFound(OrthancError):
    """The resource is gone (HTTP 404), e.g. an instance deleted after its change was logged."""


@dataclass(frozen=True)
class Change:
    seq: int
    change_type: str
    resource_type: str
    resource_id: str


@dataclass(frozen=True)
class ChangePage:
    changes: list[Change]
    last: int
    done: bool


def read_password_file(path: str | Path) -> str:
    """The password in ``path`` (first line, surrounding whitespace stripped); ValueError if empty."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such password file")
    lines = path.read_text(encoding="utf-8").splitlines()
    password = lines[0].strip() if lines else ""
    if not password:
        raise ValueError(f"{path}: the password file is empty")
    return password


class OrthancClient:
    """One Orthanc server. ``transport``: an httpx transport (tests pass ``httpx.MockTransport``)."""

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 30.0,
        retries: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"{url!r}: the Orthanc address must start with http:// or https://")
        if (username is None) != (password is None):
            raise ValueError("give both a username and a password file, or neither")
        self.url = url.rstrip("/")
        self.retries = max(0, int(retries))
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._sleep = sleep
        auth = httpx.BasicAuth(username, password) if username is not None else None
        self._http = httpx.Client(base_url=self.url, auth=auth, timeout=timeout_s, transport=transport)

    # ------------------------------------------------------------------ plumbing

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> OrthancClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _delay(self, attempt: int) -> float:
        """Exponential back-off, capped, with full jitter in [50 %, 100 %]."""
        base = min(self.max_backoff_s, self.backoff_s * (2**attempt))
        return base * (0.5 + 0.5 * random.random())

    def _check(self, response: httpx.Response, what: str) -> None:
        if response.status_code in (401, 403):
            raise OrthancAuthError(
                f"Orthanc refused the credentials for {what} (HTTP {response.status_code}); "
                "check --username and --password-file"
            )
        if response.status_code == 404:
            raise OrthancNotFound(f"{what}: not found on the Orthanc server (HTTP 404)")
        if response.status_code >= 400:
            raise OrthancError(f"{what}: Orthanc answered HTTP {response.status_code}")

    def _retrying(self, what: str, attempt_once: Callable[[], object]):
        """Run ``attempt_once`` (which raises httpx errors or returns), retrying transient failures."""
        for attempt in range(self.retries + 1):
            try:
                return attempt_once()
            except (httpx.TransportError, _ServerError) as error:
                reason = f"HTTP {error.status}" if isinstance(error, _ServerError) else type(error).__name__
                if attempt == self.retries:
                    raise OrthancUnavailable(
                        f"{what}: Orthanc at {self.url} unavailable after {self.retries + 1} attempts ({reason})"
                    ) from None
                delay = self._delay(attempt)
                log.warning("%s: %s; retrying in %.1f s", what, reason, delay)
                self._sleep(delay)
        raise AssertionError("unreachable")

    def _request(self, method: str, path: str, what: str, **kwargs) -> httpx.Response:
        def once() -> httpx.Response:
            response = self._http.request(method, path, **kwargs)
            if response.status_code >= 500:
                raise _ServerError(response.status_code)
            self._check(response, what)
            return response

        return self._retrying(what, once)

    # ------------------------------------------------------------------ the API

    def system(self) -> dict:
        """``GET /system``: a cheap call that also checks the credentials."""
        return self._request("GET", "/system", "GET /system").json()

    def changes(self, since: int = 0, limit: int = 100) -> ChangePage:
        """``GET /changes?since=&limit=``: changes with a sequence number above ``since``."""
        body = self._request("GET", "/changes", "GET /changes", params={"since": since, "limit": limit}).json()
        changes = [
            Change(int(c["Seq"]), str(c["ChangeType"]), str(c.get("ResourceType", "")), str(c["ID"]))
            for c in body.get("Changes", [])
        ]
        return ChangePage(changes, int(body.get("Last", since)), bool(body.get("Done", True)))

    def simplified_tags(self, instance_id: str) -> dict:
        return self._request("GET", f"/instances/{instance_id}/simplified-tags", "GET instance tags").json()

    def instance(self, instance_id: str) -> dict:
        """``GET /instances/{id}``: ParentSeries, MainDicomTags, FileSize, ..."""
        return self._request("GET", f"/instances/{instance_id}", "GET instance").json()

    def download(self, instance_id: str, dest: str | Path) -> Path:
        """Stream ``/instances/{id}/file`` to ``dest`` in 1 MiB chunks (never whole in memory)."""
        dest = Path(dest)
        what = "GET instance file"

        def once() -> Path:
            with self._http.stream("GET", f"/instances/{instance_id}/file") as response:
                if response.status_code >= 500:
                    raise _ServerError(response.status_code)
                self._check(response, what)
                with dest.open("wb") as out:
                    for chunk in response.iter_bytes(CHUNK_BYTES):
                        out.write(chunk)
            return dest

        return self._retrying(what, once)

    def upload(self, data: bytes) -> dict:
        """``POST /instances``: store one DICOM file; Orthanc answers its ID and Status."""
        headers = {"Content-Type": "application/dicom"}
        return self._request("POST", "/instances", "POST /instances", content=data, headers=headers).json()

    def find_instances(self, sop_instance_uid: str) -> list[str]:
        """Orthanc IDs of stored instances with this SOP Instance UID (``/tools/lookup``)."""
        hits = self._request("POST", "/tools/lookup", "POST /tools/lookup", content=sop_instance_uid).json()
        return [hit["ID"] for hit in hits if hit.get("Type") == "Instance"]

    def has_instance(self, sop_instance_uid: str) -> bool:
        return bool(self.find_instances(sop_instance_uid))

    def study_instances(self, study_id: str) -> list[dict]:
        """``GET /studies/{id}/instances`` (each with MainDicomTags)."""
        return self._request("GET", f"/studies/{study_id}/instances", "GET study instances").json()


class _ServerError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status
