/**
 * The host actor: one per Ollama host. It owns the host's slots, its circuit breaker, its health and
 * residency view (kept by a poller fiber) and its maintenance state, and journals every change of
 * them on the host's own stream ("host-<name>").
 */
import { Clock, Effect, PubSub, type Queue, Schedule, type Scope } from "effect"
import type { HostConfig } from "../config/GatewayConfig.ts"
import type { HostEvent } from "../domain/Events.ts"
import type { Journal } from "../journal/Journal.ts"
import { makeStreamWriter, type StreamBase, type StreamWriter } from "../journal/StreamWriter.ts"
import type { OllamaUpstream } from "../upstream/OllamaUpstream.ts"
import type * as Breaker from "./Breaker.ts"
import { HostCoordination } from "./HostCoordination.ts"
import { type HealthDeps, type HostChange, type HostHealth, makeHostHealth } from "./HostHealth.ts"
import { makeHostMaintenance, type Maintenance, type StoredWindow, type WindowStore } from "./HostMaintenance.ts"
import type { HostView } from "./Plan.ts"
import type * as Slots from "./Slots.ts"

export type { HostChange, HostHealth, ResidentModel } from "./HostHealth.ts"
export { type Maintenance, sleepUntil, type StoredWindow, type WindowStore } from "./HostMaintenance.ts"

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
  /** The gateway's event-loop lag: a poll it timed out does not mark the host down (HostHealth.ts). */
  readonly lag?: HealthDeps["lag"]
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
    const hostChanges = yield* PubSub.unbounded<HostChange>()
    const journalsHealth = deps.journalsHealth ?? (() => true)
    const health = makeHostHealth(target, deps, (event) => journalsHealth() ? writer.append(event) : Effect.void, hostChanges)
    yield* health.poll.pipe(
      Effect.catchAllCause((cause) => Effect.logWarning(`poll of host ${name} failed`, cause)),
      Effect.repeat(Schedule.spaced(deps.pollIntervalMs)),
      Effect.forkScoped
    )
    const maintenance = yield* makeHostMaintenance(name, deps.windows, writer.append)

    const view = (lane: string): Effect.Effect<HostView> =>
      Effect.clockWith((clock) =>
        Effect.flatMap(breaker.snapshot, (b) => Effect.map(slots.viewFor(lane), (slotsView): HostView => {
          const m = maintenance.at(clock.unsafeCurrentTimeMillis())
          const h = health.current()
          return {
            protected: config.protected,
            health: h.status,
            breaker: { status: b.status, reopensAt: b.reopensAt, probeInFlight: b.probeInFlight },
            maintenance: { open: m.open, until: m.until },
            installed: h.installed,
            slots: slotsView
          }
        })))

    return {
      name,
      config,
      target,
      slots,
      breaker,
      owner,
      health: Effect.sync(health.current),
      maintenance: Effect.clockWith((clock) => Effect.sync(() => maintenance.at(clock.unsafeCurrentTimeMillis()))),
      setMaintenance: (m) =>
        m.open
          ? Effect.asVoid(maintenance.open(m.reason ?? "maintenance", m.until))
          : Effect.asVoid(maintenance.close(m.reason ?? "closed")),
      openMaintenance: maintenance.open,
      closeMaintenance: maintenance.close,
      adoptMaintenance: maintenance.adopt,
      changes: PubSub.subscribe(hostChanges),
      record: (event) => writer.append({ ...event, host: name } as HostEvent),
      view,
      reportRefused: (error) => Effect.flatMap(Clock.currentTimeMillis, (now) => health.markDown(error, now)),
      poll: Effect.catchAllCause(health.poll, (cause) => Effect.logWarning(`poll of host ${name} failed`, cause))
    } satisfies HostActor
  })
