/**
 * Keep-warm: for each lane with `keepWarm` hosts, keep the lane's model resident there (runbook:
 * alert-fast keeps gemma3:4b warm on GCP-A and GCP-B).
 *
 * One keeper fiber per (lane, host). It sends Ollama's load request (generate without a prompt, or
 * embed with no input for embedding models) with `keep_alive: server.keepWarmKeepAlive`, and repeats
 * it at half that, so the model never expires. It listens to the host's poller: when a poll finds the
 * model gone, the eviction is journaled on the host's stream (`ModelEvicted`, with the models that
 * appeared in the same poll as `replacedBy`) and the model is loaded again at once.
 *
 * A load takes the lane's own reserved slot on the host (or a shared one when the lane reserves none
 * there) with `tryAcquire`: it never waits behind other lanes' traffic. When the lane's reserved
 * slots are all busy, the lane's own requests are keeping the model loaded, so the keeper skips.
 * Loads respect plan(): nothing is loaded on a host that is down, circuit-open, lacks the model or
 * refuses it by policy (a heavy model on a protected host outside maintenance). They bypass the
 * breaker: a slow cold load says nothing about the host's health for requests.
 *
 * Journal (host stream): KeepWarmLoaded {lane, model, reason: initial|evicted|not-resident|refresh},
 * KeepWarmFailed, KeepWarmSkipped (only for rule refusals, once per change), ModelEvicted.
 * A failed load is retried at the next change the poller sees or after half the keep-alive, whichever
 * comes first, not in a tight loop.
 */
import { Clock, Effect, Layer, Option, Queue } from "effect"
import type { GatewayConfig, LaneConfig } from "../config/GatewayConfig.ts"
import { sameModel } from "../domain/OllamaApi.ts"
import type { OllamaUpstream } from "../upstream/OllamaUpstream.ts"
import { ClusterRole } from "../cluster/ClusterRole.ts"
import { Gateway } from "../routing/Gateway.ts"
import type { HostActor, HostChange } from "../routing/Host.ts"
import { describeSkip, isUnavailability } from "../run/SkipReason.ts"
import { plan } from "../routing/Plan.ts"

export interface KeepWarmDeps {
  readonly config: GatewayConfig
  readonly hosts: ReadonlyMap<string, HostActor>
  readonly upstream: OllamaUpstream
}

/** How long a load may take when the lane's route has no step on the host. */
const defaultLoadTimeoutMs = 120_000

type LoadReason = "initial" | "evicted" | "not-resident" | "refresh"

/** One keeper's fixed facts: its lane, host and model, and the timings derived from the config. */
interface Keeper {
  readonly deps: KeepWarmDeps
  readonly laneName: string
  readonly lane: LaneConfig
  readonly host: HostActor
  readonly model: string
  readonly refreshMs: number
  readonly keepAliveSeconds: number
  readonly timeoutMs: number
  /** The lane reserves slots on the host: a shared slot means its own are busy (and keep it loaded). */
  readonly ownReserved: boolean
}

/** What one keeper remembers between wake-ups. */
interface KeeperState {
  lastLoadAt: number | null
  /** No load (for a missing model) before this time: set after a failure, cleared by the next change. */
  retryAt: number
  evictedPending: boolean
  lastSkip: string | null
  operation: "generate" | "embed"
}

const keeperOf = (deps: KeepWarmDeps, laneName: string, lane: LaneConfig, host: HostActor): Keeper => {
  const keepAliveMs = deps.config.server.keepWarmKeepAlive
  return {
    deps,
    laneName,
    lane,
    host,
    model: lane.model,
    refreshMs: Math.max(1_000, Math.floor(keepAliveMs / 2)),
    keepAliveSeconds: Math.max(1, Math.round(keepAliveMs / 1000)),
    timeoutMs: lane.route.find((s) => s.host === host.name)?.timeout ?? defaultLoadTimeoutMs,
    ownReserved: (lane.reserved[host.name] ?? 0) > 0
  }
}

/** Why a load is due now, or null when none is (resident and fresh, or a failed load's back-off). */
const loadReason = (k: Keeper, st: KeeperState, resident: boolean, now: number): LoadReason | null => {
  if (!resident) {
    if (now < st.retryAt) return null
    return st.evictedPending ? "evicted" : st.lastLoadAt === null ? "initial" : "not-resident"
  }
  if (st.lastLoadAt === null || now - st.lastLoadAt >= k.refreshMs) return st.lastLoadAt === null ? "initial" : "refresh"
  return null
}

/** plan() for the host alone: true when it refuses the load (a rule refusal is journaled once per change). */
const refusedByPlan = (k: Keeper, st: KeeperState, now: number) =>
  Effect.gen(function*() {
    const view = yield* k.host.view(k.laneName)
    const decision = plan({
      lane: k.laneName,
      model: k.model,
      route: [{ host: k.host.name, timeoutMs: k.timeoutMs, when: "always" }],
      hosts: { [k.host.name]: view },
      policy: { heavyModelMinParamsB: k.deps.config.policy.heavyModelMinParamsB },
      now
    })
    const skip = decision.skipped[0]
    if (skip === undefined) {
      st.lastSkip = null
      return false
    }
    // Down or circuit-open is already on the host's stream; a rule refusal is worth saying once.
    const worthSaying = !isUnavailability(skip.reason) || skip.reason.kind === "model-not-installed"
    if (worthSaying && st.lastSkip !== skip.reason.kind) {
      yield* k.host.record({ _tag: "KeepWarmSkipped", lane: k.laneName, model: k.model, reason: skip.reason.kind, message: describeSkip(skip) })
    }
    st.lastSkip = skip.reason.kind
    return true
  })

/** Ollama's load request, through generate or (for an embedding model) embed. */
const load = (k: Keeper, operation: KeeperState["operation"]) => {
  const body = operation === "generate" ? { model: k.model, keep_alive: k.keepAliveSeconds } : { model: k.model, input: [], keep_alive: k.keepAliveSeconds }
  return k.deps.upstream.unary(
    k.host.target,
    "POST",
    operation === "generate" ? "/api/generate" : "/api/embed",
    new TextEncoder().encode(JSON.stringify(body)),
    k.timeoutMs
  ).pipe(Effect.either)
}

/**
 * Loads the model under a slot taken without waiting; None when there is no slot for it now (or
 * only a shared one while the lane's own are busy).
 */
const loadInSlot = (k: Keeper, st: KeeperState, now: number) =>
  Effect.gen(function*() {
    const permit = yield* k.host.slots.tryAcquire(k.laneName)
    if (Option.isNone(permit)) {
      st.retryAt = now + k.deps.config.server.pollInterval
      return Option.none()
    }
    if (permit.value.pool === "shared" && k.ownReserved) {
      // Every reserved slot of the lane is busy: its own requests keep the model loaded.
      yield* permit.value.release
      return Option.none()
    }
    const result = yield* load(k, st.operation).pipe(Effect.ensuring(permit.value.release))
    // An embedding model refuses generate: load it through embed from now on.
    if (
      result._tag === "Left" && st.operation === "generate" && result.left.kind === "rejected" &&
      /does not support generate/i.test(result.left.message)
    ) {
      st.operation = "embed"
      const again = yield* k.host.slots.tryAcquire(k.laneName)
      if (Option.isNone(again)) return Option.none()
      return Option.some(yield* load(k, st.operation).pipe(Effect.ensuring(again.value.release)))
    }
    return Option.some(result)
  })

/** One look at the host: loads the model when it is due and plan() allows it, and journals the outcome. */
const evaluate = (k: Keeper, st: KeeperState) =>
  Effect.gen(function*() {
    const health = yield* k.host.health
    // Down or never polled: the next HostChange wakes the keeper.
    if (health.status !== "up" || health.resident === null) return
    const now = yield* Clock.currentTimeMillis
    const reason = loadReason(k, st, health.resident.some((m) => sameModel(m.name, k.model)), now)
    if (reason === null || (yield* refusedByPlan(k, st, now))) return
    const outcome = yield* loadInSlot(k, st, now)
    if (Option.isNone(outcome)) return
    const after = yield* Clock.currentTimeMillis
    const { laneName: lane, model } = k
    if (outcome.value._tag === "Left") {
      const { kind, message, status } = outcome.value.left
      st.retryAt = after + k.refreshMs
      yield* k.host.record({ _tag: "KeepWarmFailed", lane, model, reason, kind, status, message, durationMs: after - now })
      return
    }
    st.lastLoadAt = after
    st.retryAt = 0
    st.evictedPending = false
    yield* k.host.record({ _tag: "KeepWarmLoaded", lane, model, reason, keepAliveSeconds: k.keepAliveSeconds, via: st.operation, durationMs: after - now })
    // See the model resident now rather than at the next scheduled poll.
    yield* k.host.poll
  })

/** A change the poller saw: any change ends a failed load's back-off; an eviction is journaled. */
const onChange = (k: Keeper, st: KeeperState, change: HostChange) =>
  Effect.gen(function*() {
    st.retryAt = 0
    const gone = change.evicted.find((m) => sameModel(m, k.model))
    if (gone === undefined) return
    st.evictedPending = true
    yield* k.host.record({
      _tag: "ModelEvicted",
      lane: k.laneName,
      model: gone,
      // Models that appeared in the same poll are the likely replacement; none visible → [].
      replacedBy: change.loaded,
      resident: change.resident
    })
  })

/** When to look again without a change: the refresh, a failed load's retry, or the next poll while the model is missing. */
const nextWake = (k: Keeper, st: KeeperState, now: number) =>
  Effect.gen(function*() {
    const refreshAt = st.lastLoadAt === null ? now + k.refreshMs : st.lastLoadAt + k.refreshMs
    const wakeAt = st.retryAt > now ? Math.min(st.retryAt, refreshAt) : refreshAt
    // Still missing on an up host (a poll raced the load, say): look again at the next poll, not
    // only when the poller reports a change (it reports none when nothing changed).
    const health = yield* k.host.health
    if (health.status === "up" && health.resident !== null && !health.resident.some((m) => sameModel(m.name, k.model))) {
      return Math.min(wakeAt, Math.max(st.retryAt, now + k.deps.config.server.pollInterval))
    }
    return wakeAt
  })

const keeper = (deps: KeepWarmDeps, laneName: string, lane: LaneConfig, host: HostActor) =>
  Effect.scoped(Effect.gen(function*() {
    const k = keeperOf(deps, laneName, lane, host)
    const st: KeeperState = { lastLoadAt: null, retryAt: 0, evictedPending: false, lastSkip: null, operation: "generate" }
    const changes = yield* host.changes
    for (;;) {
      yield* evaluate(k, st).pipe(Effect.catchAllCause((cause) => Effect.logWarning(`keep-warm of ${k.model} on ${host.name} (lane ${laneName}) failed`, cause)))
      const now = yield* Clock.currentTimeMillis
      const wakeAt = yield* nextWake(k, st, now)
      const change = yield* Queue.take(changes).pipe(Effect.timeout(Math.max(1, wakeAt - now)), Effect.option)
      if (Option.isSome(change)) {
        yield* onChange(k, st, change.value)
        // A burst of polls (several changes) is handled as one.
        for (const more of yield* Queue.takeAll(changes)) yield* onChange(k, st, more)
      }
    }
  }))

/** Starts one keeper per (lane, keepWarm host) in the current scope. */
export const start = (deps: KeepWarmDeps) =>
  Effect.gen(function*() {
    for (const [laneName, lane] of Object.entries(deps.config.lanes)) {
      if (lane.model === "") continue
      for (const hostName of new Set(lane.keepWarm)) {
        const host = deps.hosts.get(hostName)
        if (host !== undefined) yield* Effect.forkScoped(keeper(deps, laneName, lane, host))
      }
    }
  })

/** The keepers of the gateway's hosts, living as long as the layer. */
export const KeepWarmLive = Layer.scopedDiscard(
  Effect.gen(function*() {
    const { config, hosts, upstream } = yield* Gateway
    const role = yield* ClusterRole
    // In a cluster, one replica keeps the models warm (its own hosts' views tell it what to load).
    if (role.runner === null) yield* start({ config, hosts, upstream })
    else yield* role.singleton("keep-warm", start({ config, hosts, upstream }))
  })
)
