"""The OTLP receiver: OpenTelemetry GenAI spans from any language become usage events.

decode (protobuf, JSON, compression, limits) -> spans (plain values) -> genai and
families (the pure mapping) -> receiver (HTTP routes, gRPC servicer, the recorder).
"""
