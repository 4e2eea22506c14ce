"""Request dependencies: the service state and role-checked API keys.

Roles: ``system`` scores and ingests, ``quality`` works the queues and records outcomes,
``admin`` reloads and reads the policy and may do everything. Missing or unknown key: 401;
a known key of the wrong role: 403. Key lookups are cached by the store
(``Store.cached_role_of``) so the hot path does not query the database per request: a key
revoked or created in this process takes effect at once, one revoked by another process (the
CLI) within ``REPAIRQC_KEY_CACHE_SECONDS``.

Both dependencies are ``async`` although they do not await: FastAPI runs a sync dependency in
its threadpool, a thread hand-off each (~a quarter of the event loop's time per single-order
score, py-spy); the role lookup is a dict hit, a database query at most every few seconds.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from serving.state import ServiceState

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <API key>`")


async def get_state(request: Request) -> ServiceState:
    """The app's state (503 while the model is not loaded)."""
    state = getattr(request.app.state, "service", None)
    if state is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "model not loaded")
    return state


def _role(state: ServiceState, key: str) -> str | None:
    return state.store.cached_role_of(key)


def require(*roles: str) -> Callable[..., str]:
    """Dependency: the caller's key must have one of ``roles`` (admin always may)."""

    async def check(
        creds: HTTPAuthorizationCredentials | None = Depends(_bearer),  # noqa: B008
        state: ServiceState = Depends(get_state),  # noqa: B008
    ) -> str:
        unauthorized = HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or unknown API key",
            headers={"WWW-Authenticate": "Bearer"},
        )
        if creds is None or not creds.credentials:
            raise unauthorized
        role = _role(state, creds.credentials)
        if role is None:
            raise unauthorized
        if role != "admin" and role not in roles:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"role {role!r} may not do this (needs {roles})"
            )
        return role

    return check
