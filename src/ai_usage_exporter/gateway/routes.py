"""The gateway's HTTP routes: each API's own paths for its default route, /api/ai/<route>/... for named ones.

OpenAI's paths (/v1/chat/completions, /v1/responses, /v1/embeddings), Anthropic's
(/v1/messages, /v1/messages/count_tokens) and Gemini's (/v1beta/models/{model}:{method},
and the same under /v1/models/) each go to their API's default route; under
/api/ai/<route> the same paths go to that route, so an SDK whose base URL is
/api/ai/<route> works unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from ai_usage_exporter.gateway.apis import gemini
from ai_usage_exporter.gateway.proxy import Gateway

Endpoint = Callable[[Request], Awaitable[Response]]


class _Asgi:
    """A gateway endpoint as a plain ASGI app, so Starlette routes to it directly.

    A function endpoint gets Starlette's per-request wrapper (two closures and a hop on
    every message sent) to run the exception handlers, which the app's
    ExceptionMiddleware around every route runs anyway.
    """

    __slots__ = ("endpoint",)

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.endpoint(Request(scope, receive, send))
        await response(scope, receive, send)


def gateway_routes(gateway: Gateway) -> list[BaseRoute]:
    def relay(api: str, operation: str, named: bool) -> _Asgi:
        async def endpoint(request: Request) -> Response:
            route = request.path_params["route"] if named else None
            return await gateway.handle(request, route, api, operation)

        return _Asgi(endpoint)

    def gemini_relay(version: str, named: bool) -> _Asgi:
        async def endpoint(request: Request) -> Response:
            route = request.path_params["route"] if named else None
            # `{model}:{method}`; a model name never holds a colon.
            model, _, method = request.path_params["target"].rpartition(":")
            params = {"version": version, "model": model, "method": method}
            return await gateway.handle(request, route, "gemini", method, params)

        return _Asgi(endpoint)

    routes: list[BaseRoute] = [Route("/v1/models", gateway.models, methods=["GET"])]
    for prefix, named in (("", False), ("/api/ai/{route}", True)):
        for path, api, operation in (
            ("/v1/chat/completions", "openai", "chat"),
            ("/v1/responses", "openai", "responses"),
            ("/v1/embeddings", "openai", "embeddings"),
            ("/v1/messages", "anthropic", "messages"),
            ("/v1/messages/count_tokens", "anthropic", "count_tokens"),
        ):
            if named and api == "openai":
                # An OpenAI SDK's base URL is /api/ai/<route> itself, without /v1.
                path = path.removeprefix("/v1")
            routes.append(Route(prefix + path, relay(api, operation, named), methods=["POST"]))
        for version in gemini.VERSIONS:
            routes.append(
                Route(
                    f"{prefix}/{version}/models/{{target}}",
                    gemini_relay(version, named),
                    methods=["POST"],
                )
            )
    # The Next.js apps post a chat body to /api/ai/<route>.
    routes.append(Route("/api/ai/{route}", relay("openai", "chat", True), methods=["POST"]))
    return routes
