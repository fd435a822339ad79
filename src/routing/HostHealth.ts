/**
 * A host's health and residency as its poller sees them: /api/tags (installed models), /api/ps
 * (resident models) and /api/version, asked together every poll interval. The state is a plain value
 * replaced in single synchronous steps, because plan() reads it on every request (Host.view).
 * Changes are journaled on the host's stream and published to keep-warm.
 */
import { Clock, Effect, PubSub } from "effect"
import type { HostEvent } from "../domain/Events.ts"
import { type LagReader, stalledByGateway } from "../observability/EventLoopLag.ts"
import type { OllamaUpstream } from "../upstream/OllamaUpstream.ts"
import type { InstalledModel } from "./Plan.ts"

export interface ResidentModel {
  readonly name: string
  readonly expiresAt: string | null
  readonly sizeVram: number | null
}

export interface HostHealth {
  readonly status: "up" | "down" | "unknown"
  readonly lastCheckedAt: number | null
  readonly lastLatencyMs: number | null
  readonly lastError: string | null
  readonly installed: ReadonlyArray<InstalledModel> | null
  readonly resident: ReadonlyArray<ResidentModel> | null
  readonly version: string | null
}

/** What a poll changed: the host's status and/or its resident models (keep-warm listens to these). */
export interface HostChange {
  readonly status: "up" | "down"
  readonly resident: ReadonlyArray<string>
  readonly loaded: ReadonlyArray<string>
  readonly evicted: ReadonlyArray<string>
}

export interface HealthDeps {
  readonly upstream: OllamaUpstream
  readonly pollIntervalMs: number
  readonly probeTimeoutMs: number
  /** The gateway's own event-loop lag (observability/EventLoopLag.ts): a probe it timed out says nothing of the host. */
  readonly lag?: LagReader
}

const asString = (v: unknown): string | null => (typeof v === "string" ? v : null)

/** Each entry of an /api/tags or /api/ps answer's `models` that has a name, read by `read`. */
const modelsOf = <A>(json: Record<string, unknown>, read: (name: string, rec: Record<string, unknown>) => A): Array<A> =>
  (Array.isArray(json.models) ? json.models : []).flatMap((m: unknown) => {
    if (typeof m !== "object" || m === null) return []
    const rec = m as Record<string, unknown>
    const name = asString(rec.name) ?? asString(rec.model)
    return name === null ? [] : [read(name, rec)]
  })

const readInstalled = (json: Record<string, unknown>): Array<InstalledModel> =>
  modelsOf(json, (name, rec) => {
    const details = (typeof rec.details === "object" && rec.details !== null ? rec.details : {}) as Record<string, unknown>
    return { name, parameterSize: asString(details.parameter_size) }
  })

const readResident = (json: Record<string, unknown>): Array<ResidentModel> =>
  modelsOf(json, (name, rec) => ({ name, expiresAt: asString(rec.expires_at), sizeVram: typeof rec.size_vram === "number" ? rec.size_vram : null }))

/** Resident models that came and went between two polls (null: not known before). */
const residencyChange = (before: ReadonlyArray<ResidentModel> | null, after: ReadonlyArray<ResidentModel>) => {
  const was = new Set((before ?? []).map((m) => m.name))
  const is = new Set(after.map((m) => m.name))
  const loaded = [...is].filter((m) => !was.has(m))
  const evicted = [...was].filter((m) => !is.has(m))
  return before === null || loaded.length > 0 || evicted.length > 0 ? { resident: [...is], loaded, evicted } : null
}

// One slow answer on a loaded machine is not an outage: a /api/tags probe that times out or fails
// is asked once more at once, and only a second failure marks the host down (a refused
// connection — nothing is listening — marks it down at once). Each probe is capped at 2/5 of the
// interval, so a host that stops answering (even one that accepts connections and then says
// nothing) is down within two intervals.
const probeTimeoutOf = (deps: HealthDeps) => Math.max(1, Math.min(deps.probeTimeoutMs, Math.floor(deps.pollIntervalMs * 0.4)))

/**
 * One /api/tags probe. `ours`: it timed out while this process's event loop was blocked for half its
 * time or more (a GC pause, a starved process), so it is no answer from the host, as for an attempt
 * (Lane.ts): the poll then changes nothing, and the next one asks again.
 */
const probeOf = (target: { readonly name: string; readonly url: string }, deps: HealthDeps, timeoutMs: number) =>
  Effect.suspend(() => {
    const lag = deps.lag
    const mark = lag?.mark()
    return deps.upstream.unary(target, "GET", "/api/tags", null, timeoutMs).pipe(
      Effect.either,
      Effect.map((result) => ({
        result,
        ours: result._tag === "Left" && result.left.kind === "timeout" && lag !== undefined && mark !== undefined &&
          stalledByGateway(lag.since(mark).longestStallMs, timeoutMs)
      }))
    )
  })

export const makeHostHealth = (
  target: { readonly name: string; readonly url: string },
  deps: HealthDeps,
  /** Journals a health event (or not: in a cluster one replica journals what every replica sees). */
  healthEvent: (event: HostEvent) => Effect.Effect<void>,
  changes: PubSub.PubSub<HostChange>
) => {
  const name = target.name
  let health: HostHealth = {
    status: "unknown", lastCheckedAt: null, lastLatencyMs: null, lastError: null, installed: null, resident: null, version: null
  }

  const markDown = (error: string, now: number) =>
    Effect.flatMap(
      Effect.sync(() => {
        const changed = health.status !== "down"
        health = { ...health, status: "down", lastCheckedAt: now, lastError: error }
        return changed
      }),
      (changed) =>
        changed
          ? Effect.zipRight(
            healthEvent({ _tag: "HostDown", host: name, error }),
            Effect.suspend(() =>
              PubSub.publish(changes, { status: "down", resident: (health.resident ?? []).map((m) => m.name), loaded: [], evicted: [] }))
          )
          : Effect.void
    )

  const pollTimeoutMs = probeTimeoutOf(deps)
  const probeTags = probeOf(target, deps, pollTimeoutMs)

  const poll = Effect.gen(function*() {
    const started = yield* Clock.currentTimeMillis
    let [{ ours, result: tags }, ps, version] = yield* Effect.all([
      probeTags,
      deps.upstream.unary(target, "GET", "/api/ps", null, pollTimeoutMs).pipe(Effect.either),
      deps.upstream.unary(target, "GET", "/api/version", null, pollTimeoutMs).pipe(Effect.either)
    ], { concurrency: 3 })
    const now = yield* Clock.currentTimeMillis
    if (tags._tag === "Left") {
      const again = tags.left.kind === "refused" ? { ours: false, result: tags } : yield* probeTags
      ours ||= again.ours
      if (again.result._tag === "Left") {
        if (ours) return yield* Effect.logDebug(`poll of host ${name}: timed out while the gateway's event loop was blocked; not counted`)
        return yield* markDown(again.result.left.message, yield* Clock.currentTimeMillis)
      }
      tags = again.result
    }
    const resident = ps._tag === "Right" ? readResident(ps.right.json) : null
    const before = health
    health = {
      status: "up",
      lastCheckedAt: now,
      lastLatencyMs: now - started,
      lastError: null,
      installed: readInstalled(tags.right.json),
      resident: resident ?? before.resident,
      version: version._tag === "Right" ? asString(version.right.json.version) : before.version
    }
    if (before.status !== "up") yield* healthEvent({ _tag: "HostUp", host: name, latencyMs: now - started })
    let change: HostChange | null = before.status !== "up"
      ? { status: "up", resident: (resident ?? before.resident ?? []).map((m) => m.name), loaded: [], evicted: [] }
      : null
    const residency = resident === null ? null : residencyChange(before.resident, resident)
    if (residency !== null) {
      yield* healthEvent({ _tag: "ResidencyChanged", host: name, ...residency })
      change = { status: "up", ...residency }
    }
    if (change !== null) yield* PubSub.publish(changes, change)
  })

  return { current: (): HostHealth => health, poll, markDown }
}
