/**
 * Recorded routing decisions: every RouteDecided event carries plan()'s whole input and its
 * output. `verify` re-runs plan() on each input and compares; `what-if` runs it under another
 * config. Both scan the journal (and the archive) in batches by global position.
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Effect, Either, Option, Schema } from "effect"
import { fields } from "../projections/Event.ts"
import { type Plan, plan, PlanInput } from "../routing/Plan.ts"

export interface RecordedDecision {
  readonly globalPosition: number
  readonly streamId: string
  readonly traceId: string | null
  readonly lane: string | null
  /** epoch ms */
  readonly occurredAt: number
  readonly data: unknown
  /** From run_state, when projected: the endpoint that answered and the outcome. */
  readonly endpoint: string | null
  readonly status: string | null
}

const columns = `j.global_position::float8 AS "globalPosition", j.stream_id AS "streamId", j.trace_id AS "traceId",
  j.lane, floor(extract(epoch FROM j.occurred_at) * 1000)::float8 AS "occurredAt", j.data`

/**
 * Calls `onBatch` with every RouteDecided (archive first, then the live journal), oldest first.
 * `since` (epoch ms) skips older decisions.
 */
export const scanDecisions = <E>(
  sql: SqlClient.SqlClient,
  onBatch: (batch: ReadonlyArray<RecordedDecision>) => Effect.Effect<void, E>,
  options: {
    readonly since?: number | undefined
    readonly batchSize?: number | undefined
    /** Also read who answered each run (run_state), for what-if's summary. */
    readonly outcomes?: boolean | undefined
  } = {}
): Effect.Effect<number, SqlError | E> =>
  Effect.gen(function*() {
    const limit = options.batchSize ?? 2_000
    const outcome = options.outcomes === true
      ? sql.literal(", r.endpoint, r.status")
      : sql.literal(", NULL::text AS endpoint, NULL::text AS status")
    const join = options.outcomes === true ? sql.literal("LEFT JOIN run_state r ON r.stream_id = j.stream_id") : sql.literal("")
    const since = options.since === undefined ? sql.literal("") : sql`AND j.occurred_at >= ${new Date(options.since).toISOString()}::timestamptz`
    let total = 0
    for (const source of ["step_journal_archive", "step_journal"] as const) {
      let after = 0
      for (;;) {
        const batch = yield* sql<RecordedDecision>`
          SELECT ${sql.literal(columns)}${outcome} FROM ${sql(source)} j ${join}
          WHERE j.type = 'RouteDecided' AND j.global_position > ${after}::bigint ${since}
          ORDER BY j.global_position LIMIT ${limit}`
        if (batch.length === 0) break
        yield* onBatch(batch)
        total += batch.length
        after = batch[batch.length - 1]!.globalPosition
        if (batch.length < limit) break
      }
    }
    return total
  })

const decodeInput = Schema.decodeUnknownOption(PlanInput)

/** The recorded input, if it has plan()'s shape (a tampered or truncated event may not). */
export const inputOf = (data: unknown): PlanInput | null => Option.getOrNull(decodeInput(fields(data).input))

/** plan() on a recorded input; a recorded input it cannot even read is reported, not thrown. */
export const replay = (input: PlanInput): Either.Either<Plan, string> =>
  Either.try({ try: () => plan(input), catch: (e) => `plan() threw on the recorded input: ${String(e)}` })

/** JSON with object keys sorted: jsonb does not keep key order, so compare this way. */
export const canonical = (value: unknown): string =>
  JSON.stringify(value, (_key, v: unknown) =>
    typeof v === "object" && v !== null && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : v)

export interface DecisionMismatch {
  readonly globalPosition: number
  readonly streamId: string
  readonly traceId: string | null
  readonly lane: string | null
  readonly problem: string
  readonly recorded: unknown
  readonly replayed: Plan | null
}

export interface DecisionCheck {
  readonly checked: number
  readonly mismatches: number
  /** The first `maxReported` mismatches. */
  readonly reported: ReadonlyArray<DecisionMismatch>
}

export const maxReported = 50

/** What is wrong with one recorded decision when plan() is run again on its input; null when nothing is. */
const mismatchOf = (d: RecordedDecision): DecisionMismatch | null => {
  const recorded = fields(d.data).plan
  const input = inputOf(d.data)
  const replayed = input === null ? Either.left("the recorded input is not a plan() input") : replay(input)
  const problem = Either.isLeft(replayed)
    ? replayed.left
    : canonical(replayed.right) !== canonical(recorded)
    ? "plan() on the recorded input gives another plan than the one recorded"
    : null
  if (problem === null) return null
  return {
    globalPosition: d.globalPosition,
    streamId: d.streamId,
    traceId: d.traceId,
    lane: d.lane,
    problem,
    recorded,
    replayed: Either.isRight(replayed) ? replayed.right : null
  }
}

/** Re-runs plan() on every recorded decision and reports each that comes out differently. */
export const verifyDecisions = (
  sql: SqlClient.SqlClient,
  options: { readonly batchSize?: number | undefined } = {}
): Effect.Effect<DecisionCheck, SqlError> =>
  Effect.gen(function*() {
    const reported: Array<DecisionMismatch> = []
    let mismatches = 0
    const checked = yield* scanDecisions(sql, (batch) =>
      Effect.sync(() => {
        for (const d of batch) {
          const mismatch = mismatchOf(d)
          if (mismatch === null) continue
          mismatches++
          // All are counted; only the first few are kept (a broken journal may differ everywhere).
          if (reported.length < maxReported) reported.push(mismatch)
        }
      }), options)
    return { checked, mismatches, reported }
  })
