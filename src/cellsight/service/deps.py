"""What every route shares: the running service and the role a request needs (API and dashboard pages)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from cellsight.service.auth import Principal, Role, RoleDependency, require
from cellsight.service.state import Service


def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


class PageAuth(RoleDependency):
    """Like the API's check, but a browser without a valid cookie is sent to the login form."""

    def __call__(self, request: Request) -> Principal:
        try:
            return super().__call__(request)
        except HTTPException as exc:
            if exc.status_code != 401:
                raise
            raise HTTPException(303, "log in first", headers={"Location": "/login"}) from exc


ServiceDep = Annotated[Service, Depends(get_service)]
Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Operator = Annotated[Principal, Depends(require(Role.OPERATOR))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
PageViewer = Annotated[Principal, Depends(PageAuth(Role.VIEWER))]
