"""The FastAPI app: ``create_app(settings)``; the lifespan loads the model once.

Run with ``repairqc serve`` (uvicorn). Tests build apps with their own settings.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.config import Settings
from serving.observability import Metrics, configure_logging
from serving.routes import admin, health, score
from serving.state import ServiceState

log = logging.getLogger("serving")

DESCRIPTION = """
repairqc 评分服务：物业系统在工单完工时调用，返回返修风险、不满意概率、风险等级、
是否必检（含规则/模型原因）、是否第三方抽检（含入样概率）和业务语言的原因。

Authentication: `Authorization: Bearer <API key>` (create keys with `repairqc keys create
--role system|quality|admin`). Roles: **system** scores; **quality** records outcomes and reads
decisions; **admin** reloads the model and reads the policy, and may do everything.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the model, store and policy are loaded in the lifespan, once."""
    settings = settings or Settings()  # type: ignore[call-arg]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log_level)
        settings.warn_if_dev()
        state = ServiceState(settings)
        app.state.service = state
        app.state.metrics = state.metrics
        yield
        app.state.service = None
        state.close()

    app = FastAPI(
        title="repairqc scoring API (物业维修质量评分)",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.service = None
    app.state.metrics = Metrics()

    @app.middleware("http")
    async def observe(request: Request, call_next):  # noqa: ANN001, ANN202 - starlette hook
        t0 = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        request.app.state.metrics.latency.labels(
            path, request.method, str(response.status_code)
        ).observe(time.perf_counter() - t0)
        return response

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        return Response(
            generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
        )

    app.include_router(health.router, tags=["health"])
    app.include_router(score.router, tags=["score"])
    app.include_router(admin.router, tags=["admin"])
    return app
