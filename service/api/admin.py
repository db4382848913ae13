"""Bearer-token guard for the admin (model repository) endpoints.

The token is a setting (EXITSERVE_ADMIN_TOKEN); without one the endpoints stay shut unless
`admin_auth_disabled` says otherwise explicitly. Tokens are compared in constant time.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.api.context import settings
from service.errors import ExitServeError, Unauthorized

bearer = HTTPBearer(auto_error=False, description="EXITSERVE_ADMIN_TOKEN of the server")


class Forbidden(ExitServeError):
    """No token could work: the server has none configured."""

    status_code = 403


async def require_admin(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
) -> None:
    """Let the request through only with the server's bearer token (or with auth off)."""
    config = settings(request)
    if config.admin_auth_disabled:
        return
    if config.admin_token is None:
        raise Forbidden("the repository API is off: the server has no EXITSERVE_ADMIN_TOKEN")
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized()
    expected = config.admin_token.get_secret_value().encode()
    if not hmac.compare_digest(credentials.credentials.encode(), expected):
        raise Unauthorized()
