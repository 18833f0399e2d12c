"""The `groq` SDK (sync and async): chat completions, embeddings.

Groq's SDK is generated like OpenAI's, so the same wrapping applies; its streams put
the usage in the last chunk's ``x_groq.usage``, and its create() takes no
``stream_options``, so nothing is added to the request.
"""

from __future__ import annotations

from typing import Any

from ai_usage_exporter.sdk.integrations._common import Attr
from ai_usage_exporter.sdk.integrations.openai import instrument_methods

PROVIDER = "groq"


def instrument_client(client: Any, attr: Attr) -> Any:
    import groq

    is_async = isinstance(client, groq.AsyncGroq)
    instrument_methods(client, attr, PROVIDER, is_async, ask_usage=False)
    return client
