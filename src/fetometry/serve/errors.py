"""The API's error shape: ``ApiError`` and the ``{"detail": reason, "error": code}`` JSON it becomes.

Shared by the middlewares (which answer before FastAPI runs), the exam service and the
routes, so it sits below all of them.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse

from fetometry.serve.settings import MIB


class ApiError(Exception):
    """An HTTP error with a reason: becomes ``{"detail": message, "error": code}``."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _too_large(size_bytes: int | None, limit_bytes: int) -> ApiError:
    size = f"{size_bytes / MIB:.1f} MB" if size_bytes else "more than the limit"
    return ApiError(
        413,
        "too_large",
        f"the upload is {size}; the limit is {limit_bytes / MIB:g} MB (the operator can change it with --max-upload-mb)",
    )


def _error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(
        {"detail": error.message, "error": error.code},
        status_code=error.status,
        headers={"Connection": "close"} if error.status == 413 else None,
    )
