/**
 * Writing an answer on the node response, for every protocol on the fast path: the headers a lane's
 * result carries, a one-write body, a refusal (ErrorResponse.ts renders it), a 202, and a stream with
 * back-pressure and a stalled-caller cut-off.
 */
import { Effect, FiberRef, Stream } from "effect"
import type { IncomingMessage, ServerResponse } from "node:http"
import { type CallerContext, HeaderNames } from "../domain/CallerContext.ts"
import type { GatewayError } from "../domain/Errors.ts"
import { abortReason, slowConsumer } from "../routing/AbortReason.ts"
import { drainTo } from "../routing/ChunkSource.ts"
import type { LaneResult } from "../run/Run.ts"
import type { Accepted } from "./Accepted.ts"
import { type ErrorShape, renderError } from "./ErrorResponse.ts"

export const jsonType = "application/json; charset=utf-8"

const encoder = new TextEncoder()

export const headerBag = (req: IncomingMessage): Record<string, string | undefined> => {
  const out: Record<string, string | undefined> = {}
  for (const [k, v] of Object.entries(req.headers)) out[k] = Array.isArray(v) ? v.join(",") : v
  return out
}

export const resultHeaders = (result: LaneResult, contentType: string): Record<string, string> => ({
  "content-type": contentType,
  [HeaderNames.traceId]: result.info.traceId,
  [HeaderNames.runId]: result.info.runId,
  "x-awooop-lane": result.info.lane,
  "x-awooop-endpoint": result.info.endpoint,
  "x-awooop-model": result.info.model
})

/** A body that leaves in one write: a known length, no chunked framing. */
export const writeWhole = (res: ServerResponse, status: number, headers: Record<string, string>, body: Uint8Array) => {
  res.writeHead(status, { ...headers, "content-length": String(body.byteLength) })
  res.end(body)
}

/** A refusal in the route's protocol (nothing, when an answer already started). */
export const writeError = (res: ServerResponse, shape: ErrorShape, error: GatewayError, caller: CallerContext | null) => {
  if (res.headersSent) return
  const rendered = renderError(error, caller, shape)
  writeWhole(res, rendered.status, rendered.headers, rendered.body)
}

/** 202: a shadow decision or an async run, instead of running the request here. */
export const writeAccepted = (res: ServerResponse, accepted: Accepted) => {
  res.writeHead(202, { "content-type": jsonType, ...accepted.headers })
  res.end(encoder.encode(JSON.stringify(accepted.body)))
}

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
  res.write(chunk) ? Effect.succeed(true) : Effect.async<boolean>((resume) => {
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

/** The caller took nothing for too long: the relay's finalizers (upstream closed, slot freed, RunFailed) run as for an abort, with this reason. */
const cutOff = (res: ServerResponse, idleTimeoutMs: number) =>
  Effect.zipRight(
    FiberRef.set(abortReason, slowConsumer(idleTimeoutMs)),
    Effect.zipRight(Effect.sync(() => res.destroy()), Effect.interrupt)
  )

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
      return Effect.flatMap(writeChunk(res, chunk, idleTimeoutMs), (taken) => taken ? Effect.void : cutOff(res, idleTimeoutMs))
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
