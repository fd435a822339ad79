/**
 * What the gateway needs of a paid provider (Gemini, Claude): one answer, or a stream of
 * provider-neutral events. Failures are classified so the journal and the caller's error say what
 * went wrong, and every message passes through the provider's scrubber so an API key can never
 * leave it (not even when an upstream echoes it back).
 */
import { Data, type Effect, type Stream } from "effect"
import type { PaidRequest, ProviderAnswer, ProviderEvent } from "./Translate.ts"

export type ProviderFailureKind =
  | "timeout" // no answer (or no next chunk) within the provider's timeout
  | "refused" // could not connect
  | "transport" // the connection broke
  | "rate-limited" // 429
  | "auth" // 401 / 403: the key is missing, wrong or not allowed
  | "rejected" // other 4xx: the provider refused this request
  | "server-error" // 5xx, or an error event inside the stream
  | "malformed" // an answer that is not the provider's wire format
  | "not-configured" // the API key's environment variable is not set

export class ProviderFailure extends Data.TaggedError("ProviderFailure")<{
  readonly provider: string
  readonly kind: ProviderFailureKind
  readonly status: number | null
  readonly message: string
}> {}

export interface PaidProvider {
  readonly name: string
  readonly kind: "gemini" | "anthropic"
  readonly model: string
  readonly timeoutMs: number
  readonly maxOutputTokens: number
  /** False when the key's environment variable was not set at startup (no call, no reservation). */
  readonly configured: boolean
  readonly generate: (request: PaidRequest) => Effect.Effect<ProviderAnswer, ProviderFailure>
  /** Lazily opened; pulling it makes the call. Interrupting it aborts the HTTP request. */
  readonly stream: (request: PaidRequest) => Stream.Stream<ProviderEvent, ProviderFailure>
}

/** A provider from its config and its two calls (`configured`: its key's variable was set). */
export const paidProvider = (
  name: string,
  kind: PaidProvider["kind"],
  config: { readonly model: string; readonly timeout: number; readonly maxOutputTokens: number },
  configured: boolean,
  calls: Pick<PaidProvider, "generate" | "stream">
): PaidProvider => ({ name, kind, model: config.model, timeoutMs: config.timeout, maxOutputTokens: config.maxOutputTokens, configured, ...calls })

/** Replaces every occurrence of the secret in `text` (defence in depth: messages may quote requests). */
export const scrubber = (secret: string | null) => (text: string): string =>
  secret === null || secret.length < 4 ? text : text.split(secret).join("[REDACTED]")

export const kindOfStatus = (status: number): ProviderFailureKind =>
  status === 429 ? "rate-limited"
  : status === 401 || status === 403 ? "auth"
  : status >= 500 ? "server-error"
  : "rejected"
