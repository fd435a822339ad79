/**
 * The protocols translated onto a lane: OpenAI's chat completions, completions and embeddings
 * (OpenAiRoutes.ts), OpenAI's Responses (ResponsesRoutes.ts) and Anthropic's Messages
 * (MessagesRoutes.ts). An adapter says how its protocol's request becomes a lane request (an Ollama
 * body) and how the lane's Ollama answer, stream and refusals look in the protocol; `onEdge` puts
 * it on the one edge (Edge.ts), where body limits, caller context and lane, shadow decisions,
 * spans, metrics and the caller going away are the same code as /api/chat's.
 *
 * Streams: the lane's NDJSON is fed chunk by chunk to the adapter's EventWriter. A lane's
 * `{"error"}` line (a failure after the first chunk), a malformed line or a stream that ends without
 * its final chunk become the writer's `fail` events and nothing after them — never a fake
 * completion, so each protocol's SDK throws.
 */
import { Clock, Effect, type Schema, Stream } from "effect"
import type { ServerResponse } from "node:http"
import { BadRequest, type GatewayError } from "../domain/Errors.ts"
import type { Protocol } from "../domain/Protocol.ts"
import type { LaneResult } from "../run/Run.ts"
import { LineSplitter, parseLine } from "../upstream/Ndjson.ts"
import { shadowInstead } from "./Accepted.ts"
import type { EdgeAdapter, Json, LaneCall } from "./Edge.ts"
import type { ErrorShape } from "./ErrorResponse.ts"
import { decodeBody } from "./RequestBody.ts"
import { jsonType, pipeStream, resultHeaders, writeWhole } from "./Respond.ts"

export type { Json } from "./Edge.ts"

/** Facts of the run an answer is rendered with. */
export interface RunMeta {
  readonly runId: string
  /** Unix seconds. */
  readonly created: number
  /** The model the lane assigned (an answer's own `model` field wins when it has one). */
  readonly model: string
}

/** The lane's NDJSON chunks → the protocol's stream events (bytes on the wire). */
export interface EventWriter {
  /** One Ollama chunk; the final one has `done: true`. */
  readonly chunk: (chunk: Json) => ReadonlyArray<Uint8Array>
  /** The stream broke after it started: the protocol's failure events, the last thing sent. */
  readonly fail: (message: string) => ReadonlyArray<Uint8Array>
}

/** A request of the protocol, translated: what the lane runs, and how its answer is rendered. */
export type Translation = LaneCall & TranslationRendering

export interface TranslationRendering {
  /** The lane's one Ollama answer → the protocol's answer. */
  readonly answer: (ollama: Json, meta: RunMeta) => unknown
  /** How a streamed answer is written; absent for a request that never streams (embeddings). */
  readonly events?: (meta: RunMeta) => EventWriter
}

export interface ProtocolAdapter {
  readonly protocol: Protocol
  /** Decodes the protocol's body; a BadRequest names the field at fault. */
  readonly translate: (raw: Json) => Effect.Effect<Translation, GatewayError>
  /** The protocol's refusal body. */
  readonly errorBody: ErrorShape
}

const encoder = new TextEncoder()

/** One server-sent event; `event: <name>` is left out when there is no name. */
export const sse = (event: string | null, data: unknown): Uint8Array =>
  encoder.encode(`${event === null ? "" : `event: ${event}\n`}data: ${JSON.stringify(data)}\n\n`)

export const str = (v: unknown): string => (typeof v === "string" ? v : "")
export const count = (v: unknown): number => (typeof v === "number" && Number.isFinite(v) ? v : 0)

/** A chunk's Ollama tool calls as name + arguments (Ollama gives arguments as an object). */
export const ollamaToolCalls = (message: Json): ReadonlyArray<{ readonly name: string; readonly arguments: Json }> => {
  const calls = message.tool_calls
  if (!Array.isArray(calls)) return []
  return calls.map((c: Json) => {
    const fn = (c.function ?? {}) as Json
    const args = fn.arguments
    return { name: str(fn.name), arguments: typeof args === "object" && args !== null && !Array.isArray(args) ? args as Json : {} }
  })
}

export const typeOf = (v: unknown): unknown => (typeof v === "object" && v !== null ? (v as Json).type : undefined)

/**
 * One element of a list of typed parts (input items, content blocks) decoded by the schema of its
 * `type` (`fallback` when it has none): the refusal names the element (`input.2.call_id`), where
 * a union's would only say that the whole list does not match.
 */
export const decodeTyped = <S extends Readonly<Record<string, Schema.Schema.AnyNoContext>>>(
  table: S,
  value: unknown,
  at: ReadonlyArray<PropertyKey>,
  fallback?: keyof S & string
): Effect.Effect<Schema.Schema.Type<S[keyof S]>, BadRequest> => {
  const type = typeOf(value) ?? fallback
  if (typeof type !== "string" || !Object.hasOwn(table, type)) {
    const what = type === undefined ? "is missing" : `${JSON.stringify(type)} is not supported`
    return Effect.fail(new BadRequest({ message: `invalid request: ${[...at, "type"].join(".")}: ${what} (supported: ${Object.keys(table).join(", ")})` }))
  }
  return decodeBody(table[type]!, value, at)
}

/** The lane's NDJSON bytes through a writer (see the header for how a broken stream ends). */
export const relayEvents = (lines: Stream.Stream<Uint8Array>, writer: EventWriter): Stream.Stream<Uint8Array> => {
  const splitter = new LineSplitter()
  let state: "open" | "finished" | "failed" = "open"
  const fail = (message: string) => {
    state = "failed"
    return writer.fail(message)
  }
  const translateLine = (line: Uint8Array): ReadonlyArray<Uint8Array> => {
    if (state !== "open") return []
    const parsed = parseLine(line)
    if (parsed._tag === "Blank") return []
    if (parsed._tag === "Malformed") return fail(`the upstream stream broke: ${parsed.message}`)
    const chunk = parsed.value
    if (typeof chunk.error === "string") return fail(chunk.error)
    if (chunk.done === true) state = "finished"
    return writer.chunk(chunk)
  }
  return lines.pipe(
    Stream.mapConcat((bytes) => splitter.push(bytes).flatMap(translateLine)),
    Stream.concat(Stream.suspend(() => {
      const last = splitter.rest()
      const tail = last === null ? [] : translateLine(last)
      return Stream.fromIterable(state === "open" ? [...tail, ...fail("the upstream stream ended without its final chunk")] : tail)
    }))
  )
}

const parseJson = (bytes: Uint8Array): Json => JSON.parse(new TextDecoder().decode(bytes)) as Json

/** The lane's Ollama answer, translated: one JSON answer, or the protocol's server-sent events. */
const respond = (protocol: Protocol) => (res: ServerResponse, result: LaneResult, translated: Translation, done: Effect.Effect<void>) =>
  Effect.flatMap(Clock.currentTimeMillis, (now) => {
    const meta: RunMeta = { runId: result.info.runId, created: Math.floor(now / 1000), model: result.info.model }
    if (result._tag === "Unary") {
      const body = encoder.encode(JSON.stringify(translated.answer(parseJson(result.bytes), meta)))
      writeWhole(res, 200, resultHeaders(result, jsonType), body)
      return Effect.void
    }
    // (The request's scope frees the stream's slot on this defect.)
    if (translated.events === undefined) return Effect.dieMessage(`${protocol}: the lane streamed an answer to a request that never streams`)
    res.writeHead(200, { ...resultHeaders(result, "text/event-stream; charset=utf-8"), "cache-control": "no-cache" })
    const relayed = pipeStream(res, relayEvents(result.stream, translated.events(meta)), result.idleTimeoutMs)
    return Effect.zipRight(Effect.zipRight(relayed, done), Effect.sync(() => res.end()))
  })

/**
 * A translated protocol on the edge (Edge.ts): a mirrored request or a lane in shadow mode is
 * decided and journaled, never executed (issue 5); an async lane stays 409 here, as these protocols
 * have no run to poll.
 */
export const onEdge = (adapter: ProtocolAdapter): EdgeAdapter<Translation> => ({
  protocol: adapter.protocol,
  translate: adapter.translate,
  errorBody: adapter.errorBody,
  instead: (call, caller, lane, headers) => shadowInstead(call, caller, lane, headers),
  respond: respond(adapter.protocol)
})

/** The edge's table for these adapters' POST routes. */
export const onEdgeAll = (routes: Readonly<Record<string, ProtocolAdapter>>): Record<string, EdgeAdapter<Translation>> =>
  Object.fromEntries(Object.entries(routes).map(([path, adapter]) => [path, onEdge(adapter)]))
