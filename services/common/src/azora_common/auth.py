"""Bearer-token authentication with scopes.

``admin`` guards ``/admin/*``; each service defines read/write scopes (``ledger:read``, …).
A token with ``*`` holds every API scope, never ``admin``: configuration (rules, routes, cohorts,
keys) is changed only by a token granted ``admin`` explicitly (the operator's). No write
endpoint is open.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from azora_common.errors import Forbidden, Unauthorized
from azora_common.settings import ServiceSettings

ADMIN_SCOPE = "admin"

_bearer = HTTPBearer(auto_error=False, description="Azora API or admin token")


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    scopes: frozenset[str]

    def has(self, scope: str) -> bool:
        if scope == ADMIN_SCOPE:
            # Never through the wildcard: a "*" API token once went live with a hidden 100 %-off
            # pricing rule and deleted a rule its promotion code depended on.
            return ADMIN_SCOPE in self.scopes
        return "*" in self.scopes or scope in self.scopes


class TokenAuthenticator:
    def __init__(self, tokens: dict[str, frozenset[str]]) -> None:
        self._tokens = [(t.encode(), scopes) for t, scopes in tokens.items() if t]

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> TokenAuthenticator:
        tokens = {t: frozenset(s) for t, s in settings.api_tokens.items()}
        admin = settings.admin_token.get_secret_value()
        if admin:
            tokens[admin] = tokens.get(admin, frozenset()) | {ADMIN_SCOPE}
        return cls(tokens)

    def authenticate(self, token: str) -> Principal | None:
        candidate = token.encode()
        found: frozenset[str] | None = None
        # Compare against every token in constant time so timing tells nothing about which
        # prefix matched.
        for known, scopes in self._tokens:
            if hmac.compare_digest(known, candidate):
                found = scopes
        if found is None:
            return None
        # The subject names the token without revealing it (safe for logs and audit rows).
        subject = "token:" + hashlib.sha256(candidate).hexdigest()[:12]
        return Principal(subject=subject, scopes=found)


def authorize(request: Request, scope: str) -> Principal:
    """Authenticate the request's bearer token and check it holds ``scope`` (401/403 problems).

    Shared by :func:`require_scope` and the plain hot-path routes (``azora_common.fastpath``).
    """
    scheme, _, credentials = (request.headers.get("authorization") or "").partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials:
        raise Unauthorized("a bearer token is required")
    authenticator: TokenAuthenticator = request.app.state.auth
    principal = authenticator.authenticate(credentials)
    if principal is None:
        raise Unauthorized("the bearer token is not valid")
    if not principal.has(scope):
        raise Forbidden(f"this token lacks the '{scope}' scope", required_scope=scope)
    request.state.principal = principal
    return principal


def require_scope(scope: str) -> Any:
    """A dependency that authenticates the bearer token and checks it holds ``scope``."""

    async def dependency(
        request: Request,
        # Declared so the OpenAPI document shows the bearer scheme; authorize() reads the header.
        _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        return authorize(request, scope)

    return Depends(dependency)


AdminDep = Annotated[Principal, require_scope(ADMIN_SCOPE)]
