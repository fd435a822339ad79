/**
 * All projections together: the batch fold the projector runs (and a rebuild runs, from nothing),
 * and the writes of one batch. Adding a projection = one module with `evolve` + `upsert`, folded
 * here and listed in `tables`. Of a RouteDecided event the folds see only `input.route`,
 * `input.model` and `plan` (Projector.readEvents leaves the hosts' views out); a fold that needs
 * more of it must widen that query.
 *
 *   run streams  ──RunState.evolve──▶ run transition ─┬─▶ CostLedger.evolve
 *   host streams ─HostState.evolve─▶ host transition ─┴─▶ Metrics.evolve
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Effect } from "effect"
import type { Change } from "./Change.ts"
import * as CostLedger from "./CostLedger.ts"
import { isHostStream, isRunStream, type ProjectionEvent } from "./Event.ts"
import * as HostState from "./HostState.ts"
import * as Metrics from "./Metrics.ts"
import * as RunState from "./RunState.ts"

/** The projection tables, with the columns that identify a row (for `verify`'s diff). */
export const tables: ReadonlyArray<{ readonly name: string; readonly key: ReadonlyArray<string> }> = [
  { name: RunState.table, key: ["stream_id"] },
  { name: HostState.table, key: ["stream_id"] },
  { name: CostLedger.table, key: ["day", "project_id", "lane", "provider", "model"] },
  { name: Metrics.table, key: ["name", "lane", "endpoint", "outcome"] }
]

export interface BatchResult {
  /** Run and host states changed by the batch (their new whole state). */
  readonly runs: ReadonlyArray<RunState.RunState>
  readonly hosts: ReadonlyArray<HostState.HostState>
  /** Differences to add to the additive tables. */
  readonly ledger: Iterable<CostLedger.LedgerRow>
  readonly metrics: Iterable<Metrics.MetricRow>
  /** Events that changed a state (the rest were re-deliveries or of streams no projection reads). */
  readonly applied: number
}

/** The stream states a batch needs before it can be folded. */
export const streamsOf = (events: ReadonlyArray<ProjectionEvent>) => {
  const runs = new Set<string>()
  const hosts = new Set<string>()
  for (const e of events) {
    if (isRunStream(e.streamId)) runs.add(e.streamId)
    else if (isHostStream(e.streamId)) hosts.add(e.streamId)
  }
  return { runs: [...runs], hosts: [...hosts] }
}

/** Folds `events` (in the projector's order) over the current states of their streams. Pure. */
export const fold = (
  events: ReadonlyArray<ProjectionEvent>,
  runStates: ReadonlyMap<string, RunState.RunState>,
  hostStates: ReadonlyMap<string, HostState.HostState>
): BatchResult => {
  // Each run touched gets one private copy for the batch, updated in place event by event.
  const runs = new Map<string, RunState.MutableRunState>()
  const hosts = new Map(hostStates)
  const changedRuns = new Set<string>()
  const changedHosts = new Set<string>()
  const ledger = new CostLedger.Accumulator()
  const metrics = new Metrics.Accumulator()
  let applied = 0
  for (const event of events) {
    let change: Change = { event, run: null, host: null }
    if (isRunStream(event.streamId)) {
      let run = runs.get(event.streamId)
      if (run === undefined) {
        const stored = runStates.get(event.streamId)
        run = stored === undefined ? RunState.initial(event) : { ...stored }
        runs.set(event.streamId, run)
      }
      const before = run.status === "running" ? null : { ...run }
      if (RunState.applyTo(run, event)) {
        changedRuns.add(event.streamId)
        change = { event, run: { before, after: run }, host: null }
      }
    } else if (isHostStream(event.streamId)) {
      const before = hosts.get(event.streamId) ?? null
      const after = HostState.evolve(before, event)
      if (after !== before) {
        hosts.set(event.streamId, after)
        changedHosts.add(event.streamId)
        change = { event, run: null, host: { before, after } }
      }
    }
    if (change.run !== null || change.host !== null) applied++
    ledger.add(change)
    metrics.add(change)
  }
  return {
    runs: [...changedRuns].map((s) => runs.get(s)!),
    hosts: [...changedHosts].map((s) => hosts.get(s)!),
    ledger: [...ledger.values()],
    metrics: [...metrics.values()],
    applied
  }
}

/** The states of the streams a batch touched, as they are after it. */
export interface StreamStates {
  readonly runs: ReadonlyMap<string, RunState.RunState>
  readonly hosts: ReadonlyMap<string, HostState.HostState>
}

const pick = <S>(ids: ReadonlyArray<string>, from: ReadonlyMap<string, S>) => {
  const known = new Map<string, S>()
  const missing: Array<string> = []
  for (const id of ids) {
    const s = from.get(id)
    if (s === undefined) missing.push(id)
    else known.set(id, s)
  }
  return { known, missing }
}

export interface PreparedBatch extends BatchResult {
  readonly states: StreamStates
}

/**
 * Loads the states `events` touch from `schema`'s tables (those in `known` — the previous batch's,
 * when nothing else has changed the tables since — are taken from there) and folds. Writes
 * nothing, so it may run outside the transaction that writes the result: the rows it loads are
 * of streams the batch in flight does not touch (those come from `known`).
 */
export const prepareEvents = (
  sql: SqlClient.SqlClient,
  schema: string,
  events: ReadonlyArray<ProjectionEvent>,
  known: StreamStates = { runs: new Map(), hosts: new Map() }
): Effect.Effect<PreparedBatch, SqlError> =>
  Effect.gen(function*() {
    const streams = streamsOf(events)
    const runs = pick(streams.runs, known.runs)
    const hosts = pick(streams.hosts, known.hosts)
    for (const [id, s] of yield* RunState.load(sql, schema, runs.missing)) runs.known.set(id, s)
    for (const [id, s] of yield* HostState.load(sql, schema, hosts.missing)) hosts.known.set(id, s)
    const result = fold(events, runs.known, hosts.known)
    for (const r of result.runs) runs.known.set(r.streamId, r)
    for (const h of result.hosts) hosts.known.set(h.streamId, h)
    return { ...result, states: { runs: runs.known, hosts: hosts.known } }
  })

/** Writes a folded batch: the changed states, and the differences of the additive tables. */
export const writeBatch = (sql: SqlClient.SqlClient, schema: string, batch: BatchResult): Effect.Effect<void, SqlError> =>
  Effect.gen(function*() {
    yield* RunState.upsert(sql, schema, batch.runs)
    yield* HostState.upsert(sql, schema, batch.hosts)
    yield* CostLedger.upsert(sql, schema, batch.ledger)
    yield* Metrics.upsert(sql, schema, batch.metrics)
  })

/** Loads, folds and writes. Run it inside a transaction. */
export const applyEvents = (
  sql: SqlClient.SqlClient,
  schema: string,
  events: ReadonlyArray<ProjectionEvent>,
  known?: StreamStates
): Effect.Effect<PreparedBatch, SqlError> =>
  Effect.tap(prepareEvents(sql, schema, events, known), (batch) => writeBatch(sql, schema, batch))
