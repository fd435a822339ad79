/**
 * Reads for the run, trace and cost API (src/http/RunRoutes.ts): run_state and cost_ledger as the
 * projector keeps them, and the journal itself for traces. A run the projector has not reached yet
 * (it trails the journal by up to one interval) is folded from its stream on the spot, so a caller
 * that just got an answer can always look its run up.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Effect } from "effect"
import * as CostLedger from "./CostLedger.ts"
import * as History from "./History.ts"
import { liveSchema } from "./Projector.ts"
import * as RunState from "./RunState.ts"

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString())

/** A run as the API shows it. */
export const runView = (run: RunState.RunState, projected: boolean) => ({
  runId: run.runId,
  streamId: run.streamId,
  status: run.status,
  traceId: run.traceId,
  projectId: run.projectId,
  caller: run.caller,
  lane: run.lane,
  intent: run.intent,
  operation: run.operation,
  protocol: run.protocol,
  stream: run.stream,
  requestedModel: run.requestedModel,
  assignedModel: run.assignedModel,
  model: run.model,
  attempts: run.attempts,
  endpoint: run.endpoint,
  providerTier: run.providerTier,
  provider: run.provider,
  inputTokens: run.inputTokens,
  outputTokens: run.outputTokens,
  costUsd: run.costUsd,
  fallbackReason: run.fallbackReason,
  error: run.error,
  errorCode: run.errorCode,
  errorStatus: run.errorStatus,
  startedAt: iso(run.startedAt),
  finishedAt: iso(run.finishedAt),
  durationMs: run.durationMs,
  route: run.route,
  misses: run.misses.map((m) => m.text),
  /** false: folded from the journal just now, the projector has not reached it yet */
  projected
})

export type RunView = ReturnType<typeof runView>

export const eventView = (e: History.HistoryEvent) => ({
  globalPosition: e.globalPosition,
  streamId: e.streamId,
  streamPosition: e.streamPosition,
  type: e.type,
  occurredAt: new Date(e.occurredAt).toISOString(),
  projectId: e.projectId,
  lane: e.lane,
  data: e.data
})

export class ReadModel extends Effect.Service<ReadModel>()("awooop/ReadModel", {
  effect: Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient

    const run = (streamId: string): Effect.Effect<RunView | null, SqlError> =>
      Effect.gen(function*() {
        const projected = yield* RunState.loadOne(sql, liveSchema, streamId)
        if (projected !== null) return runView(projected, true)
        const events = yield* History.streamEvents(sql, streamId)
        if (events.length === 0) return null
        return runView(events.reduce<RunState.RunState | null>(RunState.evolve, null)!, false)
      })

    const trace = (traceId: string) =>
      Effect.gen(function*() {
        const events = yield* History.traceEvents(sql, traceId)
        if (events.length === 0) return null
        const runs = new Map<string, RunState.RunState>()
        for (const e of events) {
          if (e.streamId.startsWith("run-")) runs.set(e.streamId, RunState.evolve(runs.get(e.streamId) ?? null, e))
        }
        return {
          traceId,
          runs: [...runs.values()].map((r) => runView(r, false)),
          events: events.map(eventView)
        }
      })

    const cost = (options: {
      readonly from: string
      readonly to: string
      readonly groupBy: ReadonlyArray<CostLedger.GroupBy>
      readonly projectId?: string | undefined
    }) =>
      Effect.gen(function*() {
        const rows = yield* CostLedger.summarize(sql, liveSchema, options)
        const [total] = yield* CostLedger.summarize(sql, liveSchema, { ...options, groupBy: [] })
        const { group: _, ...totals } = total!
        return {
          from: options.from,
          to: options.to,
          groupBy: options.groupBy,
          rows: rows.map(({ group, ...values }) => ({ ...group, ...values })),
          total: totals
        }
      })

    return { run, trace, cost } as const
  })
}) {}
