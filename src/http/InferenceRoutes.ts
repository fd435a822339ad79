/**
 * The inference routes (POST /api/generate, /api/chat, /api/embed, /api/embeddings) on a thin
 * node:http adapter. They are the gateway's hot path: going straight from the node request to the
 * lane actor, without the platform router, keeps the gateway's added latency well under a
 * millisecond (see BENCHMARKS.md). Every other route goes through the @effect/platform router.
 */
import { Effect, Exit, FiberId, Ref, Runtime, Schema, Stream } from "effect"
import type { IncomingMessage, ServerResponse } from "node:http"
import { type CallerContext, HeaderNames, resolveCallerContext } from "../domain/CallerContext.ts"
import { BadRequest, BodyTooLarge, type GatewayError, retryAfterOf, ShuttingDown } from "../domain/Errors.ts"
import { ChatRequest, EmbeddingsRequest, EmbedRequest, GenerateRequest, type Operation } from "../domain/OllamaApi.ts"
import type { LaneResult } from "../routing/Lane.ts"
import { Gateway } from "../routing/Gateway.ts"
import { Drain } from "./Drain.ts"
import { decodeBody, parseJsonObject } from "./RequestBody.ts"

const schemas = {
  generate: GenerateRequest,
  chat: ChatRequest,
  embed: EmbedRequest,
  embeddings: EmbeddingsRequest
} as const

const routes: Readonly<Record<string, Operation>> = {
  "/api/generate": "generate",
  "/api/chat": "chat",
  "/api/embed": "embed",
  "/api/embeddings": "embeddings"
}

const promptOf = (operation: Operation, body: Record<string, unknown>): unknown => {
  switch (operation) {
    case "generate": return { system: body.system ?? null, prompt: body.prompt ?? null }
    case "chat": return { messages: body.messages }
    case "embed": return { input: body.input }
    case "embeddings": return { prompt: body.prompt }
  }
}

/** Reads the body up to `max` bytes; a larger one is refused without buffering it. */
const readBody = (req: IncomingMessage, max: number) =>
  Effect.async<Uint8Array, BodyTooLarge | BadRequest>((resume) => {
    const declared = Number(req.headers["content-length"])
    if (Number.isFinite(declared) && declared > max) {
      resume(Effect.fail(new BodyTooLarge({ limit: max })))
      return
    }
    const chunks: Array<Buffer> = []
    let size = 0
    const cleanup = () => {
      req.off("data", onData)
      req.off("end", onEnd)
      req.off("error", onError)
    }
    const onData = (chunk: Buffer) => {
      size += chunk.length
      if (size > max) {
        cleanup()
        resume(Effect.fail(new BodyTooLarge({ limit: max })))
      } else chunks.push(chunk)
    }
    const onEnd = () => {
      cleanup()
      resume(Effect.succeed(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size)))
    }
    const onError = (e: Error) => {
      cleanup()
      resume(Effect.fail(new BadRequest({ message: `could not read the request body: ${e.message}` })))
    }
    req.on("data", onData)
    req.on("end", onEnd)
    req.on("error", onError)
    return Effect.sync(cleanup)
  })

const headerBag = (req: IncomingMessage): Record<string, string | undefined> => {
  const out: Record<string, string | undefined> = {}
  for (const [k, v] of Object.entries(req.headers)) out[k] = Array.isArray(v) ? v.join(",") : v
  return out
}

const encoder = new TextEncoder()

const writeError = (res: ServerResponse, error: GatewayError, caller: CallerContext | null) => {
  if (res.headersSent) return
  const headers: Record<string, string> = { "content-type": "application/json; charset=utf-8" }
  if (caller !== null) headers[HeaderNames.traceId] = caller.traceId
  const retryAfter = retryAfterOf(error)
  if (retryAfter !== undefined) headers["retry-after"] = String(retryAfter)
  res.writeHead(error.status, headers)
  res.end(encoder.encode(JSON.stringify({ error: error.message })))
}

const resultHeaders = (result: LaneResult, contentType: string): Record<string, string> => ({
  "content-type": contentType,
  [HeaderNames.traceId]: result.info.traceId,
  [HeaderNames.runId]: result.info.runId,
  "x-awooop-lane": result.info.lane,
  "x-awooop-endpoint": result.info.endpoint,
  "x-awooop-model": result.info.model
})

/** Writes a stream with back-pressure: a slow caller slows the upstream read, nothing piles up. */
const pipeStream = (res: ServerResponse, stream: Stream.Stream<Uint8Array>) =>
  Stream.runForEach(stream, (chunk) =>
    res.write(chunk)
      ? Effect.void
      : Effect.async<void>((resume) => {
        const onDrain = () => {
          res.off("close", onDrain)
          resume(Effect.void)
        }
        res.once("drain", onDrain)
        res.once("close", onDrain)
        return Effect.sync(() => {
          res.off("drain", onDrain)
          res.off("close", onDrain)
        })
      }))

const serve = (operation: Operation, req: IncomingMessage, res: ServerResponse) =>
  Effect.gen(function*() {
    const gateway = yield* Gateway
    let caller: CallerContext | null = null
    const outcome = yield* Effect.gen(function*() {
      const bytes = yield* readBody(req, gateway.config.server.maxBodyBytes)
      const raw = yield* parseJsonObject(bytes)
      const body = yield* decodeBody(schemas[operation] as unknown as Schema.Schema<Record<string, unknown>, unknown>, raw)
      const resolved = resolveCallerContext(headerBag(req), body.model as string, gateway.laneRules)
      if (!("traceId" in resolved)) return yield* Effect.fail(resolved)
      caller = resolved
      const lane = gateway.lanes.get(resolved.lane)!
      const stream = operation === "generate" || operation === "chat" ? (body.stream as boolean | undefined) ?? true : false
      return yield* lane.handle({ operation, body, stream, caller: resolved, prompt: promptOf(operation, body) })
    }).pipe(Effect.either)
    if (outcome._tag === "Left") return writeError(res, outcome.left, caller)
    const result = outcome.right
    if (result._tag === "Unary") {
      res.writeHead(200, resultHeaders(result, "application/json; charset=utf-8"))
      res.end(result.bytes)
      return
    }
    res.writeHead(200, resultHeaders(result, "application/x-ndjson"))
    res.flushHeaders()
    yield* pipeStream(res, result.stream)
    res.end()
  })

/**
 * The node-level handler: answers the inference routes and returns true, or returns false so the
 * platform router takes the request.
 */
export const makeInferenceHandler = Effect.gen(function*() {
  const runtime = yield* Effect.runtime<Gateway | Drain>()
  const runFork = Runtime.runFork(runtime)
  const drain = yield* Drain
  return (req: IncomingMessage, res: ServerResponse): boolean => {
    if (req.method !== "POST") return false
    const url = req.url ?? "/"
    const q = url.indexOf("?")
    const operation = routes[q < 0 ? url : url.slice(0, q)]
    if (operation === undefined) return false
    const program = Effect.gen(function*() {
      if (yield* Ref.get(drain.draining)) return writeError(res, new ShuttingDown(), null)
      yield* Ref.update(drain.inFlight, (n) => n + 1)
      yield* serve(operation, req, res).pipe(Effect.ensuring(Ref.update(drain.inFlight, (n) => n - 1)))
    })
    const fiber = runFork(program)
    fiber.addObserver((exit) => {
      if (Exit.isFailure(exit) && !Exit.isInterrupted(exit)) {
        runFork(Effect.logError("unhandled error on an inference route", exit.cause))
        if (!res.headersSent) {
          res.writeHead(500, { "content-type": "application/json; charset=utf-8" })
          res.end(JSON.stringify({ error: "internal gateway error; the journal and logs have the details" }))
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
