// The real AI SDK (`ai` 7 with `@ai-sdk/openai` and `@ai-sdk/anthropic`) against the
// tests' fake provider, its OpenTelemetry integration registered, and the README's
// Node setup: `@opentelemetry/sdk-node` with the OTLP/HTTP protobuf trace exporter.
// Usage: node ai_sdk_real.mjs <traces url> <token> <fake provider url> <legacy|semconv>
import { NodeSDK } from "@opentelemetry/sdk-node";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-proto";
import { generateText, registerTelemetry, streamText } from "ai";
import { LegacyOpenTelemetry, OpenTelemetry } from "@ai-sdk/otel";
import { createOpenAI } from "@ai-sdk/openai";
import { createAnthropic } from "@ai-sdk/anthropic";

const [url, token, providerUrl, integration] = process.argv.slice(2);
const sdk = new NodeSDK({
  serviceName: `next-app-${integration}`,
  traceExporter: new OTLPTraceExporter({ url, headers: { Authorization: `Bearer ${token}` } }),
});
sdk.start();
registerTelemetry(integration === "legacy" ? new LegacyOpenTelemetry() : new OpenTelemetry());

const openai = createOpenAI({ baseURL: `${providerUrl}/v1`, apiKey: "k" });
const anthropic = createAnthropic({ baseURL: `${providerUrl}/v1`, apiKey: "k" });
const telemetry = { isEnabled: true, functionId: "chat-route" };

await generateText({ model: openai.chat("gpt-4o"), prompt: "Say hello", experimental_telemetry: telemetry });
const stream = streamText({
  model: anthropic("claude-sonnet-4-5"),
  prompt: "Say hello",
  maxOutputTokens: 64,
  experimental_telemetry: telemetry,
});
for await (const _ of stream.textStream) {
  // drain
}
await stream.usage;
await sdk.shutdown();
