"""The gateway's HTTP routes: OpenAI's paths for the default route, /api/ai/<route> for named ones."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ai_usage_exporter.gateway.proxy import Gateway


def gateway_routes(gateway: Gateway) -> list[BaseRoute]:
    default = gateway.config.default_route

    async def chat(request: Request) -> Response:
        return await gateway.handle(request, default, "chat")

    async def responses(request: Request) -> Response:
        return await gateway.handle(request, default, "responses")

    async def embeddings(request: Request) -> Response:
        return await gateway.handle(request, default, "embeddings")

    async def named_chat(request: Request) -> Response:
        return await gateway.handle(request, request.path_params["route"], "chat")

    async def named_responses(request: Request) -> Response:
        return await gateway.handle(request, request.path_params["route"], "responses")

    async def named_embeddings(request: Request) -> Response:
        return await gateway.handle(request, request.path_params["route"], "embeddings")

    return [
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/responses", responses, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/v1/models", gateway.models, methods=["GET"]),
        # The Next.js apps post a chat body to /api/ai/<route>; an OpenAI SDK pointed at
        # /api/ai/<route> as its base URL uses the longer paths.
        Route("/api/ai/{route}", named_chat, methods=["POST"]),
        Route("/api/ai/{route}/chat/completions", named_chat, methods=["POST"]),
        Route("/api/ai/{route}/responses", named_responses, methods=["POST"]),
        Route("/api/ai/{route}/embeddings", named_embeddings, methods=["POST"]),
    ]
