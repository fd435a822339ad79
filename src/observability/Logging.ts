/**
 * The gateway's log output: every `Effect.log*` goes through the one logger chosen here.
 *
 * - `AWOOOP_LOG_FORMAT`: `json` (default: one JSON object per line, for a log shipper), `pretty`
 *   (Effect's coloured multi-line logger, for a human at a terminal) or `logfmt`.
 * - `AWOOOP_LOG_LEVEL`: `trace`, `debug`, `info` (default), `warning`, `error`, `fatal` or `none`.
 *
 * The JSON line is flat — `time`, `level`, `msg`, then the log annotations as top-level fields
 * (`traceId`, `runId`, `lane`, …), `cause` and `spans` when present — rather than Effect's
 * `Logger.json`, which nests the annotations under `annotations`: a shipper can index the fields as
 * they are. Nothing here adds a prompt or a key; what a line holds is what its caller annotates
 * (RequestLog.ts, StateLog in RunObserver.ts).
 */
import { Cause, Config, ConfigError, Effect, Either, HashMap, Layer, List, Logger, LogLevel } from "effect"

export type LogFormat = "json" | "pretty" | "logfmt"

const text = (message: unknown): string => {
  if (typeof message === "string") return message
  if (message instanceof Error) return message.message
  try {
    return JSON.stringify(message) ?? String(message)
  } catch {
    return String(message)
  }
}

/**
 * A line that brings its own fields (RequestLog's line per request): every logger shows them as it
 * shows annotations, but the JSON logger reads them straight from the object instead of building a
 * fiber's annotation map for one line (~14 HashMap updates and a copy of the fiber's refs).
 */
export class FieldLine {
  constructor(readonly text: string, readonly fields: Readonly<Record<string, unknown>>) {}
}

const byKey = ([a]: readonly [string, unknown], [b]: readonly [string, unknown]) => (a < b ? -1 : a > b ? 1 : 0)

/** One flat JSON object per line (see the module comment). */
export const flatJsonLogger = Logger.make<unknown, string>(({ annotations, cause, date, logLevel, message, spans }) => {
  const messages = Array.isArray(message) ? message : [message]
  const own = messages.length === 1 && messages[0] instanceof FieldLine ? messages[0] : null
  const line: Record<string, unknown> = {
    time: date.toISOString(),
    level: logLevel.label.toLowerCase(),
    msg: own === null ? messages.map(text).join(" ") : own.text
  }
  // Sorted: the same fields in the same order on every line (annotations carry no order of their own).
  const fields: Array<readonly [string, unknown]> = HashMap.toEntries(annotations)
  if (own !== null) fields.push(...Object.entries(own.fields))
  for (const [key, value] of fields.sort(byKey)) {
    if (!(key in line)) line[key] = value
  }
  if (!Cause.isEmpty(cause)) line.cause = Cause.pretty(cause, { renderErrorCause: true })
  if (List.isCons(spans)) {
    const now = date.getTime()
    const out: Record<string, number> = {}
    for (const span of spans) out[span.label] = now - span.startTime
    line.spans = out
  }
  try {
    return JSON.stringify(line)
  } catch {
    // An annotation that cannot be encoded (a cycle, a bigint) must not lose the line.
    return JSON.stringify({ time: line.time, level: line.level, msg: line.msg, logError: "annotations not encodable" })
  }
})

/**
 * Lines logged in one turn of the event loop leave stdout in one write: stdout to a pipe or a file
 * is a synchronous syscall per write, and one per request line was a measurable share of the
 * gateway's CPU at concurrency 32 (BENCHMARKS.md). What is pending is written when the turn ends, and
 * on the way out of the process ('exit'), so the last lines of a stop are not lost.
 */
export const makeLineBuffer = (write: (text: string) => void) => {
  let pending: Array<string> = []
  const flush = () => {
    if (pending.length === 0) return
    const text = pending.join("\n") + "\n"
    pending = []
    write(text)
  }
  return {
    line: (line: string): void => {
      if (pending.push(line) === 1) setImmediate(flush)
    },
    flush
  }
}

let stdoutLines: ReturnType<typeof makeLineBuffer> | null = null
/** The process's one buffer for stdout (shared by every logger, so lines keep their order). */
const stdout = () => {
  if (stdoutLines === null) {
    const buffer = makeLineBuffer((text) => process.stdout.write(text))
    process.on("exit", buffer.flush)
    // As console.log does: a reader that went away (EPIPE) must not stop the gateway.
    process.stdout.on("error", () => {})
    stdoutLines = buffer
  }
  return stdoutLines
}

const toStdout = (logger: Logger.Logger<unknown, string>): Logger.Logger<unknown, void> =>
  Logger.make((options) => stdout().line(logger.log(options)))

/** For the loggers that know only annotations: a FieldLine's fields become annotations of its line. */
const withFieldLines = <O>(logger: Logger.Logger<unknown, O>): Logger.Logger<unknown, O> =>
  Logger.mapInputOptions(logger, (options) => {
    const message = Array.isArray(options.message) && options.message.length === 1 ? options.message[0] : options.message
    if (!(message instanceof FieldLine)) return options
    let annotations = options.annotations
    for (const [key, value] of Object.entries(message.fields)) annotations = HashMap.set(annotations, key, value)
    return { ...options, message: message.text, annotations }
  })

const loggerOf = (format: LogFormat): Logger.Logger<unknown, void> => {
  switch (format) {
    case "json": return toStdout(flatJsonLogger)
    case "logfmt": return toStdout(withFieldLines(Logger.logfmtLogger))
    case "pretty": return withFieldLines(Logger.prettyLogger())
  }
}

const levels: Readonly<Record<string, LogLevel.LogLevel>> = {
  all: LogLevel.All,
  trace: LogLevel.Trace,
  debug: LogLevel.Debug,
  info: LogLevel.Info,
  warning: LogLevel.Warning,
  warn: LogLevel.Warning,
  error: LogLevel.Error,
  fatal: LogLevel.Fatal,
  none: LogLevel.None
}

/** The logger for `format` at `level`, in place of Effect's default logger. */
export const layer = (format: LogFormat, level: LogLevel.LogLevel): Layer.Layer<never> =>
  Layer.merge(Logger.replace(Logger.defaultLogger, loggerOf(format)), Logger.minimumLogLevel(level))

export const LoggingConfig = Config.all({
  format: Config.literal("json", "pretty", "logfmt")("AWOOOP_LOG_FORMAT").pipe(Config.withDefault("json" as const)),
  level: Config.string("AWOOOP_LOG_LEVEL").pipe(
    Config.withDefault("info"),
    Config.mapOrFail((s) => {
      const level = levels[s.trim().toLowerCase()]
      return level === undefined
        ? Either.left(ConfigError.InvalidData(["AWOOOP_LOG_LEVEL"], `expected one of ${Object.keys(levels).join(", ")}, got ${JSON.stringify(s)}`))
        : Either.right(level)
    })
  )
})

/**
 * Runs `program` (the whole service) with the logger `AWOOOP_LOG_FORMAT` / `AWOOOP_LOG_LEVEL` ask
 * for, and logs how it failed (not an interruption: that is a normal stop) through that logger. A bad
 * setting is itself logged, as JSON, and fails.
 */
export const withLoggingFromEnv = <A, E, R>(program: Effect.Effect<A, E, R>): Effect.Effect<A, E | ConfigError.ConfigError, R> =>
  Effect.flatMap(Effect.either(LoggingConfig), (config): Effect.Effect<A, E | ConfigError.ConfigError, R> =>
    config._tag === "Left"
      ? Effect.zipRight(
        Effect.logFatal("bad logging settings", Cause.fail(config.left)).pipe(Effect.provide(layer("json", LogLevel.Info))),
        Effect.fail(config.left)
      )
      : program.pipe(
        Effect.tapErrorCause((cause) => Cause.isInterruptedOnly(cause) ? Effect.void : Effect.logFatal("the gateway stopped on an error", cause)),
        Effect.provide(layer(config.right.format, config.right.level))
      ))
