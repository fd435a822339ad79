/** Every refusal in Ollama's protocol: `{"error": "..."}` with a fitting status. */
import { HttpServerResponse } from "@effect/platform"
import { type GatewayError, retryAfterOf } from "../domain/Errors.ts"

const encoder = new TextEncoder()

export const errorResponse = (error: GatewayError, headers: Record<string, string> = {}): HttpServerResponse.HttpServerResponse => {
  const retryAfter = retryAfterOf(error)
  return HttpServerResponse.uint8Array(encoder.encode(JSON.stringify({ error: error.message })), {
    status: error.status,
    contentType: "application/json; charset=utf-8",
    headers: retryAfter === undefined ? headers : { ...headers, "retry-after": String(retryAfter) }
  })
}

export const jsonResponse = (body: unknown, headers: Record<string, string> = {}, status = 200) =>
  HttpServerResponse.uint8Array(encoder.encode(JSON.stringify(body)), {
    status,
    contentType: "application/json; charset=utf-8",
    headers
  })
