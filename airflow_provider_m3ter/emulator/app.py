"""Builds the two ASGI apps (Config listener and Ingest listener) over one shared state."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from airflow_provider_m3ter.emulator import api_admin, api_auth, api_config, api_ingest, api_jobs, api_usage
from airflow_provider_m3ter.emulator.errors import ApiError
from airflow_provider_m3ter.emulator.gate import Gate
from airflow_provider_m3ter.emulator.state import EmulatorState
from airflow_provider_m3ter.emulator.web import json_response


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    response = json_response({"message": exc.message}, exc.status)
    response.headers.update(exc.headers)
    return response


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) else "Error"
    return json_response({"message": message}, exc.status_code)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return json_response({"message": "Invalid request: " + "; ".join(parts)}, 400)


async def _unexpected(request: Request, exc: Exception) -> Response:
    return json_response({"message": "Internal Error"}, 500)


def _fastapi(state: EmulatorState, title: str) -> FastAPI:
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.emulator = state
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
    return app


CONFIG_ROUTERS = (
    api_auth.router,
    api_config.router,
    api_jobs.router,
    api_jobs.upload_router,
    api_usage.router,
    # One-host clients (the official SDK pointed at one base_url) post measurements to the Config host.
    api_ingest.router,
    api_admin.router,
)
INGEST_ROUTERS = (api_ingest.router,)


def _gated(state: EmulatorState, title: str, api: str, routers: tuple[APIRouter, ...]) -> Gate:
    app = _fastapi(state, title)
    for router in routers:
        app.include_router(router)
    return Gate(app, state, api, routers)


def create_apps(state: EmulatorState) -> tuple[Any, Any]:
    """The Config listener app and the Ingest listener app, both wrapped by :class:`Gate`.

    :param state: the state both listeners share.
    """
    config = _gated(state, "m3ter emulator: Config API", "config", CONFIG_ROUTERS)
    ingest = _gated(state, "m3ter emulator: Ingest API", "ingest", INGEST_ROUTERS)
    return config, ingest
