/**
 * host_state: one row per host stream — health, breaker, resident models, maintenance — as the
 * host actor journaled them (routing/Host.ts, routing/Breaker.ts). A pure fold like RunState: a
 * re-delivered event changes nothing, an event the catalogue does not hold only advances `lastPosition`.
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Effect } from "effect"
import { decoded, hostStreamPrefix, type ProjectionEvent } from "./Event.ts"
import { type Column, fromMillis, jsonText, toMillis } from "./Sql.ts"
import { loadStates, upsertStates } from "./StateTable.ts"

export interface HostState {
  readonly streamId: string
  readonly host: string
  readonly health: "up" | "down" | "unknown"
  readonly lastError: string | null
  readonly breaker: "closed" | "open" | "half-open"
  readonly breakerOpenedAt: number | null
  readonly breakerUntil: number | null
  readonly breakerReason: string | null
  readonly resident: ReadonlyArray<string> | null
  readonly maintenance: boolean
  readonly maintenanceUntil: number | null
  readonly maintenanceReason: string | null
  readonly lastPosition: number
  readonly lastEventAt: number | null
}

export const initial = (event: ProjectionEvent): HostState => ({
  streamId: event.streamId,
  host: event.streamId.startsWith(hostStreamPrefix) ? event.streamId.slice(hostStreamPrefix.length) : event.streamId,
  health: "unknown",
  lastError: null,
  breaker: "closed",
  breakerOpenedAt: null,
  breakerUntil: null,
  breakerReason: null,
  resident: null,
  maintenance: false,
  maintenanceUntil: null,
  maintenanceReason: null,
  lastPosition: -1,
  lastEventAt: null
})

/** Epoch ms of a date in years 1..9999 (what the journal itself accepts), else null. */
const time = (n: number | null): number | null =>
  n === null || n < -62_135_596_800_000 || n > 253_402_300_799_999 ? null : Math.round(n)

const step = (s: HostState, event: ProjectionEvent): HostState => {
  const e = decoded(event)
  switch (e._tag) {
    case "HostUp":
      return { ...s, health: "up", lastError: null }
    case "HostDown":
      return { ...s, health: "down", lastError: e.error }
    case "ResidencyChanged":
      return { ...s, resident: e.resident }
    case "BreakerOpened":
      return {
        ...s,
        breaker: "open",
        breakerOpenedAt: time(e.at) ?? event.occurredAt,
        breakerUntil: time(e.until),
        breakerReason: e.reason
      }
    case "BreakerHalfOpened":
      return { ...s, breaker: "half-open" }
    case "BreakerClosed":
      return { ...s, breaker: "closed", breakerOpenedAt: null, breakerUntil: null, breakerReason: null }
    case "MaintenanceOpened":
      return { ...s, maintenance: true, maintenanceUntil: time(e.until), maintenanceReason: e.reason }
    case "MaintenanceClosed":
      return { ...s, maintenance: false, maintenanceUntil: null, maintenanceReason: null }
    default:
      return s
  }
}

export const evolve = (state: HostState | null, event: ProjectionEvent): HostState => {
  if (state !== null && event.streamPosition <= state.lastPosition) return state
  const next = step(state ?? initial(event), event)
  return { ...next, lastPosition: event.streamPosition, lastEventAt: event.occurredAt }
}

// ---------------------------------------------------------------------------------------------
// SQL
// ---------------------------------------------------------------------------------------------

export const table = "host_state"

const ms = toMillis

export const selectList = [
  `stream_id AS "streamId"`, `host`, `health`, `last_error AS "lastError"`, `breaker`,
  `${ms("breaker_opened_at")} AS "breakerOpenedAt"`, `${ms("breaker_until")} AS "breakerUntil"`,
  `breaker_reason AS "breakerReason"`, `resident`, `maintenance`, `${ms("maintenance_until")} AS "maintenanceUntil"`,
  `maintenance_reason AS "maintenanceReason"`, `last_position AS "lastPosition"`, `${ms("last_event_at")} AS "lastEventAt"`
].join(", ")

export const load = (
  sql: SqlClient.SqlClient,
  schema: string,
  streamIds: ReadonlyArray<string>
): Effect.Effect<Map<string, HostState>, SqlError> => loadStates<HostState, HostState>(sql, schema, table, selectList, streamIds, (r) => r)

const columns: ReadonlyArray<Column<HostState>> = [
  { name: "stream_id", type: "text", value: (h) => h.streamId },
  { name: "host", type: "text", value: (h) => h.host },
  { name: "health", type: "text", value: (h) => h.health },
  { name: "last_error", type: "text", value: (h) => h.lastError },
  { name: "breaker", type: "text", value: (h) => h.breaker },
  { name: "breaker_opened_at", type: "float8", value: (h) => h.breakerOpenedAt, expr: fromMillis },
  { name: "breaker_until", type: "float8", value: (h) => h.breakerUntil, expr: fromMillis },
  { name: "breaker_reason", type: "text", value: (h) => h.breakerReason },
  { name: "resident", type: "jsonb", value: (h) => jsonText(h.resident) },
  { name: "maintenance", type: "boolean", value: (h) => h.maintenance },
  { name: "maintenance_until", type: "float8", value: (h) => h.maintenanceUntil, expr: fromMillis },
  { name: "maintenance_reason", type: "text", value: (h) => h.maintenanceReason },
  { name: "last_position", type: "integer", value: (h) => h.lastPosition },
  { name: "last_event_at", type: "float8", value: (h) => h.lastEventAt, expr: fromMillis }
]

export const upsert = (
  sql: SqlClient.SqlClient,
  schema: string,
  states: ReadonlyArray<HostState>
): Effect.Effect<void, SqlError> => upsertStates(sql, schema, table, columns, states)
