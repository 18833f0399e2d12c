"""One module per client library; each wraps one client instance's methods and nothing else."""

from __future__ import annotations

from typing import Any

# The package a client class comes from -> the integration module handling it.
_BY_PACKAGE = {
    "openai": "openai",
    "anthropic": "anthropic",
    "groq": "groq",
    "ollama": "ollama",
    "google": "google_genai",
}


def integration_for(client: Any) -> str | None:
    package = type(client).__module__.split(".", 1)[0]
    return _BY_PACKAGE.get(package)
