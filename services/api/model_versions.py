"""The model versions resource: trained adapters, read from the registry (store/model_versions.py).

Unlike runs, versions are not scoped to an API key: any valid key may read them all.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request

from services.api.deps import get_services
from services.api.schemas.model_versions import ModelVersionList, ModelVersionView
from store import model_versions

router = APIRouter(prefix="/v1", tags=["model versions"])


@router.get("/model-versions", response_model=ModelVersionList)
async def list_model_versions(
    request: Request,
    role: Annotated[str | None, Query(max_length=64, description="only this logical model")] = None,
    kind: Annotated[str | None, Query(max_length=16, description="only sft or rl")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> ModelVersionList:
    """Registered model versions, newest first."""
    store = get_services(request).store
    versions = await model_versions.list_model_versions(store, limit=limit, kind=kind, role=role)
    return ModelVersionList(items=[ModelVersionView.model_validate(v) for v in versions])


@router.get(
    "/model-versions/{name}",
    response_model=ModelVersionView,
    responses={404: {"description": "no model version has this name"}},
)
async def get_model_version(name: str, request: Request) -> ModelVersionView:
    """One model version: base, adapter, dataset, metrics, lineage."""
    try:
        version = await model_versions.get_model_version(get_services(request).store, name)
    except model_versions.ModelVersionNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    return ModelVersionView.model_validate(version)
