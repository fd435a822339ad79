/**
 * The run invariant: every run stream that has `RunStarted` ends in exactly one terminal event
 * (`RunCompleted` or `RunFailed`; a cancel is a `RunFailed` with error `RunCancelled`).
 *
 * Kept by three layers, each for what the one before cannot see:
 *   - the lane (routing/Lane.ts) ends its run on every exit — an error, a defect, an interruption
 *     (`endRun` in StreamWriter.ts, which also never writes a second terminal event);
 *   - the journal, when it closes, ends every synchronous run still open (`OpenRuns` below);
 *   - at start-up, every run a dead process left open is ended `orphaned: true` (Orphans.ts).
 * `checkRunEnds` finds run streams that break it (the tests and `npm run journal -- verify`).
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Effect } from "effect"
import type { EventOf } from "../domain/Events.ts"
import type { JournalEvent } from "./JournalEvent.ts"

export const isTerminalRunEvent = (type: string): boolean => type === "RunCompleted" || type === "RunFailed"

/** SQL list of the terminal types (for `type IN (...)`). */
const TERMINAL_SQL = "('RunCompleted', 'RunFailed')"

const fieldOf = (data: unknown, key: string): unknown =>
  typeof data === "object" && data !== null ? (data as Record<string, unknown>)[key] : undefined

/** An open run as the journal saw it go by: enough to end it. */
export interface OpenRun {
  readonly streamId: string
  readonly traceId: string | null
  readonly projectId: string | null
  readonly lane: string | null
  readonly startedAt: number
  /** The next stream position. */
  next: number
  /** Attempts started and not settled. */
  readonly attempts: Set<number>
}

/**
 * The synchronous runs whose `RunStarted` this journal took and whose end it has not seen yet.
 * Async runs are left out: a stopped gateway suspends them and the next one resumes them.
 */
export class OpenRuns {
  private readonly open = new Map<string, OpenRun>()

  note(event: {
    readonly streamId: string
    readonly streamPosition: number
    readonly type: string
    readonly traceId: string | null
    readonly projectId: string | null
    readonly lane: string | null
    readonly data: unknown
    readonly occurredAt: number
  }): void {
    if (event.type === "RunStarted") {
      if (fieldOf(event.data, "async") === true || !event.streamId.startsWith("run-")) return
      this.open.set(event.streamId, {
        streamId: event.streamId,
        traceId: event.traceId,
        projectId: event.projectId,
        lane: event.lane,
        startedAt: event.occurredAt,
        next: event.streamPosition + 1,
        attempts: new Set()
      })
      return
    }
    const run = this.open.get(event.streamId)
    if (run === undefined) return
    if (isTerminalRunEvent(event.type)) {
      this.open.delete(event.streamId)
      return
    }
    run.next = Math.max(run.next, event.streamPosition + 1)
    const attempt = fieldOf(event.data, "attempt")
    if (typeof attempt !== "number") return
    if (event.type === "AttemptStarted") run.attempts.add(attempt)
    else if (event.type === "AttemptSucceeded" || event.type === "AttemptFailed") run.attempts.delete(attempt)
  }

  get size(): number {
    return this.open.size
  }

  /** Takes them all (the journal is closing). */
  drain(): Array<OpenRun> {
    const all = [...this.open.values()]
    this.open.clear()
    return all
  }
}

/** What ends a run from outside it: RunFailed's fields but its duration. */
export type ClosingFields = Pick<EventOf<"RunFailed">, "status" | "error" | "message" | "orphaned" | "instance" | "shutdown">

/** The events that end `run` (its unsettled attempts, then RunFailed with `fields`), as the catalogue has them. */
export const closingEvents = (run: OpenRun, now: number, fields: ClosingFields): Array<JournalEvent> => {
  const base = { streamId: run.streamId, traceId: run.traceId, projectId: run.projectId, lane: run.lane, occurredAt: now }
  let position = run.next
  const events: Array<JournalEvent> = []
  const why = { ...(fields.orphaned !== undefined ? { orphaned: fields.orphaned } : {}), ...(fields.shutdown !== undefined ? { shutdown: fields.shutdown } : {}) }
  for (const attempt of [...run.attempts].sort((a, b) => a - b)) {
    const { _tag, ...data }: EventOf<"AttemptFailed"> = { _tag: "AttemptFailed", attempt, kind: "interrupted", message: fields.message, ...why }
    events.push({ ...base, streamPosition: position++, type: _tag, data })
  }
  const { _tag, ...data }: EventOf<"RunFailed"> = { _tag: "RunFailed", ...fields, durationMs: Math.max(0, now - run.startedAt) }
  events.push({ ...base, streamPosition: position, type: _tag, data })
  return events
}

// ---------------------------------------------------------------------------------------------
// The check

export interface RunEndViolation {
  readonly streamId: string
  readonly traceId: string | null
  readonly lane: string | null
  /** Terminal events in the stream: 0 (open) or more than 1. */
  readonly terminals: number
  readonly lastType: string
  readonly async: boolean
}

export interface RunEndReport {
  /** Run streams with `RunStarted` (journal and archive). */
  readonly runs: number
  /** Streams without a terminal event. */
  readonly open: number
  /** Streams with more than one. */
  readonly multiple: number
  /** Up to `limit` of them, oldest first. */
  readonly violations: ReadonlyArray<RunEndViolation>
}

/**
 * Run streams that do not end in exactly one terminal event, over `step_journal` and its archive.
 * A run still in flight (or an async run waiting for a worker) is open too: read it on an idle
 * journal, or look at `lastType` and `async`.
 */
export const checkRunEnds = (
  sql: SqlClient.SqlClient,
  options: { readonly limit?: number } = {}
): Effect.Effect<RunEndReport, SqlError> =>
  Effect.gen(function*() {
    const streams = `
      WITH e AS (
        SELECT stream_id, stream_position, type, trace_id, lane, data FROM step_journal WHERE stream_id LIKE 'run-%'
        UNION ALL
        SELECT stream_id, stream_position, type, trace_id, lane, data FROM step_journal_archive WHERE stream_id LIKE 'run-%'
      )
      SELECT stream_id,
        count(*) FILTER (WHERE type IN ${TERMINAL_SQL})::int AS terminals,
        (array_agg(type ORDER BY stream_position DESC))[1] AS last_type,
        max(trace_id) AS trace_id, max(lane) AS lane,
        bool_or(type = 'RunStarted' AND data->>'async' = 'true') AS async
      FROM e GROUP BY stream_id HAVING bool_or(type = 'RunStarted')`
    const [counts] = yield* sql.unsafe<{ readonly runs: number; readonly open: number; readonly multiple: number }>(`
      SELECT count(*)::int AS runs, count(*) FILTER (WHERE terminals = 0)::int AS open,
        count(*) FILTER (WHERE terminals > 1)::int AS multiple
      FROM (${streams}) s`)
    const violations = yield* sql.unsafe<RunEndViolation>(`
      SELECT stream_id AS "streamId", trace_id AS "traceId", lane, terminals, last_type AS "lastType", async
      FROM (${streams}) s WHERE terminals <> 1 ORDER BY stream_id LIMIT ${Math.max(0, Math.floor(options.limit ?? 50))}`)
    return { runs: counts?.runs ?? 0, open: counts?.open ?? 0, multiple: counts?.multiple ?? 0, violations }
  })
