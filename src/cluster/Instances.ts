/**
 * Which gateway processes are alive, for orphan release in a cluster (journal/Orphans.ts): each
 * process beats for its journal instance in `gateway_instances` (migration 009); a run whose
 * instance has not beaten for twice the lock expiration is an orphan. The orphan-release singleton
 * checks every lock expiration, so a killed replica's runs end within about three of them.
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import { Effect, Schedule, type Scope } from "effect"
import type { Journal } from "../journal/Journal.ts"
import { closeOrphanedRuns } from "../journal/Orphans.ts"

export const heartbeat = (sql: SqlClient.SqlClient, instance: string, runner: string, everyMs: number): Effect.Effect<void, never, Scope.Scope> =>
  sql`INSERT INTO gateway_instances (instance, runner, beat_at) VALUES (${instance}, ${runner}, now())
      ON CONFLICT (instance) DO UPDATE SET beat_at = now()`.pipe(
    Effect.catchAll((error) => Effect.logWarning("cluster: instance heartbeat failed", error)),
    Effect.repeat(Schedule.spaced(everyMs)),
    Effect.forkScoped,
    Effect.asVoid
  )

const liveInstances = (sql: SqlClient.SqlClient, staleMs: number) =>
  sql<{ readonly instance: string }>`
    SELECT instance FROM gateway_instances WHERE beat_at > now() - make_interval(secs => ${staleMs / 1000})`.pipe(
    Effect.map((rows) => new Set(rows.map((r) => r.instance)))
  )

/** Closes the runs of dead instances every `lockExpirationMs` (the body of the orphan-release singleton). */
export const releaseOrphans = (journal: Journal, sql: SqlClient.SqlClient, lockExpirationMs: number) =>
  Effect.flatMap(liveInstances(sql, 2 * lockExpirationMs), (live) =>
    closeOrphanedRuns(journal, sql, (instance) => instance === journal.instance || (instance !== null && live.has(instance)))).pipe(
    Effect.tap((report) => report.closed > 0 ? Effect.logInfo(`cluster: ${report.closed} orphaned runs of dead replicas closed`) : Effect.void),
    Effect.catchAll((error) => Effect.logWarning("cluster: orphan release failed; trying again", error)),
    Effect.repeat(Schedule.spaced(lockExpirationMs)),
    Effect.asVoid
  )
