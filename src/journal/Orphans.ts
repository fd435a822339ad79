/**
 * Orphaned runs: run streams of a process that is gone (SIGKILL, a crash, a lost machine) and that
 * have no terminal event. Each gets its unsettled attempts `AttemptFailed` (kind `interrupted`) and
 * a `RunFailed` with `orphaned: true`, so every run stream ends (RunEnds.ts).
 *
 * Which processes are gone is the caller's to say (`isAlive`, by the `instance` id each RunStarted
 * records): with one gateway process per database, at start-up every instance but this one is
 * gone. A later multi-replica version passes the instances whose lease has not expired, and can run
 * this whenever a lease expires. Async runs are left alone: the async-run store resumes them.
 *
 * Runs before a budget release of theirs: Budget's start-up recovery journals `BudgetReleased` on
 * the run's stream first (the Gateway builds PaidRoute, and so the budget, before calling this).
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import { Clock, Effect } from "effect"
import type { Journal } from "./Journal.ts"
import { closingEvents, isTerminalRunEvent, type OpenRun } from "./RunEnds.ts"

export interface OrphanReport {
  readonly closed: number
  readonly streams: ReadonlyArray<string>
}

export const closeOrphanedRuns = (
  journal: Journal,
  sql: SqlClient.SqlClient,
  isAlive: (instance: string | null) => boolean
) =>
  Effect.gen(function*() {
    const candidates = yield* sql<{ readonly streamId: string; readonly instance: string | null }>`
      SELECT s.stream_id AS "streamId", s.data->>'instance' AS instance
      FROM step_journal s
      WHERE s.type = 'RunStarted' AND s.stream_id LIKE 'run-%' AND COALESCE(s.data->>'async', 'false') <> 'true'
        AND NOT EXISTS (
          SELECT 1 FROM step_journal t WHERE t.stream_id = s.stream_id AND t.type IN ('RunCompleted', 'RunFailed'))
      ORDER BY s.global_position`
    const closed: Array<string> = []
    for (const candidate of candidates) {
      if (isAlive(candidate.instance)) continue
      const events = yield* journal.readStream(candidate.streamId)
      if (events.some((e) => isTerminalRunEvent(e.type))) continue
      const started = events.find((e) => e.type === "RunStarted")!
      const run: OpenRun = {
        streamId: candidate.streamId,
        traceId: started.traceId,
        projectId: started.projectId,
        lane: started.lane,
        startedAt: started.occurredAt,
        next: events.reduce((max, e) => Math.max(max, e.streamPosition + 1), 0),
        attempts: new Set()
      }
      for (const e of events) {
        const attempt = (e.data as { attempt?: unknown } | null)?.attempt
        if (typeof attempt !== "number") continue
        if (e.type === "AttemptStarted") run.attempts.add(attempt)
        else if (e.type === "AttemptSucceeded" || e.type === "AttemptFailed") run.attempts.delete(attempt)
      }
      const now = yield* Clock.currentTimeMillis
      yield* journal.appendAll(closingEvents(run, now, {
        status: 500,
        error: "Orphaned",
        message: `the gateway process that ran it (${candidate.instance ?? "unknown instance"}) stopped before the run ended`,
        orphaned: true,
        instance: candidate.instance
      }))
      closed.push(candidate.streamId)
    }
    if (closed.length > 0) {
      yield* journal.flush
      yield* Effect.logWarning(`Journal: ${closed.length} run(s) left open by a stopped gateway process ended with RunFailed (orphaned)`)
    }
    return { closed: closed.length, streams: closed } satisfies OrphanReport
  })
