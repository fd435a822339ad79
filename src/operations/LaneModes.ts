/**
 * Lane modes the operator set, in Postgres (migration 010, table `lane_modes`): they survive a
 * restart and every replica sees them. The replica that took the operator's call stores the mode
 * and journals it (routing/LaneMode.ts); the others take it on at their next poll, without
 * journaling (OperatorState.ts: loaded at start; polled every second in a cluster).
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Clock, Effect } from "effect"
import type { LaneActor } from "../routing/Lane.ts"
import { type Mode, type ModeStore, ModeStoreUnavailable, type StoredMode } from "../routing/LaneMode.ts"
import * as OperatorState from "./OperatorState.ts"

type SetResult = Effect.Effect.Success<ReturnType<ModeStore["set"]>>

interface ModeRow {
  readonly lane: string
  readonly mode: Mode
  readonly reason: string
  readonly by: string
  readonly changedAt: string
}

const stored = (row: ModeRow): StoredMode => ({ mode: row.mode, reason: row.reason, by: row.by, changedAt: Number(row.changedAt) })

const unavailable = (what: string) =>
  Effect.mapError((error: SqlError) => new ModeStoreUnavailable({ message: `the lane mode was not ${what}: Postgres did not answer (${error.message})` }))

export const makeStore = (sql: SqlClient.SqlClient): ModeStore => {
  const read = (lane: string) =>
    sql<ModeRow>`
      SELECT lane, mode, reason, changed_by AS "by", (extract(epoch FROM changed_at) * 1000)::float8::text AS "changedAt"
      FROM lane_modes WHERE lane = ${lane}`
  return {
    // The row is changed only when its mode does: setting the mode a lane is pinned to already keeps
    // the pin's reason and time, and is not a change (nothing journaled).
    set: (lane, mode, reason, by) =>
      sql<ModeRow & { readonly previous: Mode | null }>`
        WITH old AS (SELECT mode FROM lane_modes WHERE lane = ${lane})
        INSERT INTO lane_modes (lane, mode, reason, changed_by, changed_at) VALUES (${lane}, ${mode}, ${reason}, ${by}, now())
        ON CONFLICT (lane) DO UPDATE SET mode = excluded.mode, reason = excluded.reason, changed_by = excluded.changed_by, changed_at = excluded.changed_at
          WHERE lane_modes.mode <> excluded.mode
        RETURNING lane, mode, reason, changed_by AS "by", (extract(epoch FROM changed_at) * 1000)::float8::text AS "changedAt",
          (SELECT mode FROM old) AS previous`.pipe(
        Effect.flatMap((rows): Effect.Effect<SetResult, SqlError> =>
          rows.length > 0
            ? Effect.succeed({ changed: true, stored: stored(rows[0]!), previous: rows[0]!.previous })
            : Effect.map(read(lane), (now) => ({ changed: false, stored: now.length > 0 ? stored(now[0]!) : null, previous: mode }))),
        unavailable("stored")
      ),
    clear: (lane) =>
      sql<ModeRow>`
        DELETE FROM lane_modes WHERE lane = ${lane}
        RETURNING lane, mode, reason, changed_by AS "by", (extract(epoch FROM changed_at) * 1000)::float8::text AS "changedAt"`.pipe(
        Effect.map((rows) => rows.length > 0 ? stored(rows[0]!) : null),
        unavailable("removed")
      )
  }
}

/** Every stored mode, by lane. */
export const load = (sql: SqlClient.SqlClient) =>
  sql<ModeRow>`
    SELECT lane, mode, reason, changed_by AS "by", (extract(epoch FROM changed_at) * 1000)::float8::text AS "changedAt"
    FROM lane_modes`.pipe(Effect.map((rows) => new Map(rows.map((row) => [row.lane, stored(row)]))))

/** Each lane takes on what is stored for it (nothing stored: the config's mode). A row of a lane no longer configured is ignored. */
export const adoptAll = (sql: SqlClient.SqlClient, lanes: ReadonlyMap<string, LaneActor>) =>
  Effect.gen(function*() {
    const readAt = yield* Clock.currentTimeMillis
    const modes = yield* load(sql)
    yield* Effect.forEach(lanes.values(), (lane) => lane.mode.adopt(modes.get(lane.name) ?? null, readAt), { discard: true })
  })

/** Loads the stored modes before the gateway serves, then follows other replicas' (OperatorState.ts). */
export const follow = (sql: SqlClient.SqlClient, lanes: ReadonlyMap<string, LaneActor>, intervalMs: number | null) =>
  OperatorState.follow("lane modes", adoptAll(sql, lanes), intervalMs)
