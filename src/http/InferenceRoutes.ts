/**
 * Ollama's inference routes (POST /api/generate, /api/chat, /api/embed, /api/embeddings) as an
 * adapter on the one edge (Edge.ts). They are the gateway's hot path: the lane's answer is already
 * Ollama's, so it is passed through as bytes — one write for a unary answer, the relay's NDJSON
 * chunks as they come for a stream — and a generate/chat may be answered with 202 (a shadow
 * decision, or an async run on an async lane; Accepted.ts).
 */
import { Effect } from "effect"
import type { BadRequest } from "../domain/Errors.ts"
import { ChatRequest, EmbeddingsRequest, EmbedRequest, GenerateRequest, type OllamaRequest, type Operation } from "../domain/OllamaApi.ts"
import { acceptInstead } from "./Accepted.ts"
import type { EdgeAdapter, LaneCall } from "./Edge.ts"
import { ollamaError } from "./ErrorResponse.ts"
import { decodeBody } from "./RequestBody.ts"
import { jsonType, pipeResult, resultHeaders, writeWhole } from "./Respond.ts"

/** The route's body decoded by its operation's schema (unknown fields dropped, known ones checked). */
const decodeRequest = (operation: Operation, raw: unknown): Effect.Effect<OllamaRequest, BadRequest> => {
  switch (operation) {
    case "generate": return Effect.map(decodeBody(GenerateRequest, raw), (body) => ({ operation, body }))
    case "chat": return Effect.map(decodeBody(ChatRequest, raw), (body) => ({ operation, body }))
    case "embed": return Effect.map(decodeBody(EmbedRequest, raw), (body) => ({ operation, body }))
    case "embeddings": return Effect.map(decodeBody(EmbeddingsRequest, raw), (body) => ({ operation, body }))
  }
}

const promptOf = (request: OllamaRequest): unknown => {
  switch (request.operation) {
    case "generate": return { system: request.body.system ?? null, prompt: request.body.prompt ?? null }
    case "chat": return { messages: request.body.messages }
    case "embed": return { input: request.body.input }
    case "embeddings": return { prompt: request.body.prompt }
  }
}

const laneCall = (request: OllamaRequest): LaneCall => ({
  ...request,
  stream: request.operation === "generate" || request.operation === "chat" ? request.body.stream ?? true : false,
  prompt: promptOf(request)
})

const ollamaAdapter = (operation: Operation): EdgeAdapter => {
  return {
    protocol: "ollama",
    errorBody: ollamaError,
    translate: (raw) => Effect.map(decodeRequest(operation, raw), laneCall),
    instead: (call, caller, lane, headers) => acceptInstead(call, caller, lane, headers, call.prompt),
    // Suspended: the edge builds the answer's effect before it has run `done`, and a unary answer
    // must free its slot before it is written (Edge.ts).
    respond: (res, result, _call, done) =>
      Effect.suspend(() => {
        if (result._tag === "Unary") {
          writeWhole(res, 200, resultHeaders(result, jsonType), result.bytes)
          return Effect.void
        }
        res.writeHead(200, resultHeaders(result, "application/x-ndjson"))
        return Effect.zipRight(Effect.zipRight(pipeResult(res, result), done), Effect.sync(() => res.end()))
      })
  }
}

/** The Ollama inference routes on the edge. */
export const ollamaAdapters: Readonly<Record<string, EdgeAdapter>> = {
  "/api/generate": ollamaAdapter("generate"),
  "/api/chat": ollamaAdapter("chat"),
  "/api/embed": ollamaAdapter("embed"),
  "/api/embeddings": ollamaAdapter("embeddings")
}
