/**
 * The audit CLI over the step journal: `npm run journal -- <command>`.
 *
 *   explain <trace-id | run-id> [--json]   the story of a trace (every attempt, skip, breaker, fallback, cost)
 *   verify [--json]                        plan() reproduces every recorded decision, a rebuild of
 *                                          every projection equals the live tables, and every run
 *                                          stream ends in exactly one terminal event
 *   rebuild                                rebuild the projections from the journal and swap them in
 *   what-if --config <file> [--since <ISO>] [--json]   replay recorded decisions under another config
 *   archive --before <date> [--dry-run]    move old, already projected events to step_journal_archive
 *   status                                 the projector's checkpoint and lag
 *
 * Storage as the gateway's: DATABASE_URL, or the embedded PGlite store (AWOOOP_DATA_DIR) when it is
 * unset — PGlite is single-process, so stop the gateway before pointing the CLI at its data dir.
 *
 * Exit codes: 0 ok; verify: 1 a decision differs, 2 a projection differs, 8 a run stream without
 * exactly one terminal event (or-ed together: 3, 9, 10, 11); explain: 4 not
 * found; archive: 5 refused (events not projected yet); 64 usage; 70 failure (database, ...).
 */
import { NodeRuntime } from "@effect/platform-node"
import * as SqlClient from "@effect/sql/SqlClient"
import { SqlError } from "@effect/sql/SqlError"
import { Console, Effect, Exit, Layer, Logger, LogLevel } from "effect"
import { loadConfigFile } from "../config/GatewayConfig.ts"
import { checkRunEnds, type RunEndReport } from "../journal/RunEnds.ts"
import { type Checkpoint, lag, readCheckpoint } from "../projections/Projector.ts"
import { type ProjectionCheck, rebuildLive, verifyProjections } from "../projections/Rebuild.ts"
import { DatabaseLive } from "../storage/Database.ts"
import { StoreInUse } from "../storage/StoreLock.ts"
import { MigrationsLive } from "../storage/Migrations.ts"
import { archive } from "./Archive.ts"
import { type DecisionCheck, verifyDecisions } from "./Decisions.ts"
import * as Explain from "./Explain.ts"
import * as WhatIf from "./WhatIf.ts"

export const ExitCode = {
  ok: 0,
  decisionsDiffer: 1,
  projectionsDiffer: 2,
  notFound: 4,
  runEndsBroken: 8,
  refused: 5,
  usage: 64,
  failure: 70
} as const

const usage = `usage: npm run journal -- <command>
  explain <trace-id | run-id> [--json]
  verify [--json]
  rebuild
  what-if --config <file> [--since <ISO date>] [--json]
  archive --before <date> [--dry-run]
  status`

export interface Args {
  readonly command: string | undefined
  readonly positional: ReadonlyArray<string>
  readonly flags: Readonly<Record<string, string | true>>
}

export const parseArgs = (argv: ReadonlyArray<string>): Args => {
  const positional: Array<string> = []
  const flags: Record<string, string | true> = {}
  const valued = new Set(["config", "since", "before", "batch-size"])
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    if (!arg.startsWith("--")) {
      positional.push(arg)
      continue
    }
    const eq = arg.indexOf("=")
    const name = arg.slice(2, eq < 0 ? undefined : eq)
    if (eq >= 0) flags[name] = arg.slice(eq + 1)
    else if (valued.has(name) && i + 1 < argv.length) flags[name] = argv[++i]!
    else flags[name] = true
  }
  return { command: positional[0], positional: positional.slice(1), flags }
}

const checkpointText = (c: Checkpoint | null) =>
  c === null ? "none (nothing projected yet)" : `transaction ${c.transactionId}, position ${c.globalPosition}`

const printJson = (value: unknown) => Console.log(JSON.stringify(value, null, 2))

const usageError = (message: string) =>
  Effect.as(Console.error(`${message}\n${usage}`), ExitCode.usage)

const dateFlag = (value: string | true | undefined): Date | null | undefined => {
  if (value === undefined) return undefined
  if (value === true) return null
  const ms = Date.parse(/^\d{4}-\d{2}-\d{2}$/.test(value) ? `${value}T00:00:00Z` : value)
  return Number.isFinite(ms) ? new Date(ms) : null
}

const batchSizeOf = (args: Args): number | undefined => {
  const v = args.flags["batch-size"]
  const n = typeof v === "string" ? Number(v) : NaN
  return Number.isInteger(n) && n > 0 ? n : undefined
}

type Command = (sql: SqlClient.SqlClient, args: Args, json: boolean) => Effect.Effect<number, unknown>

const explainCommand: Command = (sql, args, json) =>
  Effect.gen(function*() {
    const id = args.positional[0]
    if (id === undefined) return yield* usageError("explain needs a trace id or a run id")
    const result = yield* Explain.explain(sql, id).pipe(Effect.either)
    if (result._tag === "Left") {
      if (result.left._tag !== "ExplainNotFound") return yield* Effect.fail(result.left)
      yield* Console.error(result.left.message)
      return ExitCode.notFound
    }
    yield* json ? printJson(Explain.toJson(result.right)) : Console.log(Explain.renderText(result.right))
    return ExitCode.ok
  })

const printDecisions = (decisions: DecisionCheck) =>
  Effect.gen(function*() {
    yield* Console.log(
      decisions.mismatches === 0
        ? `decisions: ${decisions.checked} recorded decisions re-planned, all match`
        : `decisions: ${decisions.mismatches} of ${decisions.checked} recorded decisions DIFFER from plan() on their recorded input`
    )
    for (const m of decisions.reported) {
      yield* Console.log(`  #${m.globalPosition} ${m.streamId} (trace ${m.traceId ?? "-"}, lane ${m.lane ?? "-"}): ${m.problem}`)
      yield* Console.log(`    recorded: ${JSON.stringify(m.recorded)}`)
      if (m.replayed !== null) yield* Console.log(`    plan():   ${JSON.stringify(m.replayed)}`)
    }
    if (decisions.mismatches > decisions.reported.length) {
      yield* Console.log(`  ... and ${decisions.mismatches - decisions.reported.length} more`)
    }
  })

const printProjections = (projections: ProjectionCheck) =>
  Effect.gen(function*() {
    yield* Console.log(
      projections.ok
        ? `projections: rebuilt from ${projections.events} events up to ${checkpointText(projections.checkpoint)}: ` +
          `${projections.diffs.map((d) => d.table).join(", ")} equal the live tables`
        : `projections: a rebuild from the journal DIFFERS from the live tables (up to ${checkpointText(projections.checkpoint)})`
    )
    for (const d of projections.diffs) {
      if (d.onlyLive + d.onlyRebuilt === 0) continue
      yield* Console.log(
        `  ${d.table}: ${d.onlyLive} live row(s) not in the rebuild, ${d.onlyRebuilt} rebuilt row(s) not live; e.g. ${d.samples.join(", ")}`
      )
    }
  })

const printRunEnds = (runEnds: RunEndReport) =>
  Effect.gen(function*() {
    yield* Console.log(
      runEnds.open + runEnds.multiple === 0
        ? `run ends: all ${runEnds.runs} run streams end in exactly one terminal event`
        : `run ends: of ${runEnds.runs} run streams, ${runEnds.open} have NO terminal event and ${runEnds.multiple} have more than one ` +
          `(runs in flight, and async runs waiting for a worker, count as open)`
    )
    for (const v of runEnds.violations) {
      yield* Console.log(`  ${v.streamId} (trace ${v.traceId ?? "-"}, lane ${v.lane ?? "-"}${v.async ? ", async" : ""}): ${v.terminals} terminal events, last ${v.lastType}`)
    }
  })

const verifyCommand: Command = (sql, args, json) =>
  Effect.gen(function*() {
    const decisions = yield* verifyDecisions(sql, { batchSize: batchSizeOf(args) })
    const projections = yield* verifyProjections(sql, { batchSize: batchSizeOf(args) })
    const runEnds = yield* checkRunEnds(sql)
    // One exit code for all three checks: a script can tell which failed from its bits.
    const code = (decisions.mismatches > 0 ? ExitCode.decisionsDiffer : 0) | (projections.ok ? 0 : ExitCode.projectionsDiffer) |
      (runEnds.open + runEnds.multiple > 0 ? ExitCode.runEndsBroken : 0)
    if (json) {
      yield* printJson({ decisions, projections, runEnds, exitCode: code })
      return code
    }
    yield* printDecisions(decisions)
    yield* printProjections(projections)
    yield* printRunEnds(runEnds)
    return code
  })

const rebuildCommand: Command = (sql, args) =>
  Effect.gen(function*() {
    const result = yield* rebuildLive(sql, { batchSize: batchSizeOf(args) })
    yield* Console.log(`rebuilt run_state, host_state, cost_ledger and metrics from ${result.events} events; checkpoint ${checkpointText(result.checkpoint)}`)
    return ExitCode.ok
  })

const whatIfCommand: Command = (sql, args, json) =>
  Effect.gen(function*() {
    const file = args.flags.config
    if (typeof file !== "string") return yield* usageError("what-if needs --config <file>")
    const since = dateFlag(args.flags.since)
    if (since === null) return yield* usageError(`--since must be an ISO date, got ${JSON.stringify(args.flags.since)}`)
    const config = yield* loadConfigFile(file).pipe(Effect.either)
    if (config._tag === "Left") return yield* usageError(config.left.message)
    const report = yield* WhatIf.whatIf(sql, config.right, { since: since?.getTime() })
    yield* json ? printJson(report) : Console.log(WhatIf.renderText(report, file))
    return ExitCode.ok
  })

const archiveCommand: Command = (sql, args) =>
  Effect.gen(function*() {
    const before = dateFlag(args.flags.before)
    if (before === null || before === undefined) return yield* usageError("archive needs --before <date>")
    const result = yield* archive(sql, before, { dryRun: args.flags["dry-run"] === true }).pipe(Effect.either)
    if (result._tag === "Left") {
      if (result.left._tag !== "ArchiveRefused") return yield* Effect.fail(result.left)
      yield* Console.error(`archive refused: ${result.left.message}`)
      return ExitCode.refused
    }
    const r = result.right
    yield* Console.log(
      `${r.dryRun ? "would move" : "moved"} ${r.moved} event(s) older than ${r.before} to step_journal_archive; ` +
        `${r.kept} kept (the last event of their stream)`
    )
    return ExitCode.ok
  })

const statusCommand: Command = (sql, _args, json) =>
  Effect.gen(function*() {
    const l = yield* lag(sql)
    const at = yield* readCheckpoint(sql, "public")
    yield* json
      ? printJson(l)
      : Console.log(`projector checkpoint: ${checkpointText(at)}; ${l.eventsBehind} journal event(s) behind`)
    return ExitCode.ok
  })

const commands: Readonly<Record<string, Command>> = {
  explain: explainCommand,
  verify: verifyCommand,
  rebuild: rebuildCommand,
  "what-if": whatIfCommand,
  archive: archiveCommand,
  status: statusCommand
}

const commandOf = (args: Args): Command | undefined =>
  args.command === undefined || !Object.hasOwn(commands, args.command) ? undefined : commands[args.command]

const unknownCommand = (args: Args) =>
  usageError(args.command === undefined ? "no command given" : `unknown command ${JSON.stringify(args.command)}`)

export const run = (args: Args): Effect.Effect<number, unknown, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const command = commandOf(args)
    if (command === undefined) return yield* unknownCommand(args)
    return yield* command(yield* SqlClient.SqlClient, args, args.flags.json === true)
  })

const Storage = Layer.provideMerge(MigrationsLive, DatabaseLive)

// Logs go to stderr (stdout carries the report, or JSON with --json), warnings and up.
const CliLogger = Layer.merge(
  Logger.replace(Logger.defaultLogger, Logger.withConsoleError(Logger.logfmtLogger)),
  Logger.minimumLogLevel(LogLevel.Warning)
)

if (import.meta.url === `file://${process.argv[1]}`) {
  const args = parseArgs(process.argv.slice(2))
  // A mistyped command opens no store: the embedded one alone takes seconds and ~300 MB to start.
  const main = commandOf(args) === undefined ? unknownCommand(args) : run(args).pipe(
    Effect.provide(Storage),
    // The embedded store held by a running gateway (StoreLock.ts): its message alone says what to do.
    Effect.catchIf(
      (e): e is SqlError => e instanceof SqlError && e.cause instanceof StoreInUse,
      (e) => Effect.as(Console.error(`journal: ${e.message}`), ExitCode.failure)
    )
  )
  main.pipe(
    Effect.provide(CliLogger),
    NodeRuntime.runMain({
      disablePrettyLogger: true,
      teardown: (exit, onExit) => onExit(Exit.isSuccess(exit) && typeof exit.value === "number" ? exit.value : ExitCode.failure)
    })
  )
}
