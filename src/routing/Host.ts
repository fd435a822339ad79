/**
 * The host actor: one per Ollama host. It owns the host's slots, its circuit breaker, its health and
 * residency view (kept by a poller fiber) and its maintenance state, and journals every change of
 * them on the host's own stream ("host-<name>").
 */
import { Clock, Effect, FiberHandle, PubSub, type Queue, Ref, Schedule, type Scope } from "effect"
import type { HostConfig } from "../config/GatewayConfig.ts"
import type { HostEvent } from "../domain/Events.ts"
import type { Journal } from "../journal/Journal.ts"
import { makeStreamWriter, type StreamBase, type StreamWriter } from "../journal/StreamWriter.ts"
import type { OllamaUpstream } from "../upstream/OllamaUpstream.ts"
import type * as Breaker from "./Breaker.ts"
import { HostCoordination } from "./HostCoordination.ts"
import type { HostView, InstalledModel } from "./Plan.ts"
import type * as Slots from "./Slots.ts"

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

/** An open window as stored (operations/MaintenanceWindows.ts): `id` tells it from a newer one. */
export interface StoredWindow {
  readonly id: number
  readonly reason: string
  readonly until: number | null
}

/**
 * Where windows outlive the process and are shared by replicas. Without one (unit tests) windows
 * live in memory only. A store that cannot be reached is a defect of the operator's call.
 */
export interface WindowStore {
  /** Stores the host's window (replacing an open one); its id. */
  readonly open: (host: string, reason: string, until: number | null) => Effect.Effect<number>
  /** Deletes the host's window (only window `id` when given); true when this call deleted it. */
  readonly close: (host: string, id: number | null) => Effect.Effect<boolean>
}

/** What a poll changed: the host's status and/or its resident models (keep-warm listens to these). */
export interface HostChange {
  readonly status: "up" | "down"
  readonly resident: ReadonlyArray<string>
  readonly loaded: ReadonlyArray<string>
  readonly evicted: ReadonlyArray<string>
}

export interface HostActor {
  readonly name: string
  readonly config: HostConfig
  readonly target: { readonly name: string; readonly url: string }
  readonly slots: Slots.Slots
  readonly breaker: Breaker.Breaker
  /** The runner whose host entity counts the slots and keeps the breaker; null for the single runner. */
  readonly owner: Effect.Effect<string | null>
  readonly health: Effect.Effect<HostHealth>
  readonly maintenance: Effect.Effect<Maintenance>
  readonly setMaintenance: (m: Maintenance) => Effect.Effect<void>
  /** Opens (or replaces) a window; it closes by itself at `until`, journaled. */
  readonly openMaintenance: (reason: string, until: number | null) => Effect.Effect<Maintenance>
  /** Closes the window now; false when none was open. */
  readonly closeMaintenance: (reason: string) => Effect.Effect<boolean>
  /**
   * Takes on the stored window (null: none) another replica opened or closed, or one loaded at
   * start, without journaling (whoever changed it journaled it). It still closes by itself at `until`.
   */
  readonly adoptMaintenance: (window: StoredWindow | null) => Effect.Effect<void>
  /** Health and residency changes as the poller sees them (a subscription lives as long as its scope). */
  readonly changes: Effect.Effect<Queue.Dequeue<HostChange>, never, Scope.Scope>
  /** Appends an event to the host's own stream (keep-warm's loads and evictions); the host's name is added. */
  readonly record: (event: HostRecord) => Effect.Effect<void>
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
  /** Wraps the host stream's writer (breaker transitions feed metrics and spans; observability/RunObserver.ts). */
  readonly observe?: (writer: StreamWriter<HostEvent>) => StreamWriter<HostEvent>
  /** Durable, shared maintenance windows (see WindowStore). */
  readonly windows?: WindowStore
  /**
   * Whether this replica journals what its poller sees (HostUp/HostDown/ResidencyChanged). Every
   * replica polls for its own routing view; in a cluster one of them journals (default: always).
   */
  readonly journalsHealth?: () => boolean
  /** The host stream's writer when several replicas write it (cluster/SharedStreamWriter.ts). */
  readonly sharedWriter?: (base: StreamBase) => StreamWriter<HostEvent>
}

/** A host event as another actor records it: without the host, which the host adds. */
export type HostRecord = HostEvent extends infer E ? E extends HostEvent ? Omit<E, "host"> : never : never

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

/** Sleeps until the epoch-ms time `at` (in steps of a day: longer timers count as "never" in Effect's clock). */
export const sleepUntil = (at: number): Effect.Effect<void> =>
  Effect.flatMap(Clock.currentTimeMillis, (now) =>
    now >= at ? Effect.void : Effect.zipRight(Effect.sleep(Math.min(at - now, 86_400_000)), Effect.suspend(() => sleepUntil(at))))

export const make = (
  name: string,
  config: HostConfig,
  reservations: Readonly<Record<string, number>>,
  deps: HostDeps
) =>
  Effect.gen(function*() {
    const target = { name, url: config.url }
    const streamId = `host-${name}`
    const base = { streamId, traceId: null, projectId: null, lane: null }
    const baseWriter = deps.sharedWriter?.(base) ?? makeStreamWriter<HostEvent>(deps.journal, base, yield* deps.journal.streamHead(streamId).pipe(Effect.orDie))
    const writer = deps.observe?.(baseWriter) ?? baseWriter
    // This process's semaphore and breaker, or (in a cluster) the host entity's (HostCoordination.ts).
    const { breaker, owner, slots } = yield* (yield* HostCoordination).make(
      name,
      config.slots,
      reservations,
      { consecutiveTimeouts: deps.breaker.consecutiveTimeouts, cooldown: deps.breaker.cooldownMs },
      (t) => writer.append({ host: name, ...t })
    )
    // Health and maintenance are read on every request (plan()'s view): plain values replaced in
    // single synchronous steps, read with one Effect.sync, rather than Refs read one by one.
    let health: HostHealth = {
      status: "unknown", lastCheckedAt: null, lastLatencyMs: null, lastError: null, installed: null, resident: null, version: null
    }
    let maintenance: Maintenance = { open: false, reason: null, until: null }
    // Each window gets an id, so the fiber closing an expired window never closes a newer one.
    const windowId = yield* Ref.make(0)
    const closer = yield* FiberHandle.make<void, never>()
    const hostChanges = yield* PubSub.unbounded<HostChange>()
    const journalsHealth = deps.journalsHealth ?? (() => true)
    const healthEvent = (event: HostEvent) => journalsHealth() ? writer.append(event) : Effect.void

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
                PubSub.publish(hostChanges, { status: "down", resident: (health.resident ?? []).map((m) => m.name), loaded: [], evicted: [] }))
            )
            : Effect.void
      )

    // One slow answer on a loaded machine is not an outage: a /api/tags probe that times out or fails
    // is asked once more at once, and only a second failure marks the host down (a refused
    // connection — nothing is listening — marks it down at once). Each probe is capped at 2/5 of the
    // interval, so a host that stops answering (even one that accepts connections and then says
    // nothing) is down within two intervals.
    const pollTimeoutMs = Math.max(1, Math.min(deps.probeTimeoutMs, Math.floor(deps.pollIntervalMs * 0.4)))
    const probeTags = deps.upstream.unary(target, "GET", "/api/tags", null, pollTimeoutMs).pipe(Effect.either)
    const poll = Effect.gen(function*() {
      const started = yield* Clock.currentTimeMillis
      let [tags, ps, version] = yield* Effect.all([
        probeTags,
        deps.upstream.unary(target, "GET", "/api/ps", null, pollTimeoutMs).pipe(Effect.either),
        deps.upstream.unary(target, "GET", "/api/version", null, pollTimeoutMs).pipe(Effect.either)
      ], { concurrency: 3 })
      const now = yield* Clock.currentTimeMillis
      if (tags._tag === "Left") {
        const again = tags.left.kind === "refused" ? tags : yield* probeTags
        if (again._tag === "Left") return yield* markDown(again.left.message, yield* Clock.currentTimeMillis)
        tags = again
      }
      const installed = readInstalled(tags.right.json)
      const resident = ps._tag === "Right" ? readResident(ps.right.json) : null
      const before = health
      health = {
        status: "up",
        lastCheckedAt: now,
        lastLatencyMs: now - started,
        lastError: null,
        installed,
        resident: resident ?? before.resident,
        version: version._tag === "Right" ? asString(version.right.json.version) : before.version
      }
      if (before.status !== "up") yield* healthEvent({ _tag: "HostUp", host: name, latencyMs: now - started })
      let change: HostChange | null = before.status !== "up"
        ? { status: "up", resident: (resident ?? before.resident ?? []).map((m) => m.name), loaded: [], evicted: [] }
        : null
      if (resident !== null) {
        const was = new Set((before.resident ?? []).map((m) => m.name))
        const is = new Set(resident.map((m) => m.name))
        const loaded = [...is].filter((m) => !was.has(m))
        const evicted = [...was].filter((m) => !is.has(m))
        if (before.resident === null || loaded.length > 0 || evicted.length > 0) {
          yield* healthEvent({ _tag: "ResidencyChanged", host: name, resident: [...is], loaded, evicted })
          change = { status: "up", resident: [...is], loaded, evicted }
        }
      }
      if (change !== null) yield* PubSub.publish(hostChanges, change)
    })

    yield* poll.pipe(
      Effect.catchAllCause((cause) => Effect.logWarning(`poll of host ${name} failed`, cause)),
      Effect.repeat(Schedule.spaced(deps.pollIntervalMs)),
      Effect.forkScoped
    )

    /**
     * Closes window `id` (null: whichever is open) if it is still the open one. Journaled once: with
     * a store, only by the replica whose delete removed it; in memory, by whoever gets there first.
     */
    const closeWindow = (id: number | null, reason: string, expired: boolean) =>
      Effect.gen(function*() {
        const current = yield* Ref.get(windowId)
        const ours = deps.windows === undefined ? id === null || id === current : yield* deps.windows.close(name, id)
        const was = maintenance
        if (id === null || id === current) maintenance = { open: false, reason: null, until: null }
        if (!ours || !was.open && deps.windows === undefined) return false
        yield* writer.append({ _tag: "MaintenanceClosed", host: name, reason, expired, openReason: was.reason, until: was.until })
        return true
      }).pipe(Effect.uninterruptible)

    /** Arms the closer of window `id` at `until` (or disarms it for a window without an end). */
    const closeAt = (id: number, until: number | null) =>
      until === null
        ? FiberHandle.clear(closer)
        : FiberHandle.run(
          closer,
          Effect.zipRight(sleepUntil(until), closeWindow(id, `the window ended at ${new Date(until).toISOString()}`, true))
        )

    const openMaintenance = (reason: string, until: number | null) =>
      Effect.gen(function*() {
        const id = deps.windows === undefined
          ? yield* Ref.updateAndGet(windowId, (n) => n + 1)
          : yield* Effect.tap(deps.windows.open(name, reason, until), (id) => Ref.set(windowId, id))
        const m: Maintenance = { open: true, reason, until }
        maintenance = m
        yield* writer.append({ _tag: "MaintenanceOpened", host: name, open: true, reason, until })
        // Closes the window at `until` even when nobody reads it, so the journal says when it ended.
        yield* closeAt(id, until)
        return m
      }).pipe(Effect.uninterruptible)

    const closeMaintenance = (reason: string) =>
      Effect.zipLeft(closeWindow(null, reason, false), FiberHandle.clear(closer))

    const adoptMaintenance = (window: StoredWindow | null) =>
      Effect.gen(function*() {
        if (window === null) {
          if (!maintenance.open) return
          maintenance = { open: false, reason: null, until: null }
          return yield* FiberHandle.clear(closer)
        }
        if (maintenance.open && (yield* Ref.get(windowId)) === window.id) return
        yield* Ref.set(windowId, window.id)
        maintenance = { open: true, reason: window.reason, until: window.until }
        yield* closeAt(window.id, window.until)
      }).pipe(Effect.uninterruptible)

    const maintenanceAt = (now: number): Maintenance =>
      maintenance.open && maintenance.until !== null && now >= maintenance.until ? { open: false, reason: null, until: null } : maintenance

    const effectiveMaintenance = Effect.clockWith((clock) => Effect.sync(() => maintenanceAt(clock.unsafeCurrentTimeMillis())))

    const view = (lane: string): Effect.Effect<HostView> =>
      Effect.flatMap(breaker.snapshot, (b) =>
        Effect.clockWith((clock) =>
          Effect.flatMap(slots.viewFor(lane), (slotsView): Effect.Effect<HostView> => {
            const m = maintenanceAt(clock.unsafeCurrentTimeMillis())
            return Effect.succeed({
              protected: config.protected,
              health: health.status,
              breaker: { status: b.status, reopensAt: b.reopensAt, probeInFlight: b.probeInFlight },
              maintenance: { open: m.open, until: m.until },
              installed: health.installed,
              slots: slotsView
            })
          })))

    return {
      name,
      config,
      target,
      slots,
      breaker,
      owner,
      health: Effect.sync(() => health),
      maintenance: effectiveMaintenance,
      setMaintenance: (m) =>
        m.open
          ? Effect.asVoid(openMaintenance(m.reason ?? "maintenance", m.until))
          : Effect.asVoid(closeMaintenance(m.reason ?? "closed")),
      openMaintenance,
      closeMaintenance,
      adoptMaintenance,
      changes: PubSub.subscribe(hostChanges),
      record: (event) => writer.append({ ...event, host: name } as HostEvent),
      view,
      reportRefused: (error) => Effect.flatMap(Clock.currentTimeMillis, (now) => markDown(error, now)),
      poll: Effect.catchAllCause(poll, (cause) => Effect.logWarning(`poll of host ${name} failed`, cause))
    } satisfies HostActor
  })
