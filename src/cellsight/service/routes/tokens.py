"""API tokens: an admin creates them; the response is the only place a token is ever shown."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from cellsight.service.auth import create_token
from cellsight.service.deps import Admin, ServiceDep
from cellsight.service.schemas import TokenIn, TokenOut

router = APIRouter(prefix="/v1")


@router.post("/tokens", response_model=TokenOut, tags=["auth"])
def new_token(body: TokenIn, _: Admin, service: ServiceDep) -> TokenOut:
    """Create a token; the response is the only place the token is ever shown."""
    return TokenOut(name=body.name, role=body.role, token=create_token(service.store, body.name, body.role))


@router.delete("/tokens/{name}", tags=["auth"])
def revoke_tokens(name: str, _: Admin, service: ServiceDep) -> dict[str, int]:
    """Revoke every token with this name (e.g. a lost tablet's); 404 when none is live."""
    revoked = service.store.revoke_tokens(name)
    if revoked == 0:
        raise HTTPException(404, f"no live token named {name!r}")
    return {"revoked": revoked}
