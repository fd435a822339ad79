/**
 * The host actor: one per Ollama host. It owns the host's slots, its circuit breaker, its health and
 * residency view (kept by a poller fiber) and its maintenance state, and journals every change of
 * them on the host's own stream ("host-<name>").
 */
import { Clock, Effect, Ref, Schedule } from "effect"
import type { HostConfig } from "../config/GatewayConfig.ts"
import type { Journal } from "../journal/Journal.ts"
import { makeStreamWriter } from "../journal/StreamWriter.ts"
import type { OllamaUpstream } from "../upstream/OllamaUpstream.ts"
import * as Breaker from "./Breaker.ts"
import type { HostView, InstalledModel } from "./Plan.ts"
import * as Slots from "./Slots.ts"

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

export interface Maintenance {
  readonly open: boolean
  readonly reason: string | null
  readonly until: number | null
}

export interface HostActor {
  readonly name: string
  readonly config: HostConfig
  readonly target: { readonly name: string; readonly url: string }
  readonly slots: Slots.Slots
  readonly breaker: Breaker.Breaker
  readonly health: Effect.Effect<HostHealth>
  readonly maintenance: Effect.Effect<Maintenance>
  readonly setMaintenance: (m: Maintenance) => Effect.Effect<void>
  /** What plan() sees of this host for a lane. */
  readonly view: (lane: string) => Effect.Effect<HostView>
  /** A refused connection during routing marks the host down at once; the poller brings it back. */
  readonly reportRefused: (error: string) => Effect.Effect<void>
  /** Polls now (the poller also runs on its schedule). */
  readonly poll: Effect.Effect<void>
}

export interface HostDeps {
  readonly journal: Journal
  readonly upstream: OllamaUpstream
  readonly breaker: { readonly consecutiveTimeouts: number; readonly cooldownMs: number }
  readonly pollIntervalMs: number
  readonly probeTimeoutMs: number
}

const asString = (v: unknown): string | null => (typeof v === "string" ? v : null)

const readInstalled = (json: Record<string, unknown>): Array<InstalledModel> =>
  (Array.isArray(json.models) ? json.models : []).flatMap((m: unknown) => {
    if (typeof m !== "object" || m === null) return []
    const rec = m as Record<string, unknown>
    const name = asString(rec.name) ?? asString(rec.model)
    if (name === null) return []
    const details = (typeof rec.details === "object" && rec.details !== null ? rec.details : {}) as Record<string, unknown>
    return [{ name, parameterSize: asString(details.parameter_size) }]
  })

const readResident = (json: Record<string, unknown>): Array<ResidentModel> =>
  (Array.isArray(json.models) ? json.models : []).flatMap((m: unknown) => {
    if (typeof m !== "object" || m === null) return []
    const rec = m as Record<string, unknown>
    const name = asString(rec.name) ?? asString(rec.model)
    if (name === null) return []
    return [{ name, expiresAt: asString(rec.expires_at), sizeVram: typeof rec.size_vram === "number" ? rec.size_vram : null }]
  })

export const make = (
  name: string,
  config: HostConfig,
  reservations: Readonly<Record<string, number>>,
  deps: HostDeps
) =>
  Effect.gen(function*() {
    const target = { name, url: config.url }
    const streamId = `host-${name}`
    const writer = makeStreamWriter(deps.journal, { streamId, traceId: null, projectId: null, lane: null }, yield* deps.journal.streamHead(streamId).pipe(Effect.orDie))
    const slots = yield* Slots.make(config.slots, reservations)
    const breaker = yield* Breaker.make(
      name,
      { consecutiveTimeouts: deps.breaker.consecutiveTimeouts, cooldown: deps.breaker.cooldownMs },
      (t) => writer.append(t._tag, { host: name, ...t })
    )
    const health = yield* Ref.make<HostHealth>({
      status: "unknown", lastCheckedAt: null, lastLatencyMs: null, lastError: null, installed: null, resident: null, version: null
    })
    const maintenance = yield* Ref.make<Maintenance>({ open: false, reason: null, until: null })

    const markDown = (error: string, now: number) =>
      Effect.flatMap(
        Ref.modify(health, (h): [boolean, HostHealth] => [h.status !== "down", { ...h, status: "down", lastCheckedAt: now, lastError: error }]),
        (changed) => changed ? writer.append("HostDown", { host: name, error }) : Effect.void
      )

    const poll = Effect.gen(function*() {
      const started = yield* Clock.currentTimeMillis
      const [tags, ps, version] = yield* Effect.all([
        deps.upstream.unary(target, "GET", "/api/tags", null, deps.probeTimeoutMs).pipe(Effect.either),
        deps.upstream.unary(target, "GET", "/api/ps", null, deps.probeTimeoutMs).pipe(Effect.either),
        deps.upstream.unary(target, "GET", "/api/version", null, deps.probeTimeoutMs).pipe(Effect.either)
      ], { concurrency: 3 })
      const now = yield* Clock.currentTimeMillis
      if (tags._tag === "Left") return yield* markDown(tags.left.message, now)
      const installed = readInstalled(tags.right.json)
      const resident = ps._tag === "Right" ? readResident(ps.right.json) : null
      const before = yield* Ref.get(health)
      yield* Ref.set(health, {
        status: "up",
        lastCheckedAt: now,
        lastLatencyMs: now - started,
        lastError: null,
        installed,
        resident: resident ?? before.resident,
        version: version._tag === "Right" ? asString(version.right.json.version) : before.version
      })
      if (before.status !== "up") yield* writer.append("HostUp", { host: name, latencyMs: now - started })
      if (resident !== null) {
        const was = new Set((before.resident ?? []).map((m) => m.name))
        const is = new Set(resident.map((m) => m.name))
        const loaded = [...is].filter((m) => !was.has(m))
        const evicted = [...was].filter((m) => !is.has(m))
        if (before.resident === null || loaded.length > 0 || evicted.length > 0) {
          yield* writer.append("ResidencyChanged", { host: name, resident: [...is], loaded, evicted })
        }
      }
    })

    yield* poll.pipe(
      Effect.catchAllCause((cause) => Effect.logWarning(`poll of host ${name} failed`, cause)),
      Effect.repeat(Schedule.spaced(deps.pollIntervalMs)),
      Effect.forkScoped
    )

    const effectiveMaintenance = Effect.gen(function*() {
      const m = yield* Ref.get(maintenance)
      const now = yield* Clock.currentTimeMillis
      return m.open && m.until !== null && now >= m.until ? { open: false, reason: null, until: null } : m
    })

    const view = (lane: string): Effect.Effect<HostView> =>
      Effect.gen(function*() {
        const h = yield* Ref.get(health)
        const b = yield* breaker.snapshot
        const m = yield* effectiveMaintenance
        const s = yield* slots.snapshot
        const free = yield* slots.freeFor(lane)
        return {
          protected: config.protected,
          health: h.status,
          breaker: { status: b.status, reopensAt: b.reopensAt, probeInFlight: b.probeInFlight },
          maintenance: { open: m.open, until: m.until },
          installed: h.installed,
          slots: { total: s.total, inUse: s.inUse, freeForLane: free }
        }
      })

    return {
      name,
      config,
      target,
      slots,
      breaker,
      health: Ref.get(health),
      maintenance: effectiveMaintenance,
      setMaintenance: (m) =>
        Effect.zipRight(Ref.set(maintenance, m), writer.append(m.open ? "MaintenanceOpened" : "MaintenanceClosed", { host: name, ...m })),
      view,
      reportRefused: (error) => Effect.flatMap(Clock.currentTimeMillis, (now) => markDown(error, now)),
      poll: Effect.catchAllCause(poll, (cause) => Effect.logWarning(`poll of host ${name} failed`, cause))
    } satisfies HostActor
  })
