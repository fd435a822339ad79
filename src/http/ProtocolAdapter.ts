/**
 * One serve path for every protocol that is translated onto a lane: OpenAI's chat completions,
 * completions and embeddings (OpenAiRoutes.ts), OpenAI's Responses (ResponsesRoutes.ts) and
 * Anthropic's Messages (MessagesRoutes.ts). An adapter says how its protocol's request becomes a
 * lane request (an Ollama body) and how the lane's Ollama answer, stream and refusals look in the
 * protocol; everything between — body limit, caller context and lane (headers or the legacy
 * model rules), shadow decisions, the lane's admission, plan, breakers, paid fallback and journal,
 * spans, metrics, the caller going away — is the same code for all of them, and the same as
 * /api/chat's.
 *
 * Streams: the lane's NDJSON is fed chunk by chunk to the adapter's EventWriter. A lane's
 * `{"error"}` line (a failure after the first chunk), a malformed line or a stream that ends without
 * its final chunk become the writer's `fail` events and nothing after them — never a fake
 * completion, so each protocol's SDK throws.
 */
import { Clock, Effect, type Schema, Stream, type Tracer } from "effect"
import type { IncomingMessage, ServerResponse } from "node:http"
import { type CallerContext, resolveCallerContext } from "../domain/CallerContext.ts"
import { BadRequest, type GatewayError } from "../domain/Errors.ts"
import type { OllamaRequest } from "../domain/OllamaApi.ts"
import type { Protocol } from "../domain/Protocol.ts"
import * as RequestLog from "../observability/RequestLog.ts"
import * as Tracing from "../observability/Tracing.ts"
import { Gateway } from "../routing/Gateway.ts"
import type { LaneResult } from "../run/Run.ts"
import { LineSplitter, parseLine } from "../upstream/Ndjson.ts"
import { shadowInstead } from "./Accepted.ts"
import { errorHeaders, headerBag, makeFastHandler, pipeStream, readBody, requestScoped, resultHeaders } from "./InferenceRoutes.ts"
import { decodeBody, parseJsonObject } from "./RequestBody.ts"

export type Json = Record<string, unknown>

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

/** A request of the protocol, translated: what the lane runs (decoded by the Ollama schema), and how its answer is rendered. */
export type Translation = OllamaRequest & TranslationFacts

export interface TranslationFacts {
  readonly stream: boolean
  /** What the journal keeps when it keeps prompts (the Ollama routes' shapes). */
  readonly prompt: unknown
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
  readonly errorBody: (message: string, status: number) => unknown
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

const writeError = (res: ServerResponse, adapter: ProtocolAdapter, error: GatewayError, caller: CallerContext | null) => {
  if (res.headersSent) return
  const body = encoder.encode(JSON.stringify(adapter.errorBody(error.message, error.status)))
  res.writeHead(error.status, { ...errorHeaders(error, caller), "content-length": String(body.byteLength) })
  res.end(body)
}

const parseJson = (bytes: Uint8Array): Json => JSON.parse(new TextDecoder().decode(bytes)) as Json

const serve = (adapter: ProtocolAdapter, path: string, req: IncomingMessage, res: ServerResponse) => {
  let span: Tracer.Span | null = null
  return requestScoped((done) => Effect.gen(function*() {
    const gateway = yield* Gateway
    let caller: CallerContext | null = null
    let reachedLane = false
    let request: Translation | null = null
    const outcome = yield* Effect.gen(function*() {
      const bytes = yield* readBody(req, gateway.config.server.maxBodyBytes, { res, bodies: gateway.bodies })
      const raw = yield* parseJsonObject(bytes, gateway.config.server)
      const translated = yield* adapter.translate(raw)
      request = translated
      const headers = headerBag(req)
      const resolved = resolveCallerContext(headers, translated.body.model, gateway.laneRules)
      if (!("traceId" in resolved)) return yield* Effect.fail(resolved)
      caller = resolved
      yield* RequestLog.note({ caller: resolved })
      span = yield* Tracing.startServerSpan("POST", path, resolved)
      const lane = gateway.lanes.get(resolved.lane)!
      // A mirrored request, or a lane in shadow mode: decided and journaled, never executed (issue 5).
      // An async lane stays 409 here: these protocols have no run to poll.
      const shadow = yield* shadowInstead(translated, resolved, lane, headers)
      if (shadow !== null) return shadow
      reachedLane = true
      const handled = lane.handle({ ...translated, caller: resolved, protocol: adapter.protocol })
      return yield* (span === null ? handled : Effect.withParentSpan(handled, span))
    }).pipe(Effect.either)
    if (outcome._tag === "Left" || outcome.right._tag !== "Stream") yield* done
    if (outcome._tag === "Left") {
      // A refusal before the lane is not a run (the lane counts its own): count it here.
      if (!reachedLane) gateway.metrics.request(caller === null ? "none" : (caller as CallerContext).lane, "none", outcome.left._tag)
      span ??= yield* Tracing.startServerSpan("POST", path, caller)
      yield* RequestLog.note({ error: outcome.left._tag })
      writeError(res, adapter, outcome.left, caller)
      return yield* Tracing.endServerSpan(span, outcome.left.status, outcome.left)
    }
    if (outcome.right._tag === "Accepted") {
      res.writeHead(202, { "content-type": "application/json; charset=utf-8", ...outcome.right.headers })
      res.end(encoder.encode(JSON.stringify(outcome.right.body)))
      return yield* Tracing.endServerSpan(span, 202, null)
    }
    const result: LaneResult = outcome.right
    const translated = request! as Translation
    const meta: RunMeta = {
      runId: result.info.runId,
      created: Math.floor((yield* Clock.currentTimeMillis) / 1000),
      model: result.info.model
    }
    if (result._tag === "Unary") {
      const body = encoder.encode(JSON.stringify(translated.answer(parseJson(result.bytes), meta)))
      res.writeHead(200, { ...resultHeaders(result, "application/json; charset=utf-8"), "content-length": String(body.byteLength) })
      res.end(body)
      return yield* Tracing.endServerSpan(span, 200, null)
    }
    if (translated.events === undefined) {
      return yield* Effect.dieMessage(`${adapter.protocol}: the lane streamed an answer to a request that never streams`)
    }
    res.writeHead(200, { ...resultHeaders(result, "text/event-stream; charset=utf-8"), "cache-control": "no-cache" })
    yield* pipeStream(res, relayEvents(result.stream, translated.events(meta)), result.idleTimeoutMs)
    yield* done
    res.end()
    return yield* Tracing.endServerSpan(span, 200, null)
  })).pipe(
    // Interrupted (the caller went away): the span still ends, with the abort as its error.
    Effect.onInterrupt(() => span === null ? Effect.void : Tracing.endSpan(span, { type: "ClientAborted", message: "the caller went away" }))
  )
}

/** The fast-path handler for POST routes served by these adapters. */
export const makeProtocolHandler = (routes: Readonly<Record<string, ProtocolAdapter>>) =>
  makeFastHandler((req, res, path) => {
    if (req.method !== "POST") return undefined
    const adapter = routes[path]
    if (adapter === undefined) return undefined
    return {
      path,
      serve: serve(adapter, path, req, res),
      refuse: (error) => writeError(res, adapter, error, null),
      internalError: JSON.stringify(adapter.errorBody("internal gateway error; the journal and logs have the details", 500))
    }
  })
