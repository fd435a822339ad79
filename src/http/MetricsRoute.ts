/**
 * GET /metrics: the live counters and histograms (observability/Metrics.ts) and gauges read from the
 * actors now: breaker state, host health, slots in use and reserved, each lane's admission depth,
 * the journal's queue, and the projector's lag when a projector runs in this process. One SQL query
 * (the projector's lag) per scrape, none per request.
 */
import { HttpRouter, HttpServerResponse } from "@effect/platform"
import { Effect, Option } from "effect"
import { ClusterRole, clusterGauges } from "../cluster/ClusterRole.ts"
import { Journal } from "../journal/Journal.ts"
import type { LagSnapshot } from "../observability/EventLoopLag.ts"
import type { Gauge } from "../observability/Metrics.ts"
import { Projector } from "../projections/Projector.ts"
import { Gateway } from "../routing/Gateway.ts"
import { hostOwners } from "./HealthRoutes.ts"

const breakerStates = ["closed", "open", "half-open"] as const

/** The gateway's own event-loop delay (observability/EventLoopLag.ts): a stall here is not a host's fault. */
const lagGauges = (lag: LagSnapshot): Array<Gauge> => [
  {
    name: "awooop_event_loop_lag_seconds",
    help: "The gateway's event-loop delay over the last minute (quantile 1 = the maximum).",
    samples: [
      { labels: { quantile: "0.5" }, value: lag.p50Seconds },
      { labels: { quantile: "0.99" }, value: lag.p99Seconds },
      { labels: { quantile: "1" }, value: lag.maxSeconds }
    ]
  },
  { name: "awooop_event_loop_stalled_seconds_total", help: "Time the gateway's event loop ran late, in total.", type: "counter", samples: [{ labels: {}, value: lag.stalledSeconds }] }
]

type JournalStats = Effect.Effect.Success<Journal["stats"]>

/** The journal's writer: queue, commits, retries, degraded or unavailable, spill and losses. */
const journalGauges = (stats: JournalStats): Array<Gauge> => [
  { name: "awooop_journal_queue_depth", help: "Journal events queued and not yet committed.", samples: [{ labels: {}, value: stats.queued }] },
  { name: "awooop_journal_events_written_total", help: "Journal events committed.", type: "counter", samples: [{ labels: {}, value: stats.written }] },
  { name: "awooop_journal_batches_total", help: "Journal INSERT statements committed (events written / batches = the group-commit size).", type: "counter", samples: [{ labels: {}, value: stats.batches }] },
  { name: "awooop_journal_write_retries_total", help: "Journal INSERTs that failed and were retried.", type: "counter", samples: [{ labels: {}, value: stats.retries }] },
  { name: "awooop_journal_degraded", help: "1 while Postgres does not take journal writes (events spill to local disk).", samples: [{ labels: {}, value: stats.degraded ? 1 : 0 }] },
  { name: "awooop_journal_unavailable", help: "1 while neither Postgres nor the spill takes journal writes (new runs are refused with 503).", samples: [{ labels: {}, value: stats.unavailable ? 1 : 0 }] },
  { name: "awooop_journal_spilled_events", help: "Journal events in the local spill, not yet in Postgres.", samples: [{ labels: {}, value: stats.spilled }] },
  {
    name: "awooop_journal_events_lost_total",
    help: "Journal events lost, by reason: dropped (both stores refused, queue full), torn (a spill line cut by a crash), shutdown (not drained in time).",
    type: "counter",
    samples: (["dropped", "torn", "shutdown"] as const).map((reason) => ({ labels: { reason }, value: stats.lost[reason] }))
  }
]

const gauges = Effect.gen(function*() {
  const gateway = yield* Gateway
  const breaker: Array<Gauge["samples"][number]> = []
  const up: Array<Gauge["samples"][number]> = []
  const slots: Array<Gauge["samples"][number]> = []
  const slotsInUse: Array<Gauge["samples"][number]> = []
  const reserved: Array<Gauge["samples"][number]> = []
  const reservedInUse: Array<Gauge["samples"][number]> = []
  for (const host of gateway.hosts.values()) {
    const b = yield* host.breaker.snapshot
    for (const state of breakerStates) breaker.push({ labels: { host: host.name, state }, value: b.status === state ? 1 : 0 })
    const h = yield* host.health
    up.push({ labels: { host: host.name }, value: h.status === "up" ? 1 : 0 })
    const s = yield* host.slots.snapshot
    slots.push({ labels: { host: host.name }, value: s.total })
    slotsInUse.push({ labels: { host: host.name }, value: s.inUse })
    for (const [lane, r] of Object.entries(s.reserved)) {
      reserved.push({ labels: { host: host.name, lane }, value: r.total })
      reservedInUse.push({ labels: { host: host.name, lane }, value: r.inUse })
    }
  }
  const admitted: Array<Gauge["samples"][number]> = []
  const capacity: Array<Gauge["samples"][number]> = []
  for (const lane of gateway.lanes.values()) {
    admitted.push({ labels: { lane: lane.name }, value: yield* lane.inFlight })
    capacity.push({ labels: { lane: lane.name }, value: lane.config.queue.capacity })
  }
  const out: Array<Gauge> = [
    { name: "awooop_breaker_state", help: "Circuit breaker state per host (1 for the current state).", samples: breaker },
    { name: "awooop_host_up", help: "1 when the host's last poll answered.", samples: up },
    { name: "awooop_host_slots", help: "Concurrency slots per host.", samples: slots },
    { name: "awooop_host_slots_in_use", help: "Slots in use per host (reserved and shared).", samples: slotsInUse },
    { name: "awooop_host_slots_reserved", help: "Slots reserved for a lane on a host (never lent to another lane).", samples: reserved },
    { name: "awooop_host_slots_reserved_in_use", help: "A lane's reserved slots in use on a host.", samples: reservedInUse },
    { name: "awooop_lane_admitted", help: "Requests admitted in the lane (running or waiting for a slot): the admission queue depth.", samples: admitted },
    { name: "awooop_lane_admission_capacity", help: "The lane's admission queue capacity; beyond it requests get 503.", samples: capacity },
    ...lagGauges(gateway.lag.snapshot()),
    ...clusterGauges(yield* (yield* ClusterRole).view, yield* hostOwners(gateway))
  ]

  const journal = yield* Effect.serviceOption(Journal)
  if (Option.isSome(journal)) out.push(...journalGauges(yield* journal.value.stats))
  // The projector runs in the gateway process only when it is wired in; its lag is then one query.
  const projector = yield* Effect.serviceOption(Projector)
  if (Option.isSome(projector)) {
    const lag = yield* Effect.either(projector.value.lag)
    if (lag._tag === "Right") {
      out.push({ name: "awooop_projector_lag_events", help: "Journal events the projections have not folded yet.", samples: [{ labels: {}, value: lag.right.eventsBehind }] })
    }
  }
  return out
})

const metrics = Effect.gen(function*() {
  const gateway = yield* Gateway
  const text = gateway.metrics.render(yield* gauges)
  return HttpServerResponse.text(text, { contentType: "text/plain; version=0.0.4; charset=utf-8" })
})

export const metricsRoutes = HttpRouter.empty.pipe(HttpRouter.get("/metrics", metrics))
