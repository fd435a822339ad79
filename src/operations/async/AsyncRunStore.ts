/**
 * The `async_runs` table (migrations/004): a run's request until it ends (prompts stay out of the
 * journal) and its answer; `finished_at IS NULL` lists what a restarted gateway resumes. Statements
 * are bounded, and their outcome is noted for the health view (a black-holed database must not hold
 * a caller, and an async lane reports a store that fails).
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import { Data, Effect } from "effect"
import type { CallerContext } from "../../domain/CallerContext.ts"
import type { StoredRun } from "./AsyncRunState.ts"

/** One statement on async_runs; longer counts as failed. */
const STORE_TIMEOUT_MS = 5_000
class StoreTimeout extends Data.TaggedError("StoreTimeout")<{ readonly ms: number }> {
  override get message() { return `the run store did not answer within ${this.ms} ms` }
}

/** A `\u0000` or lone-surrogate escape (PostgreSQL's jsonb refuses both): stored as U+FFFD, as the journal does. */
const badJsonEscape = /(?<!\\)((?:\\\\)*)\\u(?:0000|d[89a-f][0-9a-f]{2})/gi
export const toJsonb = (value: unknown): string => {
  const json = JSON.stringify(value) ?? "null"
  return json.includes("\\u") ? json.replace(badJsonEscape, "$1\\ufffd") : json
}

export type AsyncRunStore = ReturnType<typeof makeAsyncRunStore>

/**
 * In a cluster: this process's runs are leased to it (`owner`, `lease_until`, migration 009) and
 * renewed while it lives; `open` takes only runs nobody holds, so no run runs on two replicas.
 */
export interface RunLease {
  readonly owner: string
  readonly ms: number
}

export const makeAsyncRunStore = (sql: SqlClient.SqlClient, lease?: RunLease) => {
  /** The last statement on async_runs that failed, until one succeeds. */
  let lastError: string | null = null

  /** A statement on async_runs: bounded, off the caller's path if it hangs, its outcome noted. */
  const bounded = <A, E>(statement: Effect.Effect<A, E>) =>
    statement.pipe(
      Effect.disconnect,
      Effect.timeoutFail({ duration: STORE_TIMEOUT_MS, onTimeout: () => new StoreTimeout({ ms: STORE_TIMEOUT_MS }) }),
      Effect.tapBoth({
        onFailure: (e) => Effect.sync(() => {
          lastError = e instanceof Error ? e.message : String(e)
        }),
        onSuccess: () => Effect.sync(() => {
          lastError = null
        })
      })
    )

  return {
    /** Why the last statement failed (null: the last one succeeded). */
    lastError: () => lastError,
    insert: (run: {
      readonly runId: string
      readonly lane: string
      readonly operation: string
      readonly body: unknown
      readonly caller: CallerContext
    }) =>
      bounded(sql`INSERT INTO async_runs (run_id, lane, operation, request, caller, owner, lease_until)
          VALUES (${run.runId}, ${run.lane}, ${run.operation}, ${toJsonb(run.body)}::jsonb, ${toJsonb(run.caller)}::jsonb,
            ${lease?.owner ?? null}, now() + make_interval(secs => ${(lease?.ms ?? 0) / 1000}))`),
    /** A refused submission's row. */
    remove: (runId: string) => bounded(sql`DELETE FROM async_runs WHERE run_id = ${runId}`),
    storeResult: (runId: string, result: unknown) =>
      bounded(sql`UPDATE async_runs SET result = ${toJsonb(result)}::jsonb WHERE run_id = ${runId}`),
    /** The run ended (the journal has its end): its request goes. */
    finish: (runId: string) => bounded(sql`UPDATE async_runs SET request = NULL, finished_at = now() WHERE run_id = ${runId}`),
    /** The rows left open, oldest first. This read, every 5 s, is also what tells the health view the store is back. */
    open: Effect.suspend(() =>
      lease === undefined
        ? bounded(sql<StoredRun>`
          SELECT run_id, lane, operation, request, caller, result FROM async_runs
          WHERE finished_at IS NULL ORDER BY created_at`)
        : bounded(sql<StoredRun & { readonly created_at: Date }>`
          UPDATE async_runs SET owner = ${lease.owner}, lease_until = now() + make_interval(secs => ${lease.ms / 1000})
          WHERE run_id IN (
            SELECT run_id FROM async_runs
            WHERE finished_at IS NULL AND (owner IS NULL OR owner = ${lease.owner} OR lease_until IS NULL OR lease_until < now())
            FOR UPDATE SKIP LOCKED)
          RETURNING run_id, lane, operation, request, caller, result, created_at`).pipe(
          Effect.map((rows) => [...rows].sort((a, b) => a.created_at.getTime() - b.created_at.getTime()))
        )
    ),
    /** Extends this process's leases (cluster only). */
    renew: lease === undefined
      ? Effect.void
      : sql`UPDATE async_runs SET lease_until = now() + make_interval(secs => ${lease.ms / 1000})
            WHERE owner = ${lease.owner} AND finished_at IS NULL`.pipe(Effect.asVoid),
    /** One run's row without its request, for its view (not bounded, not noted). */
    read: (runId: string) =>
      Effect.map(
        sql<StoredRun & { readonly created_at: Date; readonly finished_at: Date | null }>`
          SELECT run_id, lane, operation, NULL::jsonb AS request, caller, result, created_at, finished_at
          FROM async_runs WHERE run_id = ${runId}`,
        (rows) => rows[0] ?? null
      ),
    /** A row whose RunStarted never committed, found by the reconcile (not bounded, not noted). */
    forget: (runId: string) => sql`DELETE FROM async_runs WHERE run_id = ${runId}`
  }
}
