/**
 * Gemini through Google's official SDK (`@google/genai`): `generateContent` and, for streams,
 * `streamGenerateContent?alt=sse`. The Effect ecosystem's `@effect/ai-google` would be preferred, but
 * its releases pair with @effect/platform 0.96 and @effect/ai 0.36, not the 0.97 / 0.37 this project
 * runs; the SDK takes `httpOptions.baseUrl` (loopback fakes in tests) and an AbortSignal, and retries
 * nothing unless asked (a paid call must not be repeated behind the budget's back).
 */
import { type Content, type GenerateContentConfig, type GenerateContentResponse, GoogleGenAI, type Part } from "@google/genai"
import { Effect, Option, Redacted, Stream } from "effect"
import type { ProviderConfig } from "../config/GatewayConfig.ts"
import { errorCode, isRefusedCode, kindOfStatus, type PaidProvider, ProviderFailure, scrubber } from "./PaidProvider.ts"
import { type DoneReason, imageMimeType, type PaidRequest, type PaidUsage, type ProviderAnswer, type ProviderEvent } from "./Translate.ts"

const contentsOf = (request: PaidRequest): Array<Content> =>
  request.messages.map((m) => ({
    role: m.role === "assistant" ? "model" : "user",
    parts: [
      ...(m.text !== "" ? [{ text: m.text }] : []),
      ...m.images.map((data): Part => ({ inlineData: { mimeType: imageMimeType(data), data } }))
    ]
  }))

const configOf = (request: PaidRequest): GenerateContentConfig => ({
  ...(request.system !== null ? { systemInstruction: { parts: [{ text: request.system }] } } : {}),
  ...(request.temperature !== null ? { temperature: request.temperature } : {}),
  ...(request.topP !== null ? { topP: request.topP } : {}),
  ...(request.topK !== null ? { topK: request.topK } : {}),
  ...(request.seed !== null ? { seed: Math.trunc(request.seed) } : {}),
  // Gemini counts thinking tokens against maxOutputTokens too, so this bounds every billed output token.
  maxOutputTokens: request.maxOutputTokens,
  ...(request.stop.length > 0 ? { stopSequences: request.stop.slice(0, 5) } : {}),
  ...(request.format !== null ? { responseMimeType: "application/json" } : {}),
  ...(request.format?._tag === "schema" ? { responseJsonSchema: request.format.schema } : {})
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

export const make = (name: string, config: ProviderConfig, apiKey: Option.Option<Redacted.Redacted<string>>): PaidProvider => {
  const scrub = scrubber(Option.match(apiKey, { onNone: () => null, onSome: Redacted.value }))
  const client = Option.map(apiKey, (key) =>
    // v1beta: the surface Google documents for generateContent (systemInstruction, responseJsonSchema, thinking).
    new GoogleGenAI({ apiKey: Redacted.value(key), apiVersion: "v1beta", ...(config.baseUrl !== undefined ? { httpOptions: { baseUrl: config.baseUrl } } : {}) }))

  const failure = (kind: ProviderFailure["kind"], status: number | null, message: string) =>
    new ProviderFailure({ provider: name, kind, status, message: scrub(message) })

  const notConfigured = () => failure("not-configured", null, `${name}: environment variable ${config.apiKeyEnv} is not set`)

  const toFailure = (e: unknown): ProviderFailure => {
    const error = e as { name?: unknown; status?: unknown; message?: unknown }
    const message = typeof error?.message === "string" ? error.message : String(e)
    if (error?.name === "ApiError" && typeof error.status === "number") {
      // The SDK's message is the error body as JSON, sometimes behind "got status: X. ".
      const json = message.slice(Math.max(0, message.indexOf("{")))
      let detail = message
      try {
        const parsed = JSON.parse(json) as { error?: { message?: unknown } }
        if (typeof parsed.error?.message === "string") detail = parsed.error.message
      } catch { /* keep the SDK's text */ }
      return failure(kindOfStatus(error.status), error.status, `${error.status}: ${detail.slice(0, 500)}`)
    }
    const code = errorCode(e)
    if (isRefusedCode(code)) return failure("refused", null, `connection refused (${code})`)
    if (error?.name === "AbortError" || code !== undefined || message === "fetch failed") {
      return failure("transport", null, `connection failed${code ? ` (${code})` : ""}: ${message}`)
    }
    return failure("malformed", null, `unexpected answer: ${message.slice(0, 300)}`)
  }

  const blocked = (response: GenerateContentResponse): ProviderFailure | null => {
    const reason = response.promptFeedback?.blockReason
    return reason !== undefined && (response.candidates ?? []).length === 0
      ? failure("rejected", null, `prompt blocked by Gemini (${reason})`)
      : null
  }

  const generate = (request: PaidRequest): Effect.Effect<ProviderAnswer, ProviderFailure> =>
    Option.match(client, {
      onNone: () => Effect.fail(notConfigured()),
      onSome: (ai) =>
        Effect.tryPromise({
          try: (signal) => ai.models.generateContent({ model: config.model, contents: contentsOf(request), config: { ...configOf(request), abortSignal: signal } }),
          catch: toFailure
        }).pipe(Effect.flatMap((response) => {
          const refused = blocked(response)
          if (refused !== null) return Effect.fail(refused)
          const finish = response.candidates?.[0]?.finishReason ?? null
          return Effect.succeed({
            text: textOf(response),
            usage: usageOf(response) ?? { inputTokens: null, outputTokens: null },
            doneReason: finish === null ? "stop" : doneReasonOf(finish),
            providerReason: finish
          } satisfies ProviderAnswer)
        }))
    })

  const eventsOf = (response: GenerateContentResponse): Array<ProviderEvent> => {
    const events: Array<ProviderEvent> = []
    const text = textOf(response)
    if (text !== "") events.push({ _tag: "Text", text })
    const usage = usageOf(response)
    if (usage !== null) events.push({ _tag: "Usage", usage })
    const finish = response.candidates?.[0]?.finishReason
    if (finish !== undefined) events.push({ _tag: "Finish", doneReason: doneReasonOf(finish), providerReason: finish })
    return events
  }

  const stream = (request: PaidRequest): Stream.Stream<ProviderEvent, ProviderFailure> =>
    Option.match(client, {
      onNone: () => Stream.fail(notConfigured()),
      onSome: (ai) =>
        Stream.unwrapScoped(Effect.gen(function*() {
          // Aborting is what ends a pending read (an async generator's return() would wait for it).
          const controller = yield* Effect.acquireRelease(Effect.sync(() => new AbortController()), (c) => Effect.sync(() => c.abort()))
          const chunks = yield* Effect.tryPromise({
            try: () => ai.models.generateContentStream({ model: config.model, contents: contentsOf(request), config: { ...configOf(request), abortSignal: controller.signal } }),
            catch: toFailure
          })
          const next = Effect.tryPromise({ try: () => chunks.next(), catch: toFailure }).pipe(
            Effect.mapError(Option.some),
            Effect.flatMap((r) => {
              if (r.done === true) return Effect.fail(Option.none())
              const refused = blocked(r.value)
              return refused !== null ? Effect.fail(Option.some(refused)) : Effect.succeed(eventsOf(r.value))
            })
          )
          return Stream.repeatEffectOption(next).pipe(Stream.flattenIterables)
        }))
    })

  return {
    name,
    kind: "gemini",
    model: config.model,
    timeoutMs: config.timeout,
    maxOutputTokens: config.maxOutputTokens,
    configured: Option.isSome(apiKey),
    generate,
    stream
  }
}
