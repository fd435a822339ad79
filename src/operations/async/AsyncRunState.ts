/**
 * An async run as data (operations/async/AsyncRuns.ts runs them): its state folded from its journal
 * stream, the caller's view of a stored row beside that state, and what the reconcile does with a
 * row left open. Pure: no database, no journal, no clock.
 */
import type { CallerContext } from "../../domain/CallerContext.ts"
import { type DecodedEvent, decodeEvent, type EventOf } from "../../domain/Events.ts"
import type { StoredEvent } from "../../journal/Journal.ts"

export type AsyncStatus = "queued" | "running" | "succeeded" | "failed" | "cancelled"
export type AsyncOperation = "generate" | "chat"

export interface AttemptRecord {
  readonly attempt: number
  readonly host: string
  readonly tier: string
  readonly startedAt: string
  /** running: no outcome yet; interrupted: the gateway stopped during it. */
  readonly outcome: "running" | "succeeded" | "failed" | "interrupted"
  readonly kind: string | null
  readonly message: string | null
}

export interface AsyncRunState {
  readonly status: AsyncStatus
  readonly attempts: number
  readonly attemptLog: ReadonlyArray<AttemptRecord>
  readonly queuedAt: number | null
  readonly startedAt: number | null
  readonly finishedAt: number | null
  /** Times a worker picked the run up (more than one after a restart). */
  readonly pickups: number
  readonly error: { readonly status: number | null; readonly code: string | null; readonly message: string | null } | null
  /** Reservations of paid calls: settled, and open (reserved, neither settled nor released). */
  readonly paidSettled: ReadonlyArray<string>
  readonly paidOpen: ReadonlyArray<string>
}

const fieldsOf = (v: unknown): Readonly<Record<string, unknown>> =>
  typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {}
const strOf = (v: unknown): string | null => (typeof v === "string" ? v : null)
const numOf = (v: unknown): number | null => (typeof v === "number" && Number.isFinite(v) ? v : null)

export const isTerminal = (status: AsyncStatus) => status === "succeeded" || status === "failed" || status === "cancelled"

/** Attempts still "running" when the run was requeued, suspended or ended: the gateway stopped during them. */
const interruptRunning = (log: ReadonlyArray<AttemptRecord>) =>
  log.map((a) => (a.outcome === "running" ? { ...a, outcome: "interrupted" as const } : a))

/** A run just accepted (its RunStarted with `async: true`). */
const queued = (occurredAt: number): AsyncRunState => ({
  status: "queued", attempts: 0, attemptLog: [], queuedAt: occurredAt, startedAt: null, finishedAt: null,
  pickups: 0, error: null, paidSettled: [], paidOpen: []
})

const startAttempt = (s: AsyncRunState, e: EventOf<"AttemptStarted">, occurredAt: number): AsyncRunState => ({
  ...s,
  attempts: Math.max(s.attempts, e.attempt),
  attemptLog: [...interruptRunning(s.attemptLog), {
    attempt: e.attempt,
    host: e.host,
    tier: e.tier ?? "ollama",
    startedAt: new Date(occurredAt).toISOString(),
    outcome: "running",
    kind: null,
    message: null
  }]
})

const endAttempt = (s: AsyncRunState, e: EventOf<"AttemptFailed"> | EventOf<"AttemptSucceeded">): AsyncRunState => {
  // AttemptSucceeded carries no number: it settles the attempt in progress.
  const idx = e._tag === "AttemptFailed" ? s.attemptLog.findIndex((a) => a.attempt === e.attempt) : s.attemptLog.length - 1
  if (idx < 0) return s
  const log: Array<AttemptRecord> = [...s.attemptLog]
  log[idx] = {
    ...log[idx]!,
    outcome: e._tag === "AttemptSucceeded" ? "succeeded" : "failed",
    kind: e._tag === "AttemptFailed" ? e.kind : null,
    message: e._tag === "AttemptFailed" ? e.message : null
  }
  return { ...s, attemptLog: log }
}

/** One event of a run after its RunStarted (Emmett's `evolve`); events it does not follow leave it as it is. Pure. */
export const evolve = (s: AsyncRunState, e: DecodedEvent, occurredAt: number): AsyncRunState => {
  switch (e._tag) {
    case "RunDequeued":
      return { ...s, status: "running", startedAt: s.startedAt ?? occurredAt, pickups: s.pickups + 1 }
    case "RunRequeued":
    case "RunSuspended":
      return { ...s, status: "queued", attemptLog: interruptRunning(s.attemptLog) }
    case "AttemptStarted":
      return startAttempt(s, e, occurredAt)
    case "AttemptFailed":
    case "AttemptSucceeded":
      return endAttempt(s, e)
    case "BudgetReserved":
      return { ...s, paidOpen: [...s.paidOpen, e.reservationId] }
    case "BudgetSettled":
      return { ...s, paidOpen: s.paidOpen.filter((r) => r !== e.reservationId), paidSettled: [...s.paidSettled, e.reservationId] }
    case "BudgetReleased":
      return { ...s, paidOpen: s.paidOpen.filter((r) => r !== e.reservationId) }
    case "RunCompleted":
      return { ...s, status: "succeeded", finishedAt: occurredAt }
    case "RunFailed":
      return {
        ...s,
        status: e.error === "RunCancelled" ? "cancelled" : "failed",
        finishedAt: occurredAt,
        error: { status: e.status, code: e.error, message: e.message },
        attemptLog: interruptRunning(s.attemptLog)
      }
    default:
      return s
  }
}

/** The run's state from its journal stream; null when the stream is not an async run. Pure. */
export const fold = (events: ReadonlyArray<Pick<StoredEvent, "type" | "data" | "occurredAt">>): AsyncRunState | null => {
  let s = null as AsyncRunState | null
  for (const row of events) {
    const e = decodeEvent(row.type, row.data)
    if (s === null) {
      if (e._tag !== "RunStarted" || e.async !== true) return null
      s = queued(row.occurredAt)
      continue
    }
    // Nothing after the end changes the run (a late duplicate end, say).
    if (isTerminal(s.status)) break
    s = evolve(s, e, row.occurredAt)
  }
  return s
}

export const statusUrlOf = (runId: string) => `/awooop/runs/${runId}`

/** A row of `async_runs` (migrations/004): the request until the run ends, then the answer. */
export interface StoredRun {
  readonly run_id: string
  readonly lane: string
  readonly operation: string
  readonly request: Record<string, unknown> | null
  readonly caller: CallerContext
  readonly result: unknown
}

export interface AsyncRunView {
  readonly runId: string
  readonly lane: string
  readonly operation: string
  readonly status: AsyncStatus
  readonly attempts: number
  readonly attemptLog: ReadonlyArray<AttemptRecord>
  readonly traceId: string | null
  readonly projectId: string | null
  readonly queuedAt: string | null
  readonly startedAt: string | null
  readonly finishedAt: string | null
  readonly error: AsyncRunState["error"]
  /** The Ollama-shaped answer once succeeded. */
  readonly result: unknown
  readonly statusUrl: string
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString())

/** The caller's view of a run: its row (lane, caller, answer) and its state from the journal. */
export const viewOf = (
  runId: string,
  row: Pick<StoredRun, "lane" | "operation" | "caller" | "result"> & { readonly finished_at: Date | null },
  state: AsyncRunState
): AsyncRunView => {
  // The lane journals RunCompleted just before the worker stores the answer: until it is
  // stored, the run is still running for the caller (a "succeeded" comes with its result).
  const storing = state.status === "succeeded" && row.result === null && row.finished_at === null
  return {
    runId,
    lane: row.lane,
    operation: row.operation,
    status: storing ? "running" : state.status,
    attempts: state.attempts,
    attemptLog: state.attemptLog,
    traceId: row.caller.traceId ?? null,
    projectId: row.caller.projectId ?? null,
    queuedAt: iso(state.queuedAt),
    startedAt: iso(state.startedAt),
    finishedAt: storing ? null : iso(state.finishedAt),
    error: state.error,
    result: state.status === "succeeded" ? row.result ?? null : null,
    statusUrl: statusUrlOf(runId)
  }
}

/** The stored answer of a finished run: the last NDJSON line the lane returned. */
export const decodeResult = (bytes: Uint8Array): unknown => {
  const text = new TextDecoder().decode(bytes).trim()
  const last = text.split("\n").filter((l) => l.trim() !== "").at(-1) ?? ""
  try {
    return JSON.parse(last) as unknown
  } catch {
    return { raw: text }
  }
}

/** What the reconcile does with a row left open (by an earlier process or a failed write). */
export type Reconcile =
  /** Its RunStarted never committed: the caller never got a 202 for it; the row goes. */
  | { readonly _tag: "Forget" }
  /** The journal has its end: the row is finished. */
  | { readonly _tag: "Close" }
  /** Ended (or refused) here, its end not in Postgres yet: wait for the journal, never run it again. */
  | { readonly _tag: "Wait" }
  /** The answer was stored but its RunCompleted did not reach the journal before the stop. */
  | { readonly _tag: "Complete"; readonly completed: EventOf<"RunCompleted"> }
  /** It cannot run again (a paid call would repeat, its request is gone): it fails. */
  | { readonly _tag: "Fail"; readonly status: number; readonly code: string; readonly message: string; readonly startedAt: number }
  /** It runs again, its attempts numbered on. */
  | {
    readonly _tag: "Requeue"
    readonly request: Record<string, unknown>
    readonly attemptsSoFar: number
    readonly requeued: EventOf<"RunRequeued">
  }

/**
 * Decides a row left open from its journal state. A run whose stream shows a paid call that was
 * settled — or reserved and never released, so it may have been billed — is not run again.
 */
export const reconcile = (
  row: Pick<StoredRun, "request" | "result">,
  state: AsyncRunState | null,
  settledHere: boolean,
  now: number
): Reconcile => {
  if (state === null) return { _tag: "Forget" }
  if (isTerminal(state.status)) return { _tag: "Close" }
  if (settledHere) return { _tag: "Wait" }
  if (row.result !== null && row.result !== undefined) {
    const r = fieldsOf(row.result)
    return {
      _tag: "Complete",
      completed: {
        _tag: "RunCompleted",
        recovered: true,
        endpoint: state.attemptLog.at(-1)?.host ?? null,
        providerTier: state.attemptLog.at(-1)?.tier ?? null,
        inputTokens: numOf(r.prompt_eval_count),
        outputTokens: numOf(r.eval_count),
        doneReason: strOf(r.done_reason),
        durationMs: state.queuedAt === null ? null : now - state.queuedAt
      }
    }
  }
  if (state.paidSettled.length > 0 || state.paidOpen.length > 0) {
    const which = [...state.paidSettled.map((r) => `${r} (settled)`), ...state.paidOpen.map((r) => `${r} (reserved, may have been billed)`)]
    return {
      _tag: "Fail",
      status: 502,
      code: "PaidCallNotRepeated",
      message: `the gateway stopped after a paid call of this run (${which.join(", ")}); its answer was lost, and the call is not repeated so that it is not paid twice`,
      startedAt: state.queuedAt ?? now
    }
  }
  if (row.request === null) {
    return { _tag: "Fail", status: 500, code: "RequestLost", message: "the run's request is no longer stored", startedAt: state.queuedAt ?? now }
  }
  return {
    _tag: "Requeue",
    request: row.request,
    attemptsSoFar: state.attempts,
    requeued: {
      _tag: "RunRequeued",
      attemptsSoFar: state.attempts,
      was: state.status,
      reason: `the gateway restarted while the run was ${state.status}`
    }
  }
}
