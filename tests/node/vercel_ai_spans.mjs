// Sends spans shaped as the Vercel AI SDK 5 makes them (tracer "ai": an ai.streamText
// span over ai.streamText.doStream, an ai.generateText span over doGenerate) through
// the real Node OpenTelemetry SDK and OTLP exporter. Usage:
//   node vercel_ai_spans.mjs <traces url> <token> <http|proto>
import { NodeTracerProvider } from "@opentelemetry/sdk-trace-node";
import { BatchSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { context, trace } from "@opentelemetry/api";

const [url, token, protocol] = process.argv.slice(2);
const { OTLPTraceExporter } = await import(
  protocol === "proto" ? "@opentelemetry/exporter-trace-otlp-proto" : "@opentelemetry/exporter-trace-otlp-http"
);
const exporter = new OTLPTraceExporter({ url, headers: { Authorization: `Bearer ${token}` } });
const provider = new NodeTracerProvider({
  resource: resourceFromAttributes({ "service.name": `next-app-${protocol}` }),
  spanProcessors: [new BatchSpanProcessor(exporter)],
});
const tracer = provider.getTracer("ai");

function call(outerName, innerName, model, providerId, usage, providerMetadata) {
  const common = {
    "ai.model.id": model,
    "ai.model.provider": providerId,
    "ai.telemetry.functionId": "chat-route",
    "ai.telemetry.metadata.userId": "user-7",
  };
  const outer = tracer.startSpan(outerName, { attributes: { ...common, "ai.operationId": outerName } });
  const ctx = trace.setSpan(context.active(), outer);
  const inner = tracer.startSpan(
    innerName,
    {
      attributes: {
        ...common,
        "ai.operationId": innerName,
        "gen_ai.system": providerId,
        "gen_ai.request.model": model,
        "ai.usage.promptTokens": usage.input,
        "ai.usage.completionTokens": usage.output,
        "gen_ai.usage.input_tokens": usage.input,
        "gen_ai.usage.output_tokens": usage.output,
        ...(providerMetadata ? { "ai.response.providerMetadata": JSON.stringify(providerMetadata) } : {}),
      },
    },
    ctx,
  );
  inner.end();
  outer.setAttributes({ "ai.usage.promptTokens": usage.input, "ai.usage.completionTokens": usage.output });
  outer.end();
}

// OpenAI through @ai-sdk/openai: promptTokens already holds the cached part.
call("ai.generateText", "ai.generateText.doGenerate", "gpt-4o-mini", "openai.chat", { input: 2006, output: 300 });
// Anthropic through @ai-sdk/anthropic 2.x: promptTokens is Anthropic's input_tokens,
// the cache only in providerMetadata's raw usage.
call("ai.streamText", "ai.streamText.doStream", "claude-sonnet-4-5", "anthropic.messages", { input: 8, output: 501 }, {
  anthropic: {
    usage: { input_tokens: 8, cache_creation_input_tokens: 10426, cache_read_input_tokens: 0, output_tokens: 501 },
    cacheCreationInputTokens: 10426,
  },
});
await provider.forceFlush();
await provider.shutdown();
