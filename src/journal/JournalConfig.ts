/**
 * The journal's settings: queue capacity, batch size, group-commit linger, timeouts, retry delays
 * and the spill folder. The defaults apply unless a layer provides others (`journalConfigLayer` in
 * tests and tools, `JournalConfigFromEnv` in the gateway).
 */
import { Config, Context, Duration, Effect, Layer } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

export interface JournalConfigShape {
  /** queue capacity in items (events + durable markers); default 10 000 */
  readonly capacity: number
  /** maximum items per INSERT; default 512 */
  readonly batchSize: number
  /**
   * Group commit: a batch that is not full waits this long (wall clock) for more events before it
   * is written; a durable append, a flush or the shutdown ends the wait at once. Default 10 ms: at
   * low rates each request would otherwise cost its own INSERT and commit, on the same two cores
   * as the requests (BENCHMARKS.md). Events are in memory that much longer (a crash loses them, as
   * it loses the queue). 0 writes at once.
   */
  readonly linger: Duration.DurationInput
  /** how long closing the journal may take to drain the queue; default 10 s */
  readonly shutdownTimeout: Duration.DurationInput
  /** first retry delay after a failed write; default 50 ms */
  readonly retryBase: Duration.DurationInput
  /** longest retry delay; default 2 s */
  readonly retryCap: Duration.DurationInput
  /** a write that takes longer counts as failed and its batch is spilled; default 5 s */
  readonly writeTimeout: Duration.DurationInput
  /** where batches go while Postgres cannot take them; default ./.data/spill */
  readonly spillDir: string
}

export const journalConfigDefaults: JournalConfigShape = {
  capacity: 10_000,
  batchSize: 512,
  linger: Duration.millis(10),
  shutdownTimeout: Duration.seconds(10),
  retryBase: Duration.millis(50),
  retryCap: Duration.seconds(2),
  writeTimeout: Duration.seconds(5),
  spillDir: "./.data/spill"
}

/** Journal settings; the defaults apply unless a layer provides others. */
// Without explicit settings (tests, tools) each journal spills to a fresh temporary folder of its
// own, made when the journal starts (`withOwnSpillDir`, Journal.ts), so two journals never replay
// each other's spill; the gateway itself reads AWOOOP_SPILL_DIR. The folder cannot be made in the
// Reference's `defaultValue`: Effect computes that once per process (a global cache by key), so every
// journal of a process without settings shared one folder, and one that closed with events still
// spilled handed them to the next one, which replayed them into its own database.
// Such a folder is removed again when its journal closes with nothing spilled in it.
const freshSpillDirs = new Set<string>()
const freshSpillDir = () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "awooop-spill-"))
  freshSpillDirs.add(dir)
  return dir
}

/** The `spillDir` of settings that name no folder: the journal makes a fresh temporary one. */
export const FRESH_SPILL_DIR = "(a fresh temporary folder per journal)"

/** The settings a journal runs with: `FRESH_SPILL_DIR` replaced by a new temporary folder of its own. */
export const withOwnSpillDir = (config: JournalConfigShape): JournalConfigShape =>
  config.spillDir === FRESH_SPILL_DIR ? { ...config, spillDir: freshSpillDir() } : config

/** True (once) when `dir` is a temporary folder made for a journal without settings: it may be removed. */
export const forgetFreshSpillDir = (dir: string): boolean => freshSpillDirs.delete(dir)

export class JournalConfig extends Context.Reference<JournalConfig>()("awooop/JournalConfig", {
  defaultValue: (): JournalConfigShape => ({ ...journalConfigDefaults, spillDir: FRESH_SPILL_DIR })
}) {}

/** Provide `JournalConfig` with some settings overridden. */
export const journalConfigLayer = (options: Partial<JournalConfigShape>): Layer.Layer<never> =>
  Layer.succeed(JournalConfig, { ...journalConfigDefaults, spillDir: FRESH_SPILL_DIR, ...options })

/**
 * `JournalConfig` from the environment: `AWOOOP_JOURNAL_CAPACITY`, `AWOOOP_JOURNAL_BATCH_SIZE`,
 * `AWOOOP_JOURNAL_SHUTDOWN_TIMEOUT` (a duration, e.g. "10 seconds"); each falls back to its default.
 */
export const JournalConfigFromEnv = Layer.effect(
  JournalConfig,
  Config.all({
    capacity: Config.integer("AWOOOP_JOURNAL_CAPACITY").pipe(
      Config.validate({ message: "must be ≥ 1", validation: (n) => n >= 1 }),
      Config.withDefault(journalConfigDefaults.capacity)
    ),
    batchSize: Config.integer("AWOOOP_JOURNAL_BATCH_SIZE").pipe(
      Config.validate({ message: "must be ≥ 1", validation: (n) => n >= 1 }),
      Config.withDefault(journalConfigDefaults.batchSize)
    ),
    linger: Config.duration("AWOOOP_JOURNAL_LINGER").pipe(
      Config.withDefault(Duration.decode(journalConfigDefaults.linger))
    ),
    shutdownTimeout: Config.duration("AWOOOP_JOURNAL_SHUTDOWN_TIMEOUT").pipe(
      Config.withDefault(Duration.decode(journalConfigDefaults.shutdownTimeout))
    ),
    spillDir: Config.string("AWOOOP_SPILL_DIR").pipe(Config.withDefault(journalConfigDefaults.spillDir))
  }).pipe(Effect.map((c): JournalConfigShape => ({ ...journalConfigDefaults, ...c })))
)
