/**
 * Claude through the Effect ecosystem's `@effect/ai-anthropic` (0.27, whose peers are this project's
 * effect 3.22 / @effect/platform 0.97 / @effect/ai 0.37): the Messages API, JSON and SSE. Its
 * `AnthropicClient` keeps the key Redacted (sent as `x-api-key`, a header Effect redacts in logs and
 * spans), takes the base URL (`apiUrl`), and runs on the platform HttpClient, so interrupting a call
 * aborts the request.
 */
import * as AnthropicClient from "@effect/ai-anthropic/AnthropicClient"
import type * as AiError from "@effect/ai/AiError"
import type { HttpClient } from "@effect/platform"
import { Effect, Option, Redacted, type Scope, Stream } from "effect"
import type { ProviderConfig } from "../config/GatewayConfig.ts"
import { errorCode, isRefusedCode } from "../upstream/ErrorCode.ts"
import { kindOfStatus, type PaidProvider, paidProvider, ProviderFailure, scrubber } from "./PaidProvider.ts"
import {
  type DoneReason,
  imageMimeType,
  jsonInstruction,
  type PaidRequest,
  type PaidUsage,
  type ProviderAnswer,
  type ProviderEvent
} from "./Translate.ts"

type Payload = Omit<Parameters<AnthropicClient.Service["createMessage"]>[0]["payload"], "stream">

const payloadOf = (model: string, request: PaidRequest): Payload => {
  // Claude has no JSON mode in the Messages API: the instruction goes into the system prompt.
  const system = [request.system, request.format === null ? null : jsonInstruction(request.format)].filter((s) => s !== null).join("\n\n")
  return {
    model,
    max_tokens: request.maxOutputTokens,
    messages: request.messages.map((m) => ({
      role: m.role,
      content: [
        ...m.images.map((data) => ({ type: "image" as const, source: { type: "base64" as const, media_type: imageMimeType(data) as "image/png", data } })),
        ...(m.text !== "" || m.images.length === 0 ? [{ type: "text" as const, text: m.text }] : [])
      ]
    })),
    ...(system !== "" ? { system } : {}),
    // Claude takes temperatures in [0, 1]; Ollama's may go up to 2.
    ...(request.temperature !== null ? { temperature: Math.min(1, Math.max(0, request.temperature)) } : {}),
    ...(request.topP !== null ? { top_p: request.topP } : {}),
    ...(request.topK !== null ? { top_k: Math.max(0, Math.trunc(request.topK)) } : {}),
    // Claude refuses whitespace-only stop sequences; Ollama callers often send "\n\n".
    ...(request.stop.some((s) => s.trim() !== "") ? { stop_sequences: request.stop.filter((s) => s.trim() !== "") } : {})
  }
}

const doneReasonOf = (stopReason: string | null): DoneReason => stopReason === "max_tokens" ? "length" : "stop"

/** Input tokens include the prompt-cache ones: Anthropic bills all three as input. */
const inputTokensOf = (u: { readonly input_tokens?: number | null; readonly cache_creation_input_tokens?: number | null; readonly cache_read_input_tokens?: number | null }): number | null =>
  typeof u.input_tokens === "number" ? u.input_tokens + (u.cache_creation_input_tokens ?? 0) + (u.cache_read_input_tokens ?? 0) : null

/** A whole Messages API answer as the paid route takes it: text only, its text blocks joined. */
const answerOf = (message: Effect.Effect.Success<ReturnType<AnthropicClient.Service["createMessage"]>>): ProviderAnswer => ({
  text: message.content.flatMap((block) => block.type === "text" ? [block.text] : []).join(""),
  usage: { inputTokens: inputTokensOf(message.usage), outputTokens: message.usage.output_tokens },
  doneReason: doneReasonOf(message.stop_reason),
  providerReason: message.stop_reason
})

export const make = (
  name: string,
  config: ProviderConfig,
  apiKey: Option.Option<Redacted.Redacted<string>>
): Effect.Effect<PaidProvider, never, HttpClient.HttpClient | Scope.Scope> =>
  Effect.gen(function*() {
    const scrub = scrubber(Option.match(apiKey, { onNone: () => null, onSome: Redacted.value }))
    const client = Option.isSome(apiKey)
      ? Option.some(yield* AnthropicClient.make({ apiKey: apiKey.value, ...(config.baseUrl !== undefined ? { apiUrl: config.baseUrl.replace(/\/$/, "") } : {}) }))
      : Option.none()

    const failure = (kind: ProviderFailure["kind"], status: number | null, message: string) =>
      new ProviderFailure({ provider: name, kind, status, message: scrub(message) })

    const notConfigured = () => failure("not-configured", null, `${name}: environment variable ${config.apiKeyEnv} is not set`)

    const toFailure = (error: AiError.AiError): ProviderFailure => {
      switch (error._tag) {
        case "HttpRequestError": {
          const code = errorCode(error.cause)
          return isRefusedCode(code)
            ? failure("refused", null, `connection refused (${code})`)
            : failure("transport", null, `connection failed${code ? ` (${code})` : ""}: ${error.description ?? error.reason}`)
        }
        case "HttpResponseError": {
          const status = error.response.status
          let detail = error.description ?? error.reason
          if (error.body !== undefined) {
            try {
              const parsed = JSON.parse(error.body) as { error?: { message?: unknown } }
              if (typeof parsed.error?.message === "string") detail = parsed.error.message
            } catch { /* not JSON: keep the description */ }
          }
          return failure(kindOfStatus(status), status, `${status}: ${detail.slice(0, 500)}`)
        }
        default:
          return failure("malformed", null, `unexpected answer: ${(error.description ?? error._tag).slice(0, 300)}`)
      }
    }

    const generate = (request: PaidRequest): Effect.Effect<ProviderAnswer, ProviderFailure> =>
      Option.match(client, {
        onNone: () => Effect.fail(notConfigured()),
        onSome: (c) =>
          c.createMessage({ payload: payloadOf(config.model, request) }).pipe(
            Effect.mapError(toFailure),
            Effect.map(answerOf)
          )
      })

    const eventsOf = (event: AnthropicClient.MessageStreamEvent): Effect.Effect<Array<ProviderEvent>, ProviderFailure> => {
      switch (event.type) {
        case "message_start": {
          const usage: PaidUsage = { inputTokens: inputTokensOf(event.message.usage), outputTokens: event.message.usage.output_tokens }
          return Effect.succeed([{ _tag: "Usage", usage }])
        }
        case "content_block_delta":
          return Effect.succeed(event.delta.type === "text_delta" && event.delta.text !== "" ? [{ _tag: "Text", text: event.delta.text }] : [])
        case "message_delta": {
          const events: Array<ProviderEvent> = []
          // message_delta's counts are cumulative; input_tokens is only sometimes repeated here.
          const input = inputTokensOf(event.usage)
          if (event.usage.output_tokens !== null) {
            events.push({ _tag: "Usage", usage: { inputTokens: input, outputTokens: event.usage.output_tokens } })
          }
          if (event.delta.stop_reason !== null) {
            events.push({ _tag: "Finish", doneReason: doneReasonOf(event.delta.stop_reason), providerReason: event.delta.stop_reason })
          }
          return Effect.succeed(events)
        }
        case "error": {
          const kind = event.error.type === "rate_limit_error" ? "rate-limited" : event.error.type === "overloaded_error" || event.error.type === "api_error" ? "server-error" : "rejected"
          return Effect.fail(failure(kind, null, `${event.error.type}: ${event.error.message}`))
        }
        default:
          return Effect.succeed([])
      }
    }

    const stream = (request: PaidRequest): Stream.Stream<ProviderEvent, ProviderFailure> =>
      Option.match(client, {
        onNone: () => Stream.fail(notConfigured()),
        onSome: (c) =>
          c.createMessageStream({ payload: payloadOf(config.model, request) }).pipe(
            Stream.mapError(toFailure),
            Stream.mapEffect(eventsOf),
            Stream.flattenIterables
          )
      })

    return paidProvider(name, "anthropic", config, Option.isSome(apiKey), { generate, stream })
  })
