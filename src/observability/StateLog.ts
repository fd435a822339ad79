/**
 * One log line per state change an operator acts on, from the facts journaled on a host's stream:
 * host down/up, breaker opened/half-opened/closed, maintenance opened/closed, keep-warm failures and
 * evictions. (The journal logs its own degraded/recovered transitions, journal/SpillMode.ts and SpillReplay.ts.) Routine facts —
 * residency changes, keep-warm loads and skips — are at debug.
 *
 * Each line carries `event` (the journal event's type) and `host`, plus the event's own fields that
 * say why; a keep-warm failure's message is the host's error text (no prompt: keep-warm loads send none).
 */
import { Effect, LogLevel } from "effect"
import type { HostEvent } from "../domain/Events.ts"

const iso = (v: number | null): string | null => (v === null ? null : new Date(v).toISOString())

interface Line {
  readonly level: LogLevel.LogLevel
  readonly message: string
  readonly fields: Readonly<Record<string, unknown>>
}

const lineOf = (host: string, d: HostEvent): Line | null => {
  switch (d._tag) {
    case "HostDown":
      return { level: LogLevel.Warning, message: `host ${host} down: ${d.error}`, fields: { error: d.error } }
    case "HostUp":
      return { level: LogLevel.Info, message: `host ${host} up`, fields: { latencyMs: d.latencyMs } }
    case "BreakerOpened":
      return {
        level: LogLevel.Warning,
        message: `host ${host} circuit breaker opened after ${d.consecutiveTimeouts} consecutive timeouts, until ${iso(d.until)}`,
        fields: { consecutiveTimeouts: d.consecutiveTimeouts, until: iso(d.until), reason: d.reason }
      }
    case "BreakerHalfOpened":
      return { level: LogLevel.Info, message: `host ${host} circuit breaker half-open: one probe request is let through`, fields: {} }
    case "BreakerClosed":
      return { level: LogLevel.Info, message: `host ${host} circuit breaker closed`, fields: {} }
    case "MaintenanceOpened":
      return {
        level: LogLevel.Info,
        message: `host ${host} maintenance opened until ${String(iso(d.until))}: ${d.reason}`,
        fields: { reason: d.reason, until: iso(d.until) }
      }
    case "MaintenanceClosed":
      return {
        level: LogLevel.Info,
        message: `host ${host} maintenance closed${d.expired ? " (expired)" : ""}: ${d.reason}`,
        fields: { reason: d.reason, expired: d.expired }
      }
    case "KeepWarmFailed":
      return {
        level: LogLevel.Warning,
        message: `keep-warm of ${d.model} on ${host} (lane ${d.lane}) failed: ${d.message}`,
        fields: { lane: d.lane, model: d.model, kind: d.kind, status: d.status, message: d.message }
      }
    case "ModelEvicted":
      return {
        level: LogLevel.Info,
        message: `${d.model} evicted from ${host} (lane ${d.lane}); keep-warm reloads it`,
        fields: { lane: d.lane, model: d.model, replacedBy: d.replacedBy }
      }
    case "ResidencyChanged":
      return { level: LogLevel.Debug, message: `host ${host}: ${d._tag}`, fields: { lane: null, model: null, reason: null } }
    case "KeepWarmLoaded":
    case "KeepWarmSkipped":
      return { level: LogLevel.Debug, message: `host ${host}: ${d._tag}`, fields: { lane: d.lane, model: d.model, reason: d.reason } }
    default:
      return null
  }
}

/** The log line of a fact journaled on `host`'s stream (nothing for facts that are not state changes). */
export const hostEvent = (host: string, event: HostEvent): Effect.Effect<void> => {
  const line = lineOf(host, event)
  return line === null
    ? Effect.void
    : Effect.logWithLevel(line.level, line.message).pipe(Effect.annotateLogs({ event: event._tag, host, ...line.fields }))
}
