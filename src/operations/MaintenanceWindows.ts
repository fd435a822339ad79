/**
 * Maintenance windows in Postgres (migration 009, table `host_maintenance`): they survive a restart
 * and every replica sees them. A replica stores the window the operator opened (and journals it,
 * routing/Host.ts); the others take it on at their next poll, without journaling. At `until` every
 * replica closes it, and the one whose delete removed the row journals MaintenanceClosed.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect } from "effect"
import type { HostActor, StoredWindow, WindowStore } from "../routing/Host.ts"
import * as OperatorState from "./OperatorState.ts"

interface WindowRow {
  readonly host: string
  readonly windowId: string
  readonly reason: string
  readonly until: string | null
}

const stored = (row: WindowRow): StoredWindow => ({
  id: Number(row.windowId),
  reason: row.reason,
  until: row.until === null ? null : Number(row.until)
})

const orDie = (what: string) => Effect.orDieWith((error: unknown) => new Error(`maintenance window not ${what}: ${String(error)}`))

export const makeStore = (sql: SqlClient.SqlClient): WindowStore => ({
  open: (host, reason, until) =>
    sql<{ readonly windowId: string }>`
      INSERT INTO host_maintenance (host, window_id, reason, until, opened_at)
      VALUES (${host}, nextval('maintenance_window_id'), ${reason}, ${until === null ? null : new Date(until).toISOString()}::timestamptz, now())
      ON CONFLICT (host) DO UPDATE SET window_id = excluded.window_id, reason = excluded.reason, until = excluded.until, opened_at = now()
      RETURNING window_id::text AS "windowId"`.pipe(
      Effect.map((rows) => Number(rows[0]!.windowId)),
      orDie("stored")
    ),
  close: (host, id) =>
    (id === null
      ? sql`DELETE FROM host_maintenance WHERE host = ${host} RETURNING host`
      : sql`DELETE FROM host_maintenance WHERE host = ${host} AND window_id = ${id} RETURNING host`).pipe(
      Effect.map((rows) => rows.length > 0),
      orDie("closed")
    )
})

/** Every stored window, by host. */
export const load = (sql: SqlClient.SqlClient) =>
  sql<WindowRow>`
    SELECT host, window_id::text AS "windowId", reason, (extract(epoch FROM until) * 1000)::float8::text AS until
    FROM host_maintenance`.pipe(Effect.map((rows) => new Map(rows.map((row) => [row.host, stored(row)]))))

/** Each host takes on what is stored for it (nothing stored: no window). */
export const adoptAll = (sql: SqlClient.SqlClient, hosts: ReadonlyMap<string, HostActor>) =>
  Effect.flatMap(load(sql), (windows) =>
    Effect.forEach(hosts.values(), (host) => host.adoptMaintenance(windows.get(host.name) ?? null), { discard: true }))

/** Loads the stored windows before the gateway serves, then follows other replicas' (OperatorState.ts). */
export const follow = (sql: SqlClient.SqlClient, hosts: ReadonlyMap<string, HostActor>, intervalMs: number | null) =>
  OperatorState.follow("maintenance windows", adoptAll(sql, hosts), intervalMs)
