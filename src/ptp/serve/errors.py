"""OpenAI-shaped errors: ``{"error": {"message", "type", "param", "code"}}`` with a 4xx/5xx status."""

from __future__ import annotations

from fastapi.responses import JSONResponse

INVALID_REQUEST = "invalid_request_error"


class APIError(Exception):
    """A request the server refuses; becomes an OpenAI-shaped JSON error response."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str = INVALID_REQUEST,  # the body's "type" field
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.param = param
        self.code = code

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, error_type=self.error_type, param=self.param, code=self.code)


def error_response(
    status: int,
    message: str,
    *,
    error_type: str = INVALID_REQUEST,  # the body's "type" field
    param: str | None = None,
    code: str | None = None,
) -> JSONResponse:
    body = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status)


def invalid(param: str, message: str, code: str = "invalid_value") -> APIError:
    """400 for one bad request field."""
    return APIError(400, message, param=param, code=code)
