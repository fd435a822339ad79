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

const keeper = (deps: KeepWarmDeps, laneName: string, lane: LaneConfig, host: HostActor) =>
  Effect.scoped(Effect.gen(function*() {
    const model = lane.model
    const changes = yield* host.changes
    const keepAliveMs = deps.config.server.keepWarmKeepAlive
    const refreshMs = Math.max(1_000, Math.floor(keepAliveMs / 2))
    const keepAliveSeconds = Math.max(1, Math.round(keepAliveMs / 1000))
    const timeoutMs = lane.route.find((s) => s.host === host.name)?.timeout ?? defaultLoadTimeoutMs
    const ownReserved = (lane.reserved[host.name] ?? 0) > 0

    let lastLoadAt: number | null = null
    /** No load (for a missing model) before this time: set after a failure, cleared by the next change. */
    let retryAt = 0
    let evictedPending = false
    let lastSkip: string | null = null
    let operation: "generate" | "embed" = "generate"

    const load = (reason: LoadReason, body: Record<string, unknown>) =>
      deps.upstream.unary(
        host.target,
        "POST",
        operation === "generate" ? "/api/generate" : "/api/embed",
        new TextEncoder().encode(JSON.stringify(body)),
        timeoutMs
      ).pipe(Effect.either, Effect.map((r) => ({ reason, result: r })))

    const evaluate = Effect.gen(function*() {
      const health = yield* host.health
      // Down or never polled: the next HostChange wakes the keeper.
      if (health.status !== "up" || health.resident === null) return
      const now = yield* Clock.currentTimeMillis
      const resident = health.resident.some((m) => sameModel(m.name, model))
      let reason: LoadReason | null = null
      if (!resident) {
        if (now < retryAt) return
        reason = evictedPending ? "evicted" : lastLoadAt === null ? "initial" : "not-resident"
      } else if (lastLoadAt === null || now - lastLoadAt >= refreshMs) {
        reason = lastLoadAt === null ? "initial" : "refresh"
      }
      if (reason === null) return

      const view = yield* host.view(laneName)
      const decision = plan({
        lane: laneName,
        model,
        route: [{ host: host.name, timeoutMs, when: "always" }],
        hosts: { [host.name]: view },
        policy: { heavyModelMinParamsB: deps.config.policy.heavyModelMinParamsB },
        now
      })
      const skip = decision.skipped[0]
      if (skip !== undefined) {
        // Down or circuit-open is already on the host's stream; a rule refusal is worth saying once.
        if (!isUnavailability(skip.reason) || skip.reason.kind === "model-not-installed") {
          if (lastSkip !== skip.reason.kind) {
            yield* host.record({ _tag: "KeepWarmSkipped", lane: laneName, model, reason: skip.reason.kind, message: describeSkip(skip) })
          }
        }
        lastSkip = skip.reason.kind
        return
      }
      lastSkip = null

      const permit = yield* host.slots.tryAcquire(laneName)
      if (Option.isNone(permit)) {
        retryAt = now + deps.config.server.pollInterval
        return
      }
      if (permit.value.pool === "shared" && ownReserved) {
        // Every reserved slot of the lane is busy: its own requests keep the model loaded.
        yield* permit.value.release
        return
      }
      const body = (): Record<string, unknown> =>
        operation === "generate" ? { model, keep_alive: keepAliveSeconds } : { model, input: [], keep_alive: keepAliveSeconds }
      let outcome = yield* load(reason, body()).pipe(Effect.ensuring(permit.value.release))
      // An embedding model refuses generate: load it through embed from now on.
      if (
        outcome.result._tag === "Left" && operation === "generate" && outcome.result.left.kind === "rejected" &&
        /does not support generate/i.test(outcome.result.left.message)
      ) {
        operation = "embed"
        const again = yield* host.slots.tryAcquire(laneName)
        if (Option.isNone(again)) return
        outcome = yield* load(reason, body()).pipe(Effect.ensuring(again.value.release))
      }
      const after = yield* Clock.currentTimeMillis
      if (outcome.result._tag === "Left") {
        const failure = outcome.result.left
        retryAt = after + refreshMs
        yield* host.record({
          _tag: "KeepWarmFailed",
          lane: laneName,
          model,
          reason,
          kind: failure.kind,
          status: failure.status,
          message: failure.message,
          durationMs: after - now
        })
        return
      }
      lastLoadAt = after
      retryAt = 0
      evictedPending = false
      yield* host.record({ _tag: "KeepWarmLoaded", lane: laneName, model, reason, keepAliveSeconds, via: operation, durationMs: after - now })
      // See the model resident now rather than at the next scheduled poll.
      yield* host.poll
    })

    const onChange = (change: HostChange) =>
      Effect.gen(function*() {
        retryAt = 0
        const gone = change.evicted.find((m) => sameModel(m, model))
        if (gone !== undefined) {
          evictedPending = true
          yield* host.record({
            _tag: "ModelEvicted",
            lane: laneName,
            model: gone,
            // Models that appeared in the same poll are the likely replacement; none visible → [].
            replacedBy: change.loaded,
            resident: change.resident
          })
        }
      })

    for (;;) {
      yield* evaluate.pipe(Effect.catchAllCause((cause) => Effect.logWarning(`keep-warm of ${model} on ${host.name} (lane ${laneName}) failed`, cause)))
      const now = yield* Clock.currentTimeMillis
      const refreshAt = lastLoadAt === null ? now + refreshMs : lastLoadAt + refreshMs
      let wakeAt = retryAt > now ? Math.min(retryAt, refreshAt) : refreshAt
      // Still missing on an up host (a poll raced the load, say): look again at the next poll, not
      // only when the poller reports a change (it reports none when nothing changed).
      const health = yield* host.health
      if (health.status === "up" && health.resident !== null && !health.resident.some((m) => sameModel(m.name, model))) {
        wakeAt = Math.min(wakeAt, Math.max(retryAt, now + deps.config.server.pollInterval))
      }
      const change = yield* Queue.take(changes).pipe(Effect.timeout(Math.max(1, wakeAt - now)), Effect.option)
      if (Option.isSome(change)) {
        yield* onChange(change.value)
        // A burst of polls (several changes) is handled as one.
        for (const more of yield* Queue.takeAll(changes)) yield* onChange(more)
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
