/**
 * The caller's stream of an Ollama answer: the head the upstream already sent, then the rest as it
 * arrives. A failure after the first chunk cannot fail over (the caller has tokens); it ends with an
 * {"error"} line, never a fake done, and the journal says so.
 *
 * The relay belongs to the request's scope (which also holds the slot and the upstream body):
 * closing it journals the abort when the answer had not ended. The edge closes the request
 * scope when the response is over or the caller left; an async run when the run ends.
 */
import { Clock, Effect, Exit, FiberRef, Scope } from "effect"
import type { Usage } from "../domain/OllamaApi.ts"
import type { StreamWriter } from "../journal/StreamWriter.ts"
import { endOf } from "../run/Terminal.ts"
import { encodeLine, joinLines } from "../upstream/Ndjson.ts"
import type { OpenStream, UpstreamFailure } from "../upstream/OllamaUpstream.ts"
import { abortReason } from "./AbortReason.ts"
import type { ChunkSource } from "./ChunkSource.ts"

export interface RelayContext {
  readonly lane: string
  readonly run: StreamWriter
  readonly host: string
  readonly attempt: number
  readonly startedAt: number
  readonly attemptStartedAt: number
  /** The AttemptSucceeded and RunCompleted of an answer that ended (the lane's `complete`). */
  readonly complete: (usage: Usage | null) => Effect.Effect<void>
}

/** Where the answer is: its head not yet sent, the rest streaming, or over (completed, failed, aborted). */
type Phase = "head" | "rest" | "over"

export const relay = (ctx: RelayContext, open: OpenStream, scope: Scope.Scope): Effect.Effect<ChunkSource> => {
  let phase: Phase = "head"
  // The answer's last facts are journaled whole, even if the caller goes away meanwhile.
  const failed = (failure: UpstreamFailure) =>
    Effect.uninterruptible(Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      yield* ctx.run.append({ _tag: "AttemptFailed", attempt: ctx.attempt, host: ctx.host, kind: failure.kind, status: failure.status, message: failure.message, durationMs: now - ctx.attemptStartedAt, afterFirstChunk: true })
      yield* ctx.run.append({ _tag: "RunFailed", status: 502, error: "StreamBroken", message: `host ${ctx.host}: ${failure.message}`, durationMs: now - ctx.startedAt })
      return encodeLine({ error: `lane ${ctx.lane}: host ${ctx.host} failed mid-stream: ${failure.message}` })
    }))
  const pulled = Effect.matchEffect(open.pull, {
    onFailure: (failure) => {
      phase = "over"
      return failed(failure)
    },
    onSuccess: (chunk): Effect.Effect<Uint8Array | null> => {
      if (chunk !== null) return Effect.succeed(chunk)
      phase = "over"
      return Effect.as(Effect.uninterruptible(ctx.complete(open.usage())), null)
    }
  })
  const next: Effect.Effect<Uint8Array | null> = Effect.suspend(() => {
    if (phase === "rest") return pulled
    if (phase === "over") return Effect.succeed(null)
    phase = "rest"
    return Effect.succeed(joinLines(open.head))
  })
  // An answer that already ended (completed, or its error line sent) was not cut short.
  const close = (exit: Exit.Exit<unknown, unknown>) =>
    Effect.gen(function*() {
      if (phase === "over") return
      phase = "over"
      const now = yield* Clock.currentTimeMillis
      const why = Exit.isFailure(exit) && !Exit.isInterrupted(exit) ? endOf(exit as Exit.Exit<unknown, never>) : yield* FiberRef.get(abortReason)
      yield* ctx.run.append({ _tag: "RunFailed", status: why.status, error: why.error, message: why.message, durationMs: now - ctx.startedAt })
    })
  return Effect.as(Scope.addFinalizerExit(scope, close), { next })
}
