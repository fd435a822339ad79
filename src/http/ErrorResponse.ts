/**
 * The one error renderer. A refusal's status is its error class's (domain/Errors.ts); each protocol
 * gives only the body's shape (`ErrorShape`): Ollama's `{"error": "..."}` by default, OpenAI's and
 * Anthropic's in their adapters. The headers are the same for all: the trace id when the caller is
 * known, Retry-After, and the tagged error for typed callers (domain/ErrorWire.ts).
 */
import { HttpServerResponse } from "@effect/platform"
import { Schema } from "effect"
import { GatewayResponseError } from "../domain/Api.ts"
import { type CallerContext, HeaderNames } from "../domain/CallerContext.ts"
import { errorHeaderName, errorHeaderValue, GatewayErrorSchema } from "../domain/ErrorWire.ts"
import { type GatewayError, retryAfterOf } from "../domain/Errors.ts"

const encoder = new TextEncoder()

/** A protocol's refusal body for a message and status. */
export type ErrorShape = (message: string, status: number) => unknown

export const ollamaError: ErrorShape = (message) => ({ error: message })

/** What a caller gets on a defect, in any protocol (the details stay in the logs). */
export const internalErrorMessage = "internal gateway error; the journal and logs have the details"

export interface RenderedError {
  readonly status: number
  readonly headers: Record<string, string>
  readonly body: Uint8Array
}

export const renderError = (error: GatewayError, caller: CallerContext | null, shape: ErrorShape = ollamaError): RenderedError => {
  const headers: Record<string, string> = { "content-type": "application/json; charset=utf-8" }
  if (caller !== null) headers[HeaderNames.traceId] = caller.traceId
  const retryAfter = retryAfterOf(error)
  if (retryAfter !== undefined) headers["retry-after"] = String(retryAfter)
  const tagged = errorHeaderValue(error)
  if (tagged !== undefined) headers[errorHeaderName] = tagged
  return { status: error.status, headers, body: encoder.encode(JSON.stringify(shape(error.message, error.status))) }
}

/** A refusal on the platform router, in Ollama's shape; `headers` go first (a route's own). */
export const errorResponse = (error: GatewayError, headers: Record<string, string> = {}): HttpServerResponse.HttpServerResponse => {
  const rendered = renderError(error, null)
  return HttpServerResponse.uint8Array(rendered.body, { status: rendered.status, headers: { ...headers, ...rendered.headers } })
}

export const jsonResponse = (body: unknown, headers: Record<string, string> = {}, status = 200) =>
  HttpServerResponse.uint8Array(encoder.encode(JSON.stringify(body)), {
    status,
    contentType: "application/json; charset=utf-8",
    headers
  })

/**
 * A refusal without a tagged error: Ollama's `{"error": "..."}` at `status`, nothing else (a run or
 * trace not found, a bad query parameter, the read side down). The Api declares these statuses.
 */
export const refusal = (status: number, message: string) => new GatewayResponseError({ status, message })

const isGatewayError = Schema.is(GatewayErrorSchema)

/**
 * How the routes HttpApiBuilder serves (ApiServer.ts) answer a failure: a gateway error as
 * everywhere else (`errorResponse`), a `refusal` as its plain `{"error"}`. Anything else is not a
 * refusal (undefined): it goes on to the next route or to the server's 500.
 */
export const refusalResponse = (error: unknown): HttpServerResponse.HttpServerResponse | undefined => {
  if (isGatewayError(error)) return errorResponse(error)
  if (error instanceof GatewayResponseError) return jsonResponse(ollamaError(error.message, error.status), {}, error.status)
  return undefined
}
