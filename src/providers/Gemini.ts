/**
 * Gemini over its REST API through @effect/platform's HttpClient (undici underneath):
 *
 *   POST {baseUrl}/v1beta/models/{model}:generateContent               → one GenerateContentResponse
 *   POST {baseUrl}/v1beta/models/{model}:streamGenerateContent?alt=sse → `data: {GenerateContentResponse}` events
 *
 * with the key in `x-goog-api-key` and Google's `{"error": {code, message, status}}` on failure.
 * Google's SDK (`@google/genai`) needs Node 22, and `@effect/ai-google` pairs with @effect/platform
 * 0.96, not our 0.97; the two calls are small enough to speak directly. Nothing is retried (a paid
 * call must not be repeated behind the budget's back); interrupting a call aborts its HTTP request.
 * v1beta is the surface Google documents for generateContent (systemInstruction, responseJsonSchema,
 * thinking).
 */
import { Headers, HttpClient, HttpClientRequest, type HttpClientResponse } from "@effect/platform"
import type { HttpClientError } from "@effect/platform"
import { Effect, Option, Redacted, Stream } from "effect"
import type { ProviderConfig } from "../config/GatewayConfig.ts"
import { errorCode, isRefusedCode } from "../upstream/ErrorCode.ts"
import { kindOfStatus, paidProvider, ProviderFailure, scrubber } from "./PaidProvider.ts"
import { type DoneReason, imageMimeType, type PaidRequest, type PaidUsage, type ProviderAnswer, type ProviderEvent } from "./Translate.ts"

export const defaultBaseUrl = "https://generativelanguage.googleapis.com"

// --- the wire format (the fields the gateway reads or writes) ---

interface Part {
  readonly text?: string
  readonly thought?: boolean
  readonly inlineData?: { readonly mimeType: string; readonly data: string }
}

interface GenerateContentResponse {
  readonly candidates?: ReadonlyArray<{ readonly content?: { readonly parts?: ReadonlyArray<Part> }; readonly finishReason?: string }>
  readonly usageMetadata?: { readonly promptTokenCount?: number; readonly candidatesTokenCount?: number; readonly thoughtsTokenCount?: number }
  readonly promptFeedback?: { readonly blockReason?: string }
}

/** The GenerateContentRequest body. */
export const requestBody = (request: PaidRequest) => ({
  contents: request.messages.map((m) => ({
    role: m.role === "assistant" ? "model" : "user",
    parts: [
      ...(m.text !== "" ? [{ text: m.text }] : []),
      ...m.images.map((data): Part => ({ inlineData: { mimeType: imageMimeType(data), data } }))
    ]
  })),
  ...(request.system !== null ? { systemInstruction: { parts: [{ text: request.system }] } } : {}),
  generationConfig: {
    ...(request.temperature !== null ? { temperature: request.temperature } : {}),
    ...(request.topP !== null ? { topP: request.topP } : {}),
    ...(request.topK !== null ? { topK: request.topK } : {}),
    ...(request.seed !== null ? { seed: Math.trunc(request.seed) } : {}),
    // Gemini counts thinking tokens against maxOutputTokens too, so this bounds every billed output token.
    maxOutputTokens: request.maxOutputTokens,
    ...(request.stop.length > 0 ? { stopSequences: request.stop.slice(0, 5) } : {}),
    ...(request.format !== null ? { responseMimeType: "application/json" } : {}),
    ...(request.format?._tag === "schema" ? { responseJsonSchema: request.format.schema } : {})
  }
})

/** Text of the first candidate, without thought summaries. */
const textOf = (response: GenerateContentResponse): string =>
  (response.candidates?.[0]?.content?.parts ?? [])
    .filter((p) => typeof p.text === "string" && p.thought !== true)
    .map((p) => p.text)
    .join("")

/**
 * Usage from `usageMetadata`. Gemini's JSON leaves out zero counters (proto3), so once the metadata is
 * there a missing count is 0; without metadata the usage is unknown. Thinking tokens bill as output.
 */
const usageOf = (response: GenerateContentResponse): PaidUsage | null => {
  const u = response.usageMetadata
  if (u === undefined) return null
  return { inputTokens: u.promptTokenCount ?? 0, outputTokens: (u.candidatesTokenCount ?? 0) + (u.thoughtsTokenCount ?? 0) }
}

const doneReasonOf = (finishReason: string): DoneReason => finishReason === "MAX_TOKENS" ? "length" : "stop"

/** Google's error body's message, or the body's start. */
const errorMessageOf = (body: string): string => {
  try {
    const parsed = JSON.parse(body) as { error?: { message?: unknown } }
    if (typeof parsed.error?.message === "string") return parsed.error.message
  } catch { /* not JSON */ }
  return body.slice(0, 300)
}

/**
 * SSE events' `data` payloads from a byte stream (events end at a blank line, `\r\n` or `\n`;
 * several `data:` lines of one event are joined with newlines, as the SSE spec says).
 */
export const sseData = <E>(bytes: Stream.Stream<Uint8Array, E>): Stream.Stream<string, E> =>
  Stream.suspend(() => {
    const decoder = new TextDecoder()
    let buffer = ""
    let data: Array<string> = []
    const take = (text: string, end: boolean): Array<string> => {
      buffer += text
      const out: Array<string> = []
      let nl: number
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, nl).replace(/\r$/, "")
        buffer = buffer.slice(nl + 1)
        if (line === "") {
          if (data.length > 0) out.push(data.join("\n"))
          data = []
        } else if (line.startsWith("data:")) data.push(line.slice(line.startsWith("data: ") ? 6 : 5))
      }
      if (end) {
        if (buffer.startsWith("data:")) data.push(buffer.slice(buffer.startsWith("data: ") ? 6 : 5))
        if (data.length > 0) out.push(data.join("\n"))
        buffer = ""
        data = []
      }
      return out
    }
    return bytes.pipe(
      Stream.mapConcat((chunk) => take(decoder.decode(chunk, { stream: true }), false)),
      Stream.concat(Stream.suspend(() => Stream.fromIterable(take(decoder.decode(), true))))
    )
  })

export const make = (name: string, config: ProviderConfig, apiKey: Option.Option<Redacted.Redacted<string>>) =>
  Effect.gen(function*() {
    const http = yield* HttpClient.HttpClient
    const scrub = scrubber(Option.match(apiKey, { onNone: () => null, onSome: Redacted.value }))
    const base = (config.baseUrl ?? defaultBaseUrl).replace(/\/+$/, "")
    // Google names models both ways ("gemini-2.5-flash", "models/gemini-2.5-flash").
    const model = encodeURIComponent(config.model.replace(/^models\//, ""))
    const urls = {
      generate: `${base}/v1beta/models/${model}:generateContent`,
      stream: `${base}/v1beta/models/${model}:streamGenerateContent?alt=sse`
    }

    const failure = (kind: ProviderFailure["kind"], status: number | null, message: string) =>
      new ProviderFailure({ provider: name, kind, status, message: scrub(message) })

    const notConfigured = () => failure("not-configured", null, `${name}: environment variable ${config.apiKeyEnv} is not set`)

    const transportFailure = (error: HttpClientError.HttpClientError): ProviderFailure => {
      const code = errorCode(error.cause)
      if (isRefusedCode(code)) return failure("refused", null, `connection refused (${code})`)
      return error._tag === "RequestError" || code !== undefined
        ? failure("transport", null, `connection failed${code ? ` (${code})` : ""}: ${error.message}`)
        : failure("malformed", null, `unexpected answer: ${error.message.slice(0, 300)}`)
    }

    /** The response if it is a 2xx; Google's error (status, message) otherwise. */
    const ok = (response: HttpClientResponse.HttpClientResponse): Effect.Effect<HttpClientResponse.HttpClientResponse, ProviderFailure> =>
      response.status >= 200 && response.status < 300
        ? Effect.succeed(response)
        : response.text.pipe(
          Effect.orElseSucceed(() => ""),
          Effect.flatMap((body) => Effect.fail(failure(kindOfStatus(response.status), response.status, `${response.status}: ${errorMessageOf(body).slice(0, 500)}`)))
        )

    const blocked = (response: GenerateContentResponse): ProviderFailure | null => {
      const reason = response.promptFeedback?.blockReason
      return reason !== undefined && (response.candidates ?? []).length === 0
        ? failure("rejected", null, `prompt blocked by Gemini (${reason})`)
        : null
    }

    const parse = (text: string): Effect.Effect<GenerateContentResponse, ProviderFailure> =>
      Effect.try({
        try: () => {
          const value: unknown = JSON.parse(text)
          if (typeof value !== "object" || value === null || Array.isArray(value)) throw new Error("not a JSON object")
          return value as GenerateContentResponse
        },
        catch: (e) => failure("malformed", null, `unexpected answer: ${(e instanceof Error ? e.message : String(e)).slice(0, 200)}: ${text.slice(0, 200)}`)
      })

    // The key never shows in a span or a logged request: Effect redacts the headers it names here.
    const call = (key: Redacted.Redacted<string>, url: string, request: PaidRequest) =>
      http.execute(
        HttpClientRequest.post(url).pipe(
          HttpClientRequest.setHeader("x-goog-api-key", Redacted.value(key)),
          HttpClientRequest.bodyUnsafeJson(requestBody(request))
        )
      ).pipe(
        Effect.mapError(transportFailure),
        Effect.flatMap(ok),
        Effect.locallyWith(Headers.currentRedactedNames, (names) => [...names, "x-goog-api-key"])
      )

    const generate = (request: PaidRequest): Effect.Effect<ProviderAnswer, ProviderFailure> =>
      Option.match(apiKey, {
        onNone: () => Effect.fail(notConfigured()),
        onSome: (key) =>
          call(key, urls.generate, request).pipe(
            Effect.flatMap((response) => Effect.mapError(response.text, transportFailure)),
            Effect.flatMap(parse),
            Effect.flatMap((response) => {
              const refused = blocked(response)
              if (refused !== null) return Effect.fail(refused)
              const finish = response.candidates?.[0]?.finishReason ?? null
              return Effect.succeed({
                text: textOf(response),
                usage: usageOf(response) ?? { inputTokens: null, outputTokens: null },
                doneReason: finish === null ? "stop" : doneReasonOf(finish),
                providerReason: finish
              } satisfies ProviderAnswer)
            }),
            Effect.scoped
          )
      })

    /** One SSE event: its provider-neutral events, or the error it carries (a stream can fail midway). */
    const eventsOf = (data: string): Effect.Effect<Array<ProviderEvent>, ProviderFailure> =>
      Effect.flatMap(parse(data), (response) => {
        const inStream = (response as { error?: { code?: unknown; message?: unknown } }).error
        if (inStream !== undefined) {
          const status = typeof inStream.code === "number" ? inStream.code : null
          return Effect.fail(failure("server-error", status, `error inside the stream${status === null ? "" : ` (${status})`}: ${String(inStream.message ?? "").slice(0, 300)}`))
        }
        const refused = blocked(response)
        if (refused !== null) return Effect.fail(refused)
        const events: Array<ProviderEvent> = []
        const text = textOf(response)
        if (text !== "") events.push({ _tag: "Text", text })
        const usage = usageOf(response)
        if (usage !== null) events.push({ _tag: "Usage", usage })
        const finish = response.candidates?.[0]?.finishReason
        if (finish !== undefined) events.push({ _tag: "Finish", doneReason: doneReasonOf(finish), providerReason: finish })
        return Effect.succeed(events)
      })

    const stream = (request: PaidRequest): Stream.Stream<ProviderEvent, ProviderFailure> =>
      Option.match(apiKey, {
        onNone: () => Stream.fail(notConfigured()),
        onSome: (key) =>
          Stream.unwrapScoped(Effect.map(call(key, urls.stream, request), (response) =>
            sseData(Stream.mapError(response.stream, transportFailure)).pipe(
              Stream.mapEffect(eventsOf),
              Stream.flattenIterables
            )))
      })

    return paidProvider(name, "gemini", config, Option.isSome(apiKey), { generate, stream })
  })
