/**
 * The inference routes (POST /api/generate, /api/chat, /api/embed, /api/embeddings) on a thin
 * node:http adapter. They are the gateway's hot path: going straight from the node request to the
 * lane actor, without the platform router, keeps the gateway's added latency well under a
 * millisecond (see BENCHMARKS.md). Every other route goes through the @effect/platform router.
 */
import { Effect, Exit, FiberId, FiberRef, Ref, Runtime, Scope, Stream, type Tracer } from "effect"
import type { IncomingMessage, ServerResponse } from "node:http"
import { type CallerContext, HeaderNames, resolveCallerContext } from "../domain/CallerContext.ts"
import { errorHeaderName, errorHeaderValue } from "../domain/ErrorWire.ts"
import { type BadRequest, type GatewayError, retryAfterOf, ShuttingDown } from "../domain/Errors.ts"
import { ChatRequest, EmbeddingsRequest, EmbedRequest, GenerateRequest, type OllamaRequest, type Operation } from "../domain/OllamaApi.ts"
import * as RequestLog from "../observability/RequestLog.ts"
import * as Tracing from "../observability/Tracing.ts"
import type { LaneResult } from "../run/Run.ts"
import { abortReason, slowConsumer } from "../routing/AbortReason.ts"
import { drainTo } from "../routing/ChunkSource.ts"
import { Gateway } from "../routing/Gateway.ts"
import { acceptInstead, type AcceptServices } from "./Accepted.ts"
import { Drain } from "./Drain.ts"
import { decodeBody, parseJsonObject, readBody } from "./RequestBody.ts"

/** The route's body decoded by its operation's schema (unknown fields dropped, known ones checked). */
const decodeRequest = (operation: Operation, raw: unknown): Effect.Effect<OllamaRequest, BadRequest> => {
  switch (operation) {
    case "generate": return Effect.map(decodeBody(GenerateRequest, raw), (body) => ({ operation, body }))
    case "chat": return Effect.map(decodeBody(ChatRequest, raw), (body) => ({ operation, body }))
    case "embed": return Effect.map(decodeBody(EmbedRequest, raw), (body) => ({ operation, body }))
    case "embeddings": return Effect.map(decodeBody(EmbeddingsRequest, raw), (body) => ({ operation, body }))
  }
}

const routes: Readonly<Record<string, Operation>> = {
  "/api/generate": "generate",
  "/api/chat": "chat",
  "/api/embed": "embed",
  "/api/embeddings": "embeddings"
}

const promptOf = (request: OllamaRequest): unknown => {
  switch (request.operation) {
    case "generate": return { system: request.body.system ?? null, prompt: request.body.prompt ?? null }
    case "chat": return { messages: request.body.messages }
    case "embed": return { input: request.body.input }
    case "embeddings": return { prompt: request.body.prompt }
  }
}

export { readBody } from "./RequestBody.ts"

export const headerBag = (req: IncomingMessage): Record<string, string | undefined> => {
  const out: Record<string, string | undefined> = {}
  for (const [k, v] of Object.entries(req.headers)) out[k] = Array.isArray(v) ? v.join(",") : v
  return out
}

const encoder = new TextEncoder()

/** The headers of a refusal on any fast-path route: trace id, Retry-After, the typed error tag. */
export const errorHeaders = (error: GatewayError, caller: CallerContext | null): Record<string, string> => {
  const headers: Record<string, string> = { "content-type": "application/json; charset=utf-8" }
  if (caller !== null) headers[HeaderNames.traceId] = caller.traceId
  const retryAfter = retryAfterOf(error)
  if (retryAfter !== undefined) headers["retry-after"] = String(retryAfter)
  const tagged = errorHeaderValue(error)
  if (tagged !== undefined) headers[errorHeaderName] = tagged
  return headers
}

const writeError = (res: ServerResponse, error: GatewayError, caller: CallerContext | null) => {
  if (res.headersSent) return
  const body = encoder.encode(JSON.stringify({ error: error.message }))
  res.writeHead(error.status, { ...errorHeaders(error, caller), "content-length": String(body.byteLength) })
  res.end(body)
}

export const resultHeaders = (result: LaneResult, contentType: string): Record<string, string> => ({
  "content-type": contentType,
  [HeaderNames.traceId]: result.info.traceId,
  [HeaderNames.runId]: result.info.runId,
  "x-awooop-lane": result.info.lane,
  "x-awooop-endpoint": result.info.endpoint,
  "x-awooop-model": result.info.model
})

/**
 * Corks the socket for the rest of this turn of the event loop: writes made in one turn leave in one
 * syscall (the headers with the first chunk, the last chunk with the end of the response). Nothing
 * waits for data that has not arrived.
 */
const corker = (res: ServerResponse) => {
  let corked = false
  const uncork = () => {
    corked = false
    res.uncork()
  }
  return () => {
    if (corked) return
    corked = true
    res.cork()
    setImmediate(uncork)
  }
}

/**
 * One chunk with back-pressure: a slow caller slows the upstream read, nothing piles up. A caller
 * that takes nothing for `idleTimeoutMs` is cut off (false): it would hold the host's slot forever.
 */
const writeChunk = (res: ServerResponse, chunk: Uint8Array, idleTimeoutMs: number): Effect.Effect<boolean> =>
  res.write(chunk)
    ? Effect.succeed(true)
    : Effect.async<boolean>((resume) => {
      const onDrain = () => {
        cleanup()
        resume(Effect.succeed(true))
      }
      const timer = setTimeout(() => {
        cleanup()
        resume(Effect.succeed(false))
      }, idleTimeoutMs)
      const cleanup = () => {
        clearTimeout(timer)
        res.off("drain", onDrain)
        res.off("close", onDrain)
      }
      res.once("drain", onDrain)
      res.once("close", onDrain)
      return Effect.sync(cleanup)
    })

/** When the lane gives no step timeout for a stream (a canned answer): how long a caller may stall. */
const defaultIdleTimeoutMs = 60_000

/** Sends the headers, then every chunk `drive` writes, as it comes. */
const sendChunks = (
  res: ServerResponse,
  idleTimeoutMs: number,
  drive: (write: (chunk: Uint8Array) => Effect.Effect<void>) => Effect.Effect<void>
) =>
  Effect.suspend(() => {
    const cork = corker(res)
    cork()
    res.flushHeaders()
    return drive((chunk) => {
      cork()
      return Effect.flatMap(writeChunk(res, chunk, idleTimeoutMs), (taken) =>
        taken ? Effect.void : Effect.zipRight(
          // The relay's finalizers (upstream closed, slot freed, RunFailed) run as for an abort, with this reason.
          FiberRef.set(abortReason, slowConsumer(idleTimeoutMs)),
          Effect.zipRight(Effect.sync(() => res.destroy()), Effect.interrupt)
        ))
    }).pipe(Effect.ensuring(Effect.sync(cork)))
  })

/** Sends the headers, then the stream's chunks as they come. */
export const pipeStream = (res: ServerResponse, stream: Stream.Stream<Uint8Array>, idleTimeoutMs = defaultIdleTimeoutMs) =>
  sendChunks(res, idleTimeoutMs, (write) => Stream.runForEach(stream, write))

/** pipeStream for a lane's relay, pulled chunk by chunk without the Stream machinery. */
export const pipeResult = (res: ServerResponse, result: Extract<LaneResult, { _tag: "Stream" }>) => {
  const source = result.source
  const idle = result.idleTimeoutMs ?? defaultIdleTimeoutMs
  return source === undefined ? pipeStream(res, result.stream, idle) : sendChunks(res, idle, (write) => drainTo(source, write))
}

/**
 * The request's scope: what the lane takes for the request (admission, slot, upstream body, budget
 * reservation) is released when it closes — with the exit of the response (a stream's abort is
 * journaled from it), or earlier by `done` once the answer is out (so the slot is free before the
 * caller sees the end).
 */
export const requestScoped = <A, E, R>(serve: (done: Effect.Effect<void>) => Effect.Effect<A, E, R>) =>
  Effect.acquireUseRelease(
    Scope.make(),
    (scope) => Scope.extend(serve(Scope.close(scope, Exit.void)), scope),
    (scope, exit) => Scope.close(scope, exit)
  )

const serve = (operation: Operation, path: string, req: IncomingMessage, res: ServerResponse) => {
  // The request's server span (null with tracing off); the lane's attempt spans are its children.
  let span: Tracer.Span | null = null
  return requestScoped((done) => Effect.gen(function*() {
    const gateway = yield* Gateway
    let caller: CallerContext | null = null
    let reachedLane = false
    const outcome = yield* Effect.gen(function*() {
      const bytes = yield* readBody(req, gateway.config.server.maxBodyBytes, { res, bodies: gateway.bodies })
      const raw = yield* parseJsonObject(bytes, gateway.config.server)
      const decoded = yield* decodeRequest(operation, raw)
      const body = decoded.body
      const headers = headerBag(req)
      const resolved = resolveCallerContext(headers, body.model, gateway.laneRules)
      if (!("traceId" in resolved)) return yield* Effect.fail(resolved)
      caller = resolved
      yield* RequestLog.note({ caller: resolved })
      span = yield* Tracing.startServerSpan("POST", path, resolved)
      const lane = gateway.lanes.get(resolved.lane)!
      // Shadow decisions and async runs answer 202 at once instead of running here.
      const prompt = promptOf(decoded)
      const accepted = yield* acceptInstead(decoded, resolved, lane, headers, prompt)
      if (accepted !== null) return accepted
      const stream = decoded.operation === "generate" || decoded.operation === "chat" ? decoded.body.stream ?? true : false
      reachedLane = true
      const handled = lane.handle({ ...decoded, stream, caller: resolved, prompt })
      return yield* (span === null ? handled : Effect.withParentSpan(handled, span))
    }).pipe(Effect.either)
    if (outcome._tag === "Left" || outcome.right._tag !== "Stream") yield* done
    if (outcome._tag === "Left") {
      // A refusal before the lane is not a run (the lane counts its own): count it here.
      if (!reachedLane) gateway.metrics.request(caller === null ? "none" : (caller as CallerContext).lane, "none", outcome.left._tag)
      span ??= yield* Tracing.startServerSpan("POST", path, caller)
      yield* RequestLog.note({ error: outcome.left._tag })
      writeError(res, outcome.left, caller)
      return yield* Tracing.endServerSpan(span, outcome.left.status, outcome.left)
    }
    const result = outcome.right
    if (result._tag === "Accepted") {
      res.writeHead(202, { "content-type": "application/json; charset=utf-8", ...result.headers })
      res.end(JSON.stringify(result.body))
      return yield* Tracing.endServerSpan(span, 202, null)
    }
    if (result._tag === "Unary") {
      // A known length: no chunked framing for an answer that leaves in one write.
      res.writeHead(200, { ...resultHeaders(result, "application/json; charset=utf-8"), "content-length": String(result.bytes.byteLength) })
      res.end(result.bytes)
      return yield* Tracing.endServerSpan(span, 200, null)
    }
    res.writeHead(200, resultHeaders(result, "application/x-ndjson"))
    yield* pipeResult(res, result)
    yield* done
    res.end()
    return yield* Tracing.endServerSpan(span, 200, null)
  })).pipe(
    // Interrupted (the caller went away): the span still ends, with the abort as its error.
    Effect.onInterrupt(() => span === null ? Effect.void : Tracing.endSpan(span, { type: "ClientAborted", message: "the caller went away" }))
  )
}

/** A request the fast path takes: how to serve it and how to refuse it in its own protocol. */
export interface FastRoute {
  /** The route's path, as the log line names it. */
  readonly path: string
  readonly serve: Effect.Effect<void, never, Gateway | AcceptServices>
  /** Writes a refusal (the gateway is draining) in the route's error shape. */
  readonly refuse: (error: GatewayError) => void
  /** The body of a 500 for an unexpected defect, in the route's error shape. */
  readonly internalError: string
}

/**
 * A node-level handler over `match`: answers the requests it matches and returns true, or returns
 * false so the next handler (in the end the platform router) takes the request. Counts in-flight
 * requests for the drain, answers 500 on a defect, and interrupts the request's fiber (freeing its
 * slot, journaling the abort) when the caller goes away.
 */
export const makeFastHandler = (match: (req: IncomingMessage, res: ServerResponse, path: string) => FastRoute | undefined) =>
  Effect.gen(function*() {
    const runtime = yield* Effect.runtime<Gateway | Drain | AcceptServices>()
    const runFork = Runtime.runFork(runtime)
    const drain = yield* Drain
    return (req: IncomingMessage, res: ServerResponse): boolean => {
      const url = req.url ?? "/"
      const q = url.indexOf("?")
      const route = match(req, res, q < 0 ? url : url.slice(0, q))
      if (route === undefined) return false
      const program = Effect.gen(function*() {
        if (yield* Ref.get(drain.draining)) return route.refuse(new ShuttingDown())
        yield* Ref.update(drain.inFlight, (n) => n + 1)
        yield* route.serve.pipe(Effect.ensuring(Ref.update(drain.inFlight, (n) => n - 1)))
      })
      // The status the caller got; nothing sent yet: 499 (it went away, or the drain cut it) or the 500 written below.
      const status = (how: "done" | "failed" | "interrupted") =>
        res.headersSent || how === "done" ? res.statusCode : how === "interrupted" ? 499 : 500
      const fiber = runFork(RequestLog.logged(req.method ?? "POST", route.path, status, program))
      drain.track(fiber)
      fiber.addObserver((exit) => {
        if (Exit.isFailure(exit) && !Exit.isInterrupted(exit)) {
          runFork(Effect.logError(`unhandled error on ${req.method} ${url}`, exit.cause))
          if (!res.headersSent) {
            res.writeHead(500, { "content-type": "application/json; charset=utf-8" })
            res.end(route.internalError)
          } else if (!res.writableEnded) res.end()
        } else if (Exit.isInterrupted(exit) && !res.writableEnded) {
          res.destroy()
        }
      })
      // The caller went away: interrupt the run (its finalizers free the slot and journal the abort).
      res.on("close", () => {
        if (!res.writableEnded) fiber.unsafeInterruptAsFork(FiberId.none)
      })
      return true
    }
  })

const internalError = JSON.stringify({ error: "internal gateway error; the journal and logs have the details" })

/** The Ollama inference routes on the fast path. */
export const makeInferenceHandler = makeFastHandler((req, res, path) => {
  if (req.method !== "POST") return undefined
  const operation = routes[path]
  if (operation === undefined) return undefined
  return { path, serve: serve(operation, path, req, res), refuse: (error) => writeError(res, error, null), internalError }
})
