/** Every refusal in Ollama's protocol: `{"error": "..."}` with a fitting status. */
import { HttpServerResponse } from "@effect/platform"
import { type GatewayError, retryAfterOf } from "../domain/Errors.ts"
import { errorHeaderName, errorHeaderValue } from "../domain/ErrorWire.ts"

const encoder = new TextEncoder()

export const errorResponse = (error: GatewayError, headers: Record<string, string> = {}): HttpServerResponse.HttpServerResponse => {
  const retryAfter = retryAfterOf(error)
  const tagged = errorHeaderValue(error)
  return HttpServerResponse.uint8Array(encoder.encode(JSON.stringify({ error: error.message })), {
    status: error.status,
    contentType: "application/json; charset=utf-8",
    headers: {
      ...headers,
      ...(retryAfter === undefined ? {} : { "retry-after": String(retryAfter) }),
      // The tagged error for typed callers (src/client/); the body stays Ollama's.
      ...(tagged === undefined ? {} : { [errorHeaderName]: tagged })
    }
  })
}

export const jsonResponse = (body: unknown, headers: Record<string, string> = {}, status = 200) =>
  HttpServerResponse.uint8Array(encoder.encode(JSON.stringify(body)), {
    status,
    contentType: "application/json; charset=utf-8",
    headers
  })
