/**
 * Ollama's inference routes (POST /api/generate, /api/chat, /api/embed, /api/embeddings) as an
 * adapter on the one edge (Edge.ts). They are the gateway's hot path: the lane's answer is already
 * Ollama's, so it is passed through as bytes — one write for a unary answer, the relay's NDJSON
 * chunks as they come for a stream — and a generate/chat may be answered with 202 (a shadow
 * decision, or an async run on an async lane; Accepted.ts).
 */
import { Effect, type Schema } from "effect"
import { ChatRequest, EmbeddingsRequest, EmbedRequest, GenerateRequest, type Operation } from "../domain/OllamaApi.ts"
import { acceptInstead } from "./Accepted.ts"
import { type EdgeAdapter, type Json, type LaneCall } from "./Edge.ts"
import { ollamaError } from "./ErrorResponse.ts"
import { decodeBody } from "./RequestBody.ts"
import { jsonType, pipeResult, resultHeaders, writeWhole } from "./Respond.ts"

const promptOf = (operation: Operation, body: Json): unknown => {
  switch (operation) {
    case "generate": return { system: body.system ?? null, prompt: body.prompt ?? null }
    case "chat": return { messages: body.messages }
    case "embed": return { input: body.input }
    case "embeddings": return { prompt: body.prompt }
  }
}

const ollamaAdapter = (operation: Operation, schema: Schema.Schema<any, any>): EdgeAdapter => {
  const streams = operation === "generate" || operation === "chat"
  return {
    protocol: "ollama",
    errorBody: ollamaError,
    translate: (raw) =>
      Effect.map(decodeBody(schema as Schema.Schema<Json, unknown>, raw), (body): LaneCall => ({
        operation,
        body,
        stream: streams ? (body.stream as boolean | undefined) ?? true : false,
        prompt: promptOf(operation, body)
      })),
    instead: (call, caller, lane, headers) => acceptInstead(operation, call.body, caller, lane, headers, call.prompt),
    respond: (res, result) => {
      // Called as the answer is written (Edge.ts), so writing here is in order.
      if (result._tag === "Unary") {
        writeWhole(res, 200, resultHeaders(result, jsonType), result.bytes)
        return Effect.void
      }
      res.writeHead(200, resultHeaders(result, "application/x-ndjson"))
      return Effect.zipRight(pipeResult(res, result), Effect.sync(() => res.end()))
    }
  }
}

/** The Ollama inference routes on the edge. */
export const ollamaAdapters: Readonly<Record<string, EdgeAdapter>> = {
  "/api/generate": ollamaAdapter("generate", GenerateRequest),
  "/api/chat": ollamaAdapter("chat", ChatRequest),
  "/api/embed": ollamaAdapter("embed", EmbedRequest),
  "/api/embeddings": ollamaAdapter("embeddings", EmbeddingsRequest)
}
