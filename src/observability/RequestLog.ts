/**
 * One log line per request: who called (project, caller), on which lane, which route, which host
 * or provider answered, the status, how long it took and why it fell back — never the prompt, the
 * answer or a key.
 *
 * The HTTP layer opens a `RequestFacts` for each request and makes it current (a FiberRef) while
 * the request runs; the route notes the caller once it is resolved, the run's observer
 * (RunObserver.ts) attaches the run (run id, endpoint, fallback reason, error), and when the request
 * ends — answered, refused or cut off — the line is written from what was noted. A run outside an
 * HTTP request (an async run's worker) writes its own line when it ends (`runLine`).
 *
 * Level: reads (GET/HEAD: health checks, scrapes, polls) at debug, everything else at info, 5xx
 * and cut-off requests at warning.
 */
import { Cause, Clock, Effect, Exit, FiberRef, LogLevel } from "effect"
import type { CallerContext } from "../domain/CallerContext.ts"
import { FieldLine } from "./Logging.ts"

/** What the run's observer knows about a run, read when the line is written. */
export interface RunFacts {
  readonly runId: string
  readonly lane: string
  readonly model: string
  readonly caller: CallerContext
  /** The host or provider whose answer reached the caller (or the last one tried). */
  readonly endpoint: string | null
  readonly tier: string
  /** "gcp-a timeout, gcp-b circuit-open" when the answer came after misses; null otherwise. */
  readonly fallbackReason: string | null
  /** The run's error tag when it failed. */
  readonly error: string | null
}

/** The authenticated caller's name ("anonymous" for a keyless caller, never the key); null in open mode. */
export const callerNameOf = (caller: CallerContext | null): string | null => caller?.caller ?? null

export class RequestFacts {
  caller: CallerContext | null = null
  run: RunFacts | null = null
  /** The refusal's error tag, for a request refused before it became a run. */
  error: string | null = null
  constructor(readonly method: string, readonly route: string, readonly startedNanos: bigint) {}
}

/** The request being served in this fiber (and the fibers it forks). */
export const currentRequest = FiberRef.unsafeMake<RequestFacts | null>(null)

/** Notes the resolved caller, or the refusal, on the current request (a no-op outside one). */
export const note = (facts: { readonly caller?: CallerContext | null; readonly error?: string }): Effect.Effect<void> =>
  Effect.map(FiberRef.get(currentRequest), (current) => {
    if (current === null) return
    if (facts.caller !== undefined && facts.caller !== null) current.caller = facts.caller
    if (facts.error !== undefined) current.error = facts.error
  })

const ms = (nanos: bigint): number => Math.round(Number(nanos) / 1_000) / 1_000

/** The fields of a line (what a test and a log shipper read). */
const fieldsOf = (run: RunFacts | null, caller: CallerContext | null, error: string | null): Record<string, unknown> => {
  const who = run?.caller ?? caller
  return {
    traceId: who?.traceId ?? null,
    runId: run?.runId ?? null,
    project: who?.projectId ?? null,
    caller: callerNameOf(who),
    lane: run?.lane ?? who?.lane ?? null,
    model: run?.model ?? null,
    endpoint: run?.endpoint ?? null,
    tier: run?.tier ?? null,
    fallbackReason: run?.fallbackReason ?? null,
    error: run?.error ?? error
  }
}

/**
 * Writes the line of `facts`' request: `status` is what the caller got (the status line already
 * sent, for a stream cut after it); `aborted` when the request's fiber was interrupted (the caller
 * went away, or the drain timeout cut it).
 */
export const write = (facts: RequestFacts, status: number, aborted: boolean): Effect.Effect<void> =>
  Effect.flatMap(Clock.currentTimeNanos, (now) => {
    const durationMs = ms(now - facts.startedNanos)
    const level = aborted || status >= 500
      ? LogLevel.Warning
      : facts.method === "GET" || facts.method === "HEAD" ? LogLevel.Debug : LogLevel.Info
    const fields = {
      event: "Request",
      method: facts.method,
      route: facts.route,
      status,
      durationMs,
      ...(aborted ? { aborted: true } : {}),
      ...fieldsOf(facts.run, facts.caller, facts.error)
    }
    return Effect.logWithLevel(level, new FieldLine(`${facts.method} ${facts.route} ${status}${aborted ? " (cut off)" : ""} in ${durationMs} ms`, fields))
  })

/** Runs `effect` as one request: its facts are current meanwhile, and its line is written when it ends. */
export const logged = <A, E, R>(
  method: string,
  route: string,
  statusOf: (exit: "done" | "failed" | "interrupted") => number,
  effect: Effect.Effect<A, E, R>
): Effect.Effect<A, E, R> =>
  Effect.flatMap(Clock.currentTimeNanos, (started) => {
    const facts = new RequestFacts(method, route, started)
    return effect.pipe(
      Effect.locally(currentRequest, facts),
      Effect.onExit((exit) => {
        const how = Exit.isSuccess(exit) ? "done" : Cause.isInterruptedOnly(exit.cause) ? "interrupted" : "failed"
        return write(facts, statusOf(how), how === "interrupted")
      })
    )
  })

/** The line of a run that ran outside an HTTP request (an async run), when it ends. */
export const runLine = (run: RunFacts, status: number, durationMs: number | null): Effect.Effect<void> =>
  Effect.logWithLevel(
    status >= 500 ? LogLevel.Warning : LogLevel.Info,
    new FieldLine(
      `run ${run.runId} on lane ${run.lane} ${run.error === null ? "completed" : `failed (${run.error})`}`,
      { event: "Run", status, durationMs, ...fieldsOf(run, null, null) }
    )
  )
