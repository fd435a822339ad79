/**
 * The gateway's config file: hosts, breaker, policy, legacy bootstrap rules, lanes, and the paid
 * providers with their prices and budget.
 * The keys in the issue's example are a public contract: operators and tests write them.
 */
import { Context, Effect, Either, Layer, ParseResult, Schema } from "effect"
import * as Config from "effect/Config"
import * as fs from "node:fs"
import * as YAML from "yaml"
import { AnonymousConfig, applyCallerKeys, CallerConfig, callerIssues } from "./Callers.ts"
import { DurationMs } from "./Duration.ts"
import { packagePath } from "./PackagePaths.ts"

const PositiveInt = Schema.Int.pipe(Schema.greaterThanOrEqualTo(1))
const NonNegativeInt = Schema.Int.pipe(Schema.greaterThanOrEqualTo(0))
const Name = Schema.String.pipe(Schema.pattern(/^[A-Za-z0-9._:-]{1,64}$/, {
  message: () => "expected a name of letters, digits, '.', '_', ':' or '-' (1-64 characters)"
}))

const HttpUrl = Schema.String.pipe(Schema.filter((s) => {
  try {
    const u = new URL(s)
    return (u.protocol === "http:" || u.protocol === "https:") || `expected an http(s) URL, got ${JSON.stringify(s)}`
  } catch {
    return `expected an http(s) URL, got ${JSON.stringify(s)}`
  }
}))

export const HostConfig = Schema.Struct({
  url: HttpUrl,
  slots: PositiveInt,
  protected: Schema.optionalWith(Schema.Boolean, { default: () => false })
})
export type HostConfig = typeof HostConfig.Type

export const BreakerConfig = Schema.Struct({
  consecutiveTimeouts: Schema.optionalWith(PositiveInt, { default: () => 2 }),
  cooldown: Schema.optionalWith(DurationMs, { default: () => 30_000 })
})

export const PolicyConfig = Schema.Struct({
  heavyModelMinParamsB: Schema.optionalWith(Schema.Number.pipe(Schema.positive()), { default: () => 14 })
})

export const LegacyConfig = Schema.Struct({
  projectId: Schema.optionalWith(Name, { default: () => "awoooi" }),
  lanes: Schema.optionalWith(Schema.Record({ key: Schema.String, value: Name }), { default: () => ({}) })
})

export const RouteStep = Schema.Struct({
  host: Name,
  timeout: DurationMs,
  /** "always" (default) or "unavailable": taken only when every earlier step was down or circuit-open. */
  when: Schema.optionalWith(Schema.Literal("always", "unavailable"), { default: () => "always" as const })
})
export type RouteStep = typeof RouteStep.Type

export const QueueConfig = Schema.Struct({
  /** Requests admitted to the lane at once (running plus waiting for a slot); beyond it → 503. */
  capacity: Schema.optionalWith(PositiveInt, { default: () => 256 }),
  /** How long an admitted request may wait for a free slot on its route before 503. */
  maxWait: Schema.optionalWith(DurationMs, { default: () => 10_000 })
})

export const LaneConfig = Schema.Struct({
  /** Required for a lane with a route; a `paid` lane answers with its providers' models (default ""). */
  model: Schema.optionalWith(Schema.String, { default: () => "" }),
  reserved: Schema.optionalWith(Schema.Record({ key: Name, value: NonNegativeInt }), { default: () => ({}) }),
  keepWarm: Schema.optionalWith(Schema.Array(Name), { default: () => [] }),
  /** The Ollama steps; may be left out only by a lane that calls `paid` providers directly. */
  route: Schema.optionalWith(Schema.Array(RouteStep), { default: () => [] }),
  /** Paid providers tried (in order) once every Ollama step failed or is circuit-open, within the budget. */
  paidFallback: Schema.optionalWith(Schema.Array(Name), { default: () => [] }),
  /** A lane that calls these paid providers directly (the runbook's `paid-emergency`), within the budget. */
  paid: Schema.optionalWith(Schema.Array(Name), { default: () => [] }),
  async: Schema.optionalWith(Schema.Boolean, { default: () => false }),
  mode: Schema.optionalWith(Schema.Literal("active", "shadow"), { default: () => "active" as const }),
  queue: Schema.optionalWith(QueueConfig, { default: () => ({ capacity: 256, maxWait: 10_000 }) })
})
export type LaneConfig = typeof LaneConfig.Type

/** Bounds on the work one request (and all unfinished bodies together) can cause (http/RequestLimits.ts). */
const RequestLimitFields = {
  /** JSON nested deeper than this (objects and arrays) → 400, before the body is parsed. */
  maxJsonDepth: Schema.optionalWith(PositiveInt, { default: () => 64 }),
  /** A chat with more messages than this → 400, before the body is validated. */
  maxMessages: Schema.optionalWith(PositiveInt, { default: () => 10_000 }),
  /** Bytes of unfinished request bodies held at once, all connections together; beyond → 503. */
  maxInFlightBodyBytes: Schema.optionalWith(PositiveInt, { default: () => 64 * 1024 * 1024 }),
  /** The same for the connections of one client address. */
  maxInFlightBodyBytesPerClient: Schema.optionalWith(PositiveInt, { default: () => 32 * 1024 * 1024 })
}
export const requestLimitDefaults = { maxJsonDepth: 64, maxMessages: 10_000, maxInFlightBodyBytes: 64 * 1024 * 1024, maxInFlightBodyBytesPerClient: 32 * 1024 * 1024 }

export const ServerConfig = Schema.Struct({
  /** Request bodies above this many bytes are refused with 413. */
  maxBodyBytes: Schema.optionalWith(PositiveInt, { default: () => 8 * 1024 * 1024 }),
  /** How often each host actor polls /api/ps and /api/tags. */
  pollInterval: Schema.optionalWith(DurationMs, { default: () => 5_000 }),
  /** Timeout for a poll and for the fan-out routes (tags, ps, show). */
  probeTimeout: Schema.optionalWith(DurationMs, { default: () => 2_000 }),
  /** How long SIGTERM waits for in-flight requests before closing. */
  drainTimeout: Schema.optionalWith(DurationMs, { default: () => 30_000 }),
  /** A client must send its request headers within this (slow-loris guard). */
  headersTimeout: Schema.optionalWith(DurationMs, { default: () => 10_000 }),
  /** A client must send its whole request (headers and body) within this. */
  requestTimeout: Schema.optionalWith(DurationMs, { default: () => 60_000 }),
  /** Journal prompts and messages. Off by default: prompts may hold customer data. */
  journalPrompts: Schema.optionalWith(Schema.Boolean, { default: () => false }),
  /** keep_alive of keep-warm's load requests; they are repeated at half of it (see operations/KeepWarm.ts). */
  keepWarmKeepAlive: Schema.optionalWith(DurationMs, { default: () => 600_000 }),
  ...RequestLimitFields,
  /**
   * Persist a run's terminal event (committed, or fsync'd to the journal's spill) before the last
   * byte reaches the caller. Off by default: the end then sits in memory for up to the journal's
   * linger plus one write (README "Reliability").
   */
  durableRunEnd: Schema.optionalWith(Schema.Boolean, { default: () => false })
})

/** Async runs (lanes with `async: true`, and POST /awooop/runs): their own workers, apart from the synchronous traffic. */
export const AsyncRunsConfig = Schema.Struct({
  /** Runs executed at once across all lanes; the rest wait queued. */
  workers: Schema.optionalWith(PositiveInt, { default: () => 2 })
})

const Usd = Schema.Number.pipe(Schema.finite(), Schema.greaterThanOrEqualTo(0))

/** A paid provider. The API key is read from the environment variable `apiKeyEnv`, never from this file. */
export const ProviderConfig = Schema.Struct({
  kind: Schema.Literal("gemini", "anthropic"),
  model: Schema.String.pipe(Schema.minLength(1)),
  apiKeyEnv: Schema.String.pipe(Schema.pattern(/^[A-Za-z_][A-Za-z0-9_]*$/, {
    message: () => "expected the NAME of an environment variable (the key itself never goes in the config)"
  })),
  /** Default: the provider's public endpoint. Tests point it at a loopback fake. */
  baseUrl: Schema.optional(HttpUrl),
  /** A call (or, when streaming, the first chunk and each gap between chunks) must come within this. */
  timeout: Schema.optionalWith(DurationMs, { default: () => 60_000 }),
  /** Output cap when the request sets no (or a larger) num_predict; it bounds the worst-case cost reserved. */
  maxOutputTokens: Schema.optionalWith(PositiveInt, { default: () => 1024 })
})
export type ProviderConfig = typeof ProviderConfig.Type

/** USD per token, whichever way the config wrote it. */
export interface Price {
  readonly inputPerToken: number
  readonly outputPerToken: number
}

// A price entry: USD per million tokens ({ input, output }), or a LiteLLM model_prices entry (USD per
// token; its other fields such as litellm_provider or max_tokens are ignored).
const PerMillionPrice = Schema.Struct({ input: Usd, output: Usd })
const LiteLlmPrice = Schema.Struct(
  { input_cost_per_token: Usd, output_cost_per_token: Usd },
  Schema.Record({ key: Schema.String, value: Schema.Unknown })
)
export const PriceEntry = Schema.transform(
  Schema.Union(PerMillionPrice, LiteLlmPrice),
  Schema.Struct({ inputPerToken: Usd, outputPerToken: Usd }),
  {
    strict: true,
    decode: (p) =>
      "input_cost_per_token" in p
        ? { inputPerToken: p.input_cost_per_token, outputPerToken: p.output_cost_per_token }
        : { inputPerToken: p.input / 1e6, outputPerToken: p.output / 1e6 },
    encode: (p) => ({ input: p.inputPerToken * 1e6, output: p.outputPerToken * 1e6 })
  }
)

export const BudgetConfig = Schema.Struct({
  /** Paid spending (settled plus reserved) in one period never exceeds this. */
  hardKillUsd: Usd,
  /** The budget period, in UTC. */
  period: Schema.optionalWith(Schema.Literal("hour", "day", "month"), { default: () => "day" as const })
})
export type BudgetConfig = typeof BudgetConfig.Type

/** The price of a model: its own entry, else LiteLLM's provider-prefixed key ("gemini/…", "anthropic/…"). */
export const priceOf = (
  prices: Readonly<Record<string, Price>>,
  model: string,
  kind?: ProviderConfig["kind"]
): Price | undefined => {
  const own = (key: string) => (Object.hasOwn(prices, key) ? prices[key] : undefined)
  return own(model) ?? (kind === undefined ? undefined : own(`${kind}/${model}`))
}

const GatewayConfigFields = Schema.Struct({
  hosts: Schema.Record({ key: Name, value: HostConfig }),
  breaker: Schema.optionalWith(BreakerConfig, { default: () => ({ consecutiveTimeouts: 2, cooldown: 30_000 }) }),
  policy: Schema.optionalWith(PolicyConfig, { default: () => ({ heavyModelMinParamsB: 14 }) }),
  legacy: Schema.optionalWith(LegacyConfig, { default: () => ({ projectId: "awoooi", lanes: {} }) }),
  lanes: Schema.Record({ key: Name, value: LaneConfig }),
  server: Schema.optionalWith(ServerConfig, {
    default: () => ({ maxBodyBytes: 8 * 1024 * 1024, pollInterval: 5_000, probeTimeout: 2_000, drainTimeout: 30_000, headersTimeout: 10_000, requestTimeout: 60_000, journalPrompts: false, keepWarmKeepAlive: 600_000, durableRunEnd: false, ...requestLimitDefaults })
  }),
  providers: Schema.optionalWith(Schema.Record({ key: Name, value: ProviderConfig }), { default: () => ({}) }),
  prices: Schema.optionalWith(Schema.Record({ key: Schema.String, value: PriceEntry }), { default: () => ({}) }),
  budget: Schema.optional(BudgetConfig),
  asyncRuns: Schema.optionalWith(AsyncRunsConfig, { default: () => ({ workers: 2 }) }),
  /** Present: every request must be a known caller's (bearer key) or anonymous's (config/Callers.ts). */
  callers: Schema.optional(Schema.Record({ key: Name, value: CallerConfig })),
  anonymous: Schema.optional(AnonymousConfig)
}, Schema.Record({ key: Schema.String, value: Schema.Unknown })) // later issues' keys pass through

/** Cross-references: every host a lane names exists, and reservations fit in the host's slots. */
export const GatewayConfigSchema = GatewayConfigFields.pipe(Schema.filter((config) => {
  const issues: Array<Schema.FilterIssue> = []
  for (const [laneName, lane] of Object.entries(config.lanes)) {
    const check = (where: ReadonlyArray<PropertyKey>, host: string) => {
      if (!(host in config.hosts)) {
        issues.push({ path: ["lanes", laneName, ...where], message: `unknown host ${JSON.stringify(host)} (hosts: ${Object.keys(config.hosts).join(", ")})` })
      }
    }
    lane.route.forEach((step, i) => check(["route", i, "host"], step.host))
    Object.keys(lane.reserved).forEach((host) => check(["reserved", host], host))
    lane.keepWarm.forEach((host, i) => check(["keepWarm", i], host))
    if (lane.route.length === 0 && lane.paidFallback.length === 0 && lane.paid.length === 0) {
      issues.push({ path: ["lanes", laneName, "route"], message: "a lane needs at least one route step" })
    }
    if (lane.paid.length === 0 && lane.model === "") {
      issues.push({ path: ["lanes", laneName, "model"], message: "a lane with an Ollama route needs a model" })
    }
    if (lane.paid.length > 0 && (lane.route.length > 0 || lane.paidFallback.length > 0)) {
      issues.push({ path: ["lanes", laneName, "paid"], message: "a `paid` lane calls its providers directly: it takes no `route` or `paidFallback`" })
    }
    for (const key of ["paidFallback", "paid"] as const) {
      lane[key].forEach((provider, i) => {
        const known = config.providers[provider]
        if (known === undefined) {
          issues.push({ path: ["lanes", laneName, key, i], message: `unknown provider ${JSON.stringify(provider)} (providers: ${Object.keys(config.providers).join(", ") || "none"})` })
        } else if (priceOf(config.prices, known.model, known.kind) === undefined) {
          issues.push({ path: ["prices"], message: `no price for ${JSON.stringify(known.model)} (provider ${provider}): a paid call's worst-case cost cannot be reserved without it` })
        }
      })
      if (lane[key].length > 0 && config.budget === undefined) {
        issues.push({ path: ["lanes", laneName, key], message: "paid providers need a `budget` with hardKillUsd" })
      }
    }
    if (lane.route[0]?.when === "unavailable") {
      issues.push({ path: ["lanes", laneName, "route", 0, "when"], message: "the first step cannot be conditional" })
    }
  }
  for (const [hostName, host] of Object.entries(config.hosts)) {
    const reserved = Object.values(config.lanes).reduce((sum, lane) => sum + (lane.reserved[hostName] ?? 0), 0)
    if (reserved > host.slots) {
      issues.push({ path: ["hosts", hostName, "slots"], message: `lanes reserve ${reserved} slots but the host has ${host.slots}` })
    }
  }
  issues.push(...callerIssues(config))
  for (const [model, lane] of Object.entries(config.legacy.lanes)) {
    if (!(lane in config.lanes)) issues.push({ path: ["legacy", "lanes", model], message: `unknown lane ${JSON.stringify(lane)}` })
  }
  return issues
}))
export type GatewayConfig = typeof GatewayConfigSchema.Type

export class ConfigLoadError extends Schema.TaggedError<ConfigLoadError>()("ConfigLoadError", {
  path: Schema.String,
  message: Schema.String
}) {}

/** The environment may override a host's URL: AWOOOP_HOST_GCP_A_URL for host "gcp-a", AWOOOP_HOST_111_URL for "111". */
export const hostUrlEnvName = (host: string) => `AWOOOP_HOST_${host.toUpperCase().replace(/[^A-Z0-9]/g, "_")}_URL`

const applyEnvOverrides = (raw: unknown, env: Record<string, string | undefined>): unknown => {
  if (typeof raw !== "object" || raw === null) return raw
  const hosts = (raw as { hosts?: unknown }).hosts
  if (typeof hosts !== "object" || hosts === null) return raw
  const next: Record<string, unknown> = {}
  for (const [name, host] of Object.entries(hosts)) {
    const url = env[hostUrlEnvName(name)]
    next[name] = url && typeof host === "object" && host !== null ? { ...host, url } : host
  }
  return { ...raw, hosts: next }
}

const decode = Schema.decodeUnknownEither(GatewayConfigSchema, { errors: "all", onExcessProperty: "error" })

/** Parses config text (YAML is a superset of JSON) and validates it; the error names each field path. */
export const parseConfig = (text: string, file: string, env: Record<string, string | undefined> = {}) =>
  Effect.gen(function*() {
    const raw = yield* Effect.try({
      try: () => YAML.parse(text) as unknown,
      catch: (e) => new ConfigLoadError({ path: file, message: `${file}: not valid YAML/JSON: ${(e as Error).message}` })
    })
    const result = decode(applyCallerKeys(applyEnvOverrides(raw, env), env))
    if (Either.isLeft(result)) {
      const issues = ParseResult.ArrayFormatter.formatErrorSync(result.left)
      const at = (path: ReadonlyArray<PropertyKey>) => path.length ? path.join(".") : "(root)"
      // An optional key with a bad value also fails the union's `undefined` member ("Expected
      // undefined, actual …"): noise that reads as "remove this key", so it is dropped when the
      // real problem at or under the same path is reported.
      const lines = issues
        .filter((issue) =>
          !(issue.message.startsWith("Expected undefined, actual") &&
            issues.some((other) => other !== issue && (at(other.path) === at(issue.path) || at(other.path).startsWith(`${at(issue.path)}.`))))
        )
        .map((issue) => `  at ${at(issue.path)}: ${issue.message}`)
      return yield* new ConfigLoadError({ path: file, message: `${file}: invalid gateway config\n${lines.join("\n")}` })
    }
    return result.right
  })

export const loadConfigFile = (file: string, env: Record<string, string | undefined> = process.env) =>
  Effect.gen(function*() {
    const text = yield* Effect.try({
      try: () => fs.readFileSync(file, "utf8"),
      catch: (e) => new ConfigLoadError({ path: file, message: `cannot read config ${file}: ${(e as Error).message}` })
    })
    return yield* parseConfig(text, file, env)
  })

export const defaultConfigPath = packagePath(import.meta.url, "config", "gateway.example.yaml")

/** The loaded config as a service. */
export class GatewayConfigTag extends Context.Tag("awooop/GatewayConfig")<GatewayConfigTag, GatewayConfig>() {
  /** Reads AWOOOP_CONFIG (default: the shipped example). */
  static readonly fromEnv = Layer.effect(
    GatewayConfigTag,
    Effect.gen(function*() {
      const file = yield* Config.string("AWOOOP_CONFIG").pipe(Config.withDefault(defaultConfigPath))
      return yield* loadConfigFile(file)
    })
  )
  static readonly layerOf = (config: GatewayConfig) => Layer.succeed(GatewayConfigTag, config)
}
