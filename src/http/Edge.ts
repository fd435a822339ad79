/**
 * The one HTTP edge for every request that runs on a lane: Ollama's /api/generate, /api/chat,
 * /api/embed, /api/embeddings (InferenceRoutes.ts) and the translated protocols — OpenAI's chat
 * completions, completions, embeddings and Responses, Anthropic's Messages (ProtocolAdapter.ts).
 * It is a thin node:http adapter, not the platform router: on this path the router cost ~3× the
 * throughput (ARCHITECTURE.md), so a request is one Effect from the node request to the lane.
 *
 * An `EdgeAdapter` says only what differs between protocols: how its body becomes a lane call, how
 * its refusals look, what it answers with 202 instead of running, and how the lane's answer is
 * written. Everything else is here, once: body limits, caller context and lane, spans, the refusal
 * counted before the lane, the drain, the 500 on a defect, and the caller going away.
 */
import { Cause, Context, Effect, Exit, FiberId, Runtime, Scope, type Tracer } from "effect"
import type { IncomingMessage, ServerResponse } from "node:http"
import { type CallerContext, resolveCallerContext } from "../domain/CallerContext.ts"
import { type GatewayError, ShuttingDown } from "../domain/Errors.ts"
import type { OllamaRequest } from "../domain/OllamaApi.ts"
import type { Protocol } from "../domain/Protocol.ts"
import * as RequestLog from "../observability/RequestLog.ts"
import * as Tracing from "../observability/Tracing.ts"
import { Gateway } from "../routing/Gateway.ts"
import type { LaneActor } from "../routing/Lane.ts"
import type { LaneResult } from "../run/Run.ts"
import { type Accepted, acceptServices, type AcceptServices } from "./Accepted.ts"
import { Drain } from "./Drain.ts"
import { type ErrorShape, internalErrorMessage } from "./ErrorResponse.ts"
import { parseJsonObject, readBody } from "./RequestBody.ts"
import { headerBag, writeAccepted, writeError } from "./Respond.ts"

export type Json = Record<string, unknown>

/** What a protocol's request becomes on the lane: the Ollama request (decoded by its schema) and how it was asked. */
export type LaneCall = OllamaRequest & LaneCallFacts

export interface LaneCallFacts {
  readonly stream: boolean
  /** What the journal keeps when it keeps prompts (the Ollama routes' shapes). */
  readonly prompt: unknown
}

export interface EdgeAdapter<C extends LaneCall = LaneCall> {
  readonly protocol: Protocol
  /** Decodes the protocol's body; a BadRequest names the field at fault. */
  readonly translate: (raw: Json) => Effect.Effect<C, GatewayError>
  /** The protocol's refusal body. */
  readonly errorBody: ErrorShape
  /** A 202 instead of running (a shadow decision, an async run); null: run it. */
  readonly instead: (
    call: C,
    caller: CallerContext,
    lane: LaneActor,
    headers: Readonly<Record<string, string | undefined>>
  ) => Effect.Effect<Accepted | null, GatewayError, AcceptServices>
  /**
   * Writes the lane's answer (status 200) in the protocol. A stream calls `done` after its last
   * chunk and before `res.end()`, so the slot is free before the caller sees the end.
   */
  readonly respond: (res: ServerResponse, result: LaneResult, call: C, done: Effect.Effect<void>) => Effect.Effect<void>
}

/** What one request learned on its way in: its refusal, its answer and its interruption read it. */
interface Exchange<C> {
  /** The request's server span (null with tracing off); the lane's attempt spans are its children. */
  span: Tracer.Span | null
  caller: CallerContext | null
  call: C | null
  /** Past this, a refusal is the lane's, counted as a run by the lane. */
  reachedLane: boolean
}

/** Body → lane call → caller → span → 202 instead, or the lane's answer. */
const enter = <C extends LaneCall>(adapter: EdgeAdapter<C>, x: Exchange<C>, path: string, req: IncomingMessage, res: ServerResponse, gateway: Gateway) =>
  Effect.gen(function*() {
    const bytes = yield* readBody(req, gateway.config.server.maxBodyBytes, { res, bodies: gateway.bodies })
    const call = yield* adapter.translate(yield* parseJsonObject(bytes, gateway.config.server))
    x.call = call
    const headers = headerBag(req)
    const caller = resolveCallerContext(headers, call.body.model, gateway.laneRules)
    if (!("traceId" in caller)) return yield* Effect.fail(caller)
    x.caller = caller
    yield* RequestLog.note({ caller })
    x.span = yield* Tracing.startServerSpan("POST", path, caller)
    const lane = gateway.lanes.get(caller.lane)!
    const accepted = yield* adapter.instead(call, caller, lane, headers)
    if (accepted !== null) return accepted
    x.reachedLane = true
    const handled = lane.handle({ ...call, caller, protocol: adapter.protocol })
    return yield* (x.span === null ? handled : Effect.withParentSpan(handled, x.span))
  })

const refused = <C>(adapter: EdgeAdapter<any>, x: Exchange<C>, path: string, res: ServerResponse, gateway: Gateway, error: GatewayError) =>
  Effect.gen(function*() {
    // A refusal before the lane is not a run (the lane counts its own): count it here.
    if (!x.reachedLane) gateway.metrics.request(x.caller === null ? "none" : x.caller.lane, "none", error._tag)
    x.span ??= yield* Tracing.startServerSpan("POST", path, x.caller)
    yield* RequestLog.note({ error: error._tag })
    writeError(res, adapter.errorBody, error, x.caller)
    return yield* Tracing.endServerSpan(x.span, error.status, error)
  })

/** The request was interrupted (the caller went away, the drain cut it): the span ends with the abort. */
const left = <C>(x: Exchange<C>, cause: Cause.Cause<unknown>) =>
  x.span === null || !Cause.isInterruptedOnly(cause)
    ? Effect.void
    : Tracing.endSpan(x.span, { type: "ClientAborted", message: "the caller went away" })

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

/** One request on a lane, in the adapter's protocol. */
export const serve = <C extends LaneCall>(adapter: EdgeAdapter<C>, path: string, req: IncomingMessage, res: ServerResponse) => {
  const x: Exchange<C> = { span: null, caller: null, call: null, reachedLane: false }
  return requestScoped((done) =>
    Effect.flatMap(Gateway, (gateway) =>
      Effect.matchEffect(enter(adapter, x, path, req, res, gateway), {
        onFailure: (error) => Effect.zipRight(done, refused(adapter, x, path, res, gateway, error)),
        onSuccess: (result) =>
          result._tag === "Accepted"
            ? Effect.zipRight(done, Effect.zipRight(Effect.sync(() => writeAccepted(res, result)), Tracing.endServerSpan(x.span, 202, null)))
            : Effect.zipRight(
              // A unary answer frees what it held before it is written; a stream, after its last chunk.
              Effect.zipRight(result._tag === "Stream" ? Effect.void : done, adapter.respond(res, result, x.call!, done)),
              Tracing.endServerSpan(x.span, 200, null)
            )
      }))
  ).pipe(Effect.onError((cause) => left(x, cause)))
}

/** The status the caller got; nothing sent yet: 499 (it went away, or the drain cut it) or the 500 written on a defect. */
const statusOf = (res: ServerResponse) => (how: "done" | "failed" | "interrupted") =>
  res.headersSent || how === "done" ? res.statusCode : how === "interrupted" ? 499 : 500

/**
 * A node-level handler over a table of POST routes: answers the requests it has an adapter for and
 * returns true, or returns false so the next handler (in the end the platform router) takes the
 * request. Counts in-flight requests for the drain, answers 500 on a defect, and interrupts the
 * request's fiber (freeing its slot, journaling the abort) when the caller goes away.
 */
export const makeEdgeHandler = (routes: Readonly<Record<string, EdgeAdapter<any>>>) =>
  Effect.gen(function*() {
    const runtime = yield* Effect.runtime<Gateway | Drain | AcceptServices>()
    // Only the services a request needs: the request scope (Scope.extend) and every provide copy the
    // context's map, which on the server's runtime holds every service of the gateway.
    const context = Context.pick(Gateway, Drain, ...acceptServices)(runtime.context)
    const runFork = Runtime.runFork(Runtime.make({ context, fiberRefs: runtime.fiberRefs, runtimeFlags: runtime.runtimeFlags }))
    const drain = yield* Drain
    return (req: IncomingMessage, res: ServerResponse): boolean => {
      if (req.method !== "POST") return false
      const url = req.url ?? "/"
      const q = url.indexOf("?")
      const path = q < 0 ? url : url.slice(0, q)
      const adapter = routes[path]
      if (adapter === undefined) return false
      const refuse = Effect.sync(() => writeError(res, adapter.errorBody, new ShuttingDown(), null))
      const fiber = runFork(RequestLog.logged("POST", path, statusOf(res), drain.admit(refuse, serve(adapter, path, req, res))))
      drain.track(fiber)
      fiber.addObserver((exit) => ended(exit, adapter, req, res, runFork))
      // The caller went away: interrupt the run (its finalizers free the slot and journal the abort).
      res.on("close", () => {
        if (!res.writableEnded) fiber.unsafeInterruptAsFork(FiberId.none)
      })
      return true
    }
  })

/** After the request's fiber: a defect gets the protocol's 500 (or cuts the started answer short). */
const ended = (
  exit: Exit.Exit<unknown, unknown>,
  adapter: EdgeAdapter<any>,
  req: IncomingMessage,
  res: ServerResponse,
  runFork: <A, E>(effect: Effect.Effect<A, E>) => unknown
) => {
  if (Exit.isFailure(exit) && !Exit.isInterrupted(exit)) {
    runFork(Effect.logError(`unhandled error on ${req.method} ${req.url}`, exit.cause))
    if (!res.headersSent) {
      res.writeHead(500, { "content-type": "application/json; charset=utf-8" })
      res.end(JSON.stringify(adapter.errorBody(internalErrorMessage, 500)))
    } else if (!res.writableEnded) res.end()
  } else if (Exit.isInterrupted(exit) && !res.writableEnded) {
    res.destroy()
  }
}
