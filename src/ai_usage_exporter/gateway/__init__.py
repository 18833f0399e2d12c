"""Gateway mode: OpenAI-compatible routes with provider fallback, counted at the edge."""
