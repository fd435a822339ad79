/**
 * One log line per state change an operator acts on, from the facts journaled on a host's stream:
 * host down/up, breaker opened/half-opened/closed, maintenance opened/closed, keep-warm failures and
 * evictions. (The journal logs its own degraded/recovered transitions, Journal.ts.) Routine facts —
 * residency changes, keep-warm loads and skips — are at debug.
 *
 * Each line carries `event` (the journal event's type) and `host`, plus the event's own fields that
 * say why; a keep-warm failure's message is the host's error text (no prompt: keep-warm loads send none).
 */
import { Effect, LogLevel } from "effect"

type Data = Readonly<Record<string, unknown>>

const iso = (v: unknown): unknown => (typeof v === "number" && Number.isFinite(v) ? new Date(v).toISOString() : v ?? null)

interface Line {
  readonly level: LogLevel.LogLevel
  readonly message: string
  readonly fields: Readonly<Record<string, unknown>>
}

const lineOf = (host: string, type: string, d: Data): Line | null => {
  switch (type) {
    case "HostDown":
      return { level: LogLevel.Warning, message: `host ${host} down: ${String(d.error ?? "unknown error")}`, fields: { error: d.error ?? null } }
    case "HostUp":
      return { level: LogLevel.Info, message: `host ${host} up`, fields: { latencyMs: d.latencyMs ?? null } }
    case "BreakerOpened":
      return {
        level: LogLevel.Warning,
        message: `host ${host} circuit breaker opened after ${String(d.consecutiveTimeouts)} consecutive timeouts, until ${String(iso(d.until))}`,
        fields: { consecutiveTimeouts: d.consecutiveTimeouts ?? null, until: iso(d.until), reason: d.reason ?? null }
      }
    case "BreakerHalfOpened":
      return { level: LogLevel.Info, message: `host ${host} circuit breaker half-open: one probe request is let through`, fields: {} }
    case "BreakerClosed":
      return { level: LogLevel.Info, message: `host ${host} circuit breaker closed`, fields: {} }
    case "MaintenanceOpened":
      return {
        level: LogLevel.Info,
        message: `host ${host} maintenance opened until ${String(iso(d.until))}: ${String(d.reason ?? "")}`,
        fields: { reason: d.reason ?? null, until: iso(d.until) }
      }
    case "MaintenanceClosed":
      return {
        level: LogLevel.Info,
        message: `host ${host} maintenance closed${d.expired === true ? " (expired)" : ""}: ${String(d.reason ?? "")}`,
        fields: { reason: d.reason ?? null, expired: d.expired === true }
      }
    case "KeepWarmFailed":
      return {
        level: LogLevel.Warning,
        message: `keep-warm of ${String(d.model)} on ${host} (lane ${String(d.lane)}) failed: ${String(d.message ?? d.kind ?? "")}`,
        fields: { lane: d.lane ?? null, model: d.model ?? null, kind: d.kind ?? null, status: d.status ?? null, message: d.message ?? null }
      }
    case "ModelEvicted":
      return {
        level: LogLevel.Info,
        message: `${String(d.model)} evicted from ${host} (lane ${String(d.lane)}); keep-warm reloads it`,
        fields: { lane: d.lane ?? null, model: d.model ?? null, replacedBy: d.replacedBy ?? null }
      }
    case "ResidencyChanged":
    case "KeepWarmLoaded":
    case "KeepWarmSkipped":
      return { level: LogLevel.Debug, message: `host ${host}: ${type}`, fields: { lane: d.lane ?? null, model: d.model ?? null, reason: d.reason ?? null } }
    default:
      return null
  }
}

/** The log line of a fact journaled on `host`'s stream (nothing for facts that are not state changes). */
export const hostEvent = (host: string, type: string, data: Data): Effect.Effect<void> => {
  const line = lineOf(host, type, data)
  return line === null
    ? Effect.void
    : Effect.logWithLevel(line.level, line.message).pipe(Effect.annotateLogs({ event: type, host, ...line.fields }))
}
