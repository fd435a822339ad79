// bench/lane-micro.ts
import { Effect as Effect14, Exit as Exit8, Scope as Scope3 } from "effect";

// src/config/GatewayConfig.ts
import { Context, Effect, Either, Layer, ParseResult as ParseResult2, Schema as Schema3 } from "effect";
import * as Config from "effect/Config";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import * as YAML from "yaml";

// src/config/Callers.ts
import { createHash } from "node:crypto";
import { Schema } from "effect";
var Name = Schema.String.pipe(Schema.pattern(/^[A-Za-z0-9._:-]{1,64}$/, {
  message: () => "expected a name of letters, digits, '.', '_', ':' or '-' (1-64 characters)"
}));
var EnvName = Schema.String.pipe(Schema.pattern(/^[A-Za-z_][A-Za-z0-9_]*$/, {
  message: () => "expected the NAME of an environment variable (the key itself never goes in the config)"
}));
var unsetPrefix = "unset-env:";
var KeyDigest = Schema.String.pipe(Schema.filter(
  (s) => /^[0-9a-f]{64}$/.test(s) || (s.startsWith(unsetPrefix) ? `keyEnv ${s.slice(unsetPrefix.length)}: the environment variable is not set or empty` : `expected the key's sha256 as 64 lowercase hex digits (printf %s "$KEY" | sha256sum)`)
));
var Usd = Schema.Number.pipe(Schema.finite(), Schema.greaterThanOrEqualTo(0));
var CallerBudget = Schema.Struct({
  /** This caller's paid spending (settled plus reserved) per period never exceeds this. */
  hardKillUsd: Usd,
  period: Schema.optionalWith(Schema.Literal("hour", "day", "month"), { default: () => "day" })
});
var CallerConfig = Schema.Struct({
  /** Environment variable(s) holding the bearer key (read at start-up; hashed, never kept). */
  keyEnv: Schema.optionalWith(Schema.Array(EnvName), { default: () => [] }),
  /** sha256 (hex) of the key(s); keyEnv's keys are added here when the config is loaded. */
  keySha256: Schema.optionalWith(Schema.Array(KeyDigest), { default: () => [] }),
  project: Name,
  lanes: Schema.Array(Name),
  budget: Schema.optional(CallerBudget),
  /** May this caller's requests fall back to (or call) paid providers; default true for a keyed caller. */
  paidFallback: Schema.optionalWith(Schema.Boolean, { default: () => true })
});
var AnonymousConfig = Schema.Struct({
  project: Name,
  lanes: Schema.optionalWith(Schema.Array(Name), { default: () => [] }),
  /** Default false: anonymous traffic never spends money. */
  paidFallback: Schema.optionalWith(Schema.Boolean, { default: () => false })
});
var keyDigest = (key) => createHash("sha256").update(key, "utf8").digest("hex");
var applyCallerKeys = (raw, env) => {
  if (typeof raw !== "object" || raw === null) return raw;
  const callers = raw.callers;
  if (typeof callers !== "object" || callers === null || Array.isArray(callers)) return raw;
  const next2 = {};
  for (const [name, caller] of Object.entries(callers)) {
    if (typeof caller !== "object" || caller === null) {
      next2[name] = caller;
      continue;
    }
    const c = caller;
    const list = (v) => v === void 0 ? void 0 : Array.isArray(v) ? v : [v];
    const envNames = list(c.keyEnv) ?? [];
    const fromEnv = envNames.filter((n) => typeof n === "string").map((n) => {
      const key = env[n];
      return key === void 0 || key === "" ? `${unsetPrefix}${n}` : keyDigest(key);
    });
    const given = list(c.keySha256);
    next2[name] = {
      ...caller,
      ...c.keyEnv === void 0 ? {} : { keyEnv: envNames },
      ...given === void 0 && fromEnv.length === 0 ? {} : { keySha256: [...given ?? [], ...fromEnv] }
    };
  }
  return { ...raw, callers: next2 };
};
var callerIssues = (config) => {
  const issues = [];
  const lanes = Object.keys(config.lanes);
  const checkLanes = (path4, names) => names.forEach((lane, i) => {
    if (!lanes.includes(lane)) issues.push({ path: [...path4, i], message: `unknown lane ${JSON.stringify(lane)} (lanes: ${lanes.join(", ")})` });
  });
  const owner = /* @__PURE__ */ new Map();
  for (const [name, caller] of Object.entries(config.callers ?? {})) {
    checkLanes(["callers", name, "lanes"], caller.lanes);
    if (caller.keySha256.length === 0) {
      issues.push({ path: ["callers", name], message: "a caller needs a key: keyEnv (an environment variable) or keySha256" });
    }
    for (const digest of caller.keySha256) {
      const other = owner.get(digest);
      if (other !== void 0 && other !== name) issues.push({ path: ["callers", name, "keySha256"], message: `the same key is also caller ${other}'s` });
      owner.set(digest, name);
    }
    if (caller.budget !== void 0 && config.budget === void 0) {
      issues.push({ path: ["callers", name, "budget"], message: "a caller's budget lies inside the global one: set `budget` with hardKillUsd too" });
    }
  }
  if (config.anonymous !== void 0) checkLanes(["anonymous", "lanes"], config.anonymous.lanes);
  return issues;
};

// src/config/Duration.ts
import { ParseResult, Schema as Schema2 } from "effect";
var pattern = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/;
var unitMs = { ms: 1, s: 1e3, m: 6e4, h: 36e5 };
var parseDurationMs = (text) => {
  const match = pattern.exec(text.trim());
  if (!match) return void 0;
  return Math.round(Number(match[1]) * unitMs[match[2]]);
};
var formatDurationMs = (ms) => ms % 36e5 === 0 && ms > 0 ? `${ms / 36e5}h` : ms % 6e4 === 0 && ms > 0 ? `${ms / 6e4}m` : ms % 1e3 === 0 ? `${ms / 1e3}s` : `${ms}ms`;
var DurationMs = Schema2.transformOrFail(Schema2.String, Schema2.Number, {
  strict: true,
  decode: (text, _, ast) => {
    const ms = parseDurationMs(text);
    return ms === void 0 || ms <= 0 ? ParseResult.fail(new ParseResult.Type(ast, text, `expected a duration like "500ms", "45s", "2m" or "1h", got ${JSON.stringify(text)}`)) : ParseResult.succeed(ms);
  },
  encode: (ms) => ParseResult.succeed(formatDurationMs(ms))
});

// src/config/GatewayConfig.ts
var PositiveInt = Schema3.Int.pipe(Schema3.greaterThanOrEqualTo(1));
var NonNegativeInt = Schema3.Int.pipe(Schema3.greaterThanOrEqualTo(0));
var Name2 = Schema3.String.pipe(Schema3.pattern(/^[A-Za-z0-9._:-]{1,64}$/, {
  message: () => "expected a name of letters, digits, '.', '_', ':' or '-' (1-64 characters)"
}));
var HttpUrl = Schema3.String.pipe(Schema3.filter((s) => {
  try {
    const u = new URL(s);
    return u.protocol === "http:" || u.protocol === "https:" || `expected an http(s) URL, got ${JSON.stringify(s)}`;
  } catch {
    return `expected an http(s) URL, got ${JSON.stringify(s)}`;
  }
}));
var HostConfig = Schema3.Struct({
  url: HttpUrl,
  slots: PositiveInt,
  protected: Schema3.optionalWith(Schema3.Boolean, { default: () => false })
});
var BreakerConfig = Schema3.Struct({
  consecutiveTimeouts: Schema3.optionalWith(PositiveInt, { default: () => 2 }),
  cooldown: Schema3.optionalWith(DurationMs, { default: () => 3e4 })
});
var PolicyConfig = Schema3.Struct({
  heavyModelMinParamsB: Schema3.optionalWith(Schema3.Number.pipe(Schema3.positive()), { default: () => 14 })
});
var LegacyConfig = Schema3.Struct({
  projectId: Schema3.optionalWith(Name2, { default: () => "awoooi" }),
  lanes: Schema3.optionalWith(Schema3.Record({ key: Schema3.String, value: Name2 }), { default: () => ({}) })
});
var RouteStep = Schema3.Struct({
  host: Name2,
  timeout: DurationMs,
  /** "always" (default) or "unavailable": taken only when every earlier step was down or circuit-open. */
  when: Schema3.optionalWith(Schema3.Literal("always", "unavailable"), { default: () => "always" })
});
var QueueConfig = Schema3.Struct({
  /** Requests admitted to the lane at once (running plus waiting for a slot); beyond it → 503. */
  capacity: Schema3.optionalWith(PositiveInt, { default: () => 256 }),
  /** How long an admitted request may wait for a free slot on its route before 503. */
  maxWait: Schema3.optionalWith(DurationMs, { default: () => 1e4 })
});
var LaneConfig = Schema3.Struct({
  /** Required for a lane with a route; a `paid` lane answers with its providers' models (default ""). */
  model: Schema3.optionalWith(Schema3.String, { default: () => "" }),
  reserved: Schema3.optionalWith(Schema3.Record({ key: Name2, value: NonNegativeInt }), { default: () => ({}) }),
  keepWarm: Schema3.optionalWith(Schema3.Array(Name2), { default: () => [] }),
  /** The Ollama steps; may be left out only by a lane that calls `paid` providers directly. */
  route: Schema3.optionalWith(Schema3.Array(RouteStep), { default: () => [] }),
  /** Paid providers tried (in order) once every Ollama step failed or is circuit-open, within the budget. */
  paidFallback: Schema3.optionalWith(Schema3.Array(Name2), { default: () => [] }),
  /** A lane that calls these paid providers directly (the runbook's `paid-emergency`), within the budget. */
  paid: Schema3.optionalWith(Schema3.Array(Name2), { default: () => [] }),
  async: Schema3.optionalWith(Schema3.Boolean, { default: () => false }),
  mode: Schema3.optionalWith(Schema3.Literal("active", "shadow"), { default: () => "active" }),
  queue: Schema3.optionalWith(QueueConfig, { default: () => ({ capacity: 256, maxWait: 1e4 }) })
});
var RequestLimitFields = {
  /** JSON nested deeper than this (objects and arrays) → 400, before the body is parsed. */
  maxJsonDepth: Schema3.optionalWith(PositiveInt, { default: () => 64 }),
  /** A chat with more messages than this → 400, before the body is validated. */
  maxMessages: Schema3.optionalWith(PositiveInt, { default: () => 1e4 }),
  /** Bytes of unfinished request bodies held at once, all connections together; beyond → 503. */
  maxInFlightBodyBytes: Schema3.optionalWith(PositiveInt, { default: () => 64 * 1024 * 1024 }),
  /** The same for the connections of one client address. */
  maxInFlightBodyBytesPerClient: Schema3.optionalWith(PositiveInt, { default: () => 32 * 1024 * 1024 })
};
var requestLimitDefaults = { maxJsonDepth: 64, maxMessages: 1e4, maxInFlightBodyBytes: 64 * 1024 * 1024, maxInFlightBodyBytesPerClient: 32 * 1024 * 1024 };
var ServerConfig = Schema3.Struct({
  /** Request bodies above this many bytes are refused with 413. */
  maxBodyBytes: Schema3.optionalWith(PositiveInt, { default: () => 8 * 1024 * 1024 }),
  /** How often each host actor polls /api/ps and /api/tags. */
  pollInterval: Schema3.optionalWith(DurationMs, { default: () => 5e3 }),
  /** Timeout for a poll and for the fan-out routes (tags, ps, show). */
  probeTimeout: Schema3.optionalWith(DurationMs, { default: () => 2e3 }),
  /** How long SIGTERM waits for in-flight requests before closing. */
  drainTimeout: Schema3.optionalWith(DurationMs, { default: () => 3e4 }),
  /** A client must send its request headers within this (slow-loris guard). */
  headersTimeout: Schema3.optionalWith(DurationMs, { default: () => 1e4 }),
  /** A client must send its whole request (headers and body) within this. */
  requestTimeout: Schema3.optionalWith(DurationMs, { default: () => 6e4 }),
  /** Journal prompts and messages. Off by default: prompts may hold customer data. */
  journalPrompts: Schema3.optionalWith(Schema3.Boolean, { default: () => false }),
  /** keep_alive of keep-warm's load requests; they are repeated at half of it (see operations/KeepWarm.ts). */
  keepWarmKeepAlive: Schema3.optionalWith(DurationMs, { default: () => 6e5 }),
  ...RequestLimitFields,
  /**
   * Persist a run's terminal event (committed, or fsync'd to the journal's spill) before the last
   * byte reaches the caller. Off by default: the end then sits in memory for up to the journal's
   * linger plus one write (README "Reliability").
   */
  durableRunEnd: Schema3.optionalWith(Schema3.Boolean, { default: () => false })
});
var AsyncRunsConfig = Schema3.Struct({
  /** Runs executed at once across all lanes; the rest wait queued. */
  workers: Schema3.optionalWith(PositiveInt, { default: () => 2 })
});
var Usd2 = Schema3.Number.pipe(Schema3.finite(), Schema3.greaterThanOrEqualTo(0));
var ProviderConfig = Schema3.Struct({
  kind: Schema3.Literal("gemini", "anthropic"),
  model: Schema3.String.pipe(Schema3.minLength(1)),
  apiKeyEnv: Schema3.String.pipe(Schema3.pattern(/^[A-Za-z_][A-Za-z0-9_]*$/, {
    message: () => "expected the NAME of an environment variable (the key itself never goes in the config)"
  })),
  /** Default: the provider's public endpoint. Tests point it at a loopback fake. */
  baseUrl: Schema3.optional(HttpUrl),
  /** A call (or, when streaming, the first chunk and each gap between chunks) must come within this. */
  timeout: Schema3.optionalWith(DurationMs, { default: () => 6e4 }),
  /** Output cap when the request sets no (or a larger) num_predict; it bounds the worst-case cost reserved. */
  maxOutputTokens: Schema3.optionalWith(PositiveInt, { default: () => 1024 })
});
var PerMillionPrice = Schema3.Struct({ input: Usd2, output: Usd2 });
var LiteLlmPrice = Schema3.Struct(
  { input_cost_per_token: Usd2, output_cost_per_token: Usd2 },
  Schema3.Record({ key: Schema3.String, value: Schema3.Unknown })
);
var PriceEntry = Schema3.transform(
  Schema3.Union(PerMillionPrice, LiteLlmPrice),
  Schema3.Struct({ inputPerToken: Usd2, outputPerToken: Usd2 }),
  {
    strict: true,
    decode: (p) => "input_cost_per_token" in p ? { inputPerToken: p.input_cost_per_token, outputPerToken: p.output_cost_per_token } : { inputPerToken: p.input / 1e6, outputPerToken: p.output / 1e6 },
    encode: (p) => ({ input: p.inputPerToken * 1e6, output: p.outputPerToken * 1e6 })
  }
);
var BudgetConfig = Schema3.Struct({
  /** Paid spending (settled plus reserved) in one period never exceeds this. */
  hardKillUsd: Usd2,
  /** The budget period, in UTC. */
  period: Schema3.optionalWith(Schema3.Literal("hour", "day", "month"), { default: () => "day" })
});
var priceOf = (prices, model, kind) => prices[model] ?? (kind === void 0 ? void 0 : prices[`${kind}/${model}`]);
var GatewayConfigFields = Schema3.Struct({
  hosts: Schema3.Record({ key: Name2, value: HostConfig }),
  breaker: Schema3.optionalWith(BreakerConfig, { default: () => ({ consecutiveTimeouts: 2, cooldown: 3e4 }) }),
  policy: Schema3.optionalWith(PolicyConfig, { default: () => ({ heavyModelMinParamsB: 14 }) }),
  legacy: Schema3.optionalWith(LegacyConfig, { default: () => ({ projectId: "awoooi", lanes: {} }) }),
  lanes: Schema3.Record({ key: Name2, value: LaneConfig }),
  server: Schema3.optionalWith(ServerConfig, {
    default: () => ({ maxBodyBytes: 8 * 1024 * 1024, pollInterval: 5e3, probeTimeout: 2e3, drainTimeout: 3e4, headersTimeout: 1e4, requestTimeout: 6e4, journalPrompts: false, keepWarmKeepAlive: 6e5, durableRunEnd: false, ...requestLimitDefaults })
  }),
  providers: Schema3.optionalWith(Schema3.Record({ key: Name2, value: ProviderConfig }), { default: () => ({}) }),
  prices: Schema3.optionalWith(Schema3.Record({ key: Schema3.String, value: PriceEntry }), { default: () => ({}) }),
  budget: Schema3.optional(BudgetConfig),
  asyncRuns: Schema3.optionalWith(AsyncRunsConfig, { default: () => ({ workers: 2 }) }),
  /** Present: every request must be a known caller's (bearer key) or anonymous's (config/Callers.ts). */
  callers: Schema3.optional(Schema3.Record({ key: Name2, value: CallerConfig })),
  anonymous: Schema3.optional(AnonymousConfig)
}, Schema3.Record({ key: Schema3.String, value: Schema3.Unknown }));
var GatewayConfigSchema = GatewayConfigFields.pipe(Schema3.filter((config) => {
  const issues = [];
  for (const [laneName, lane] of Object.entries(config.lanes)) {
    const check = (where, host) => {
      if (!(host in config.hosts)) {
        issues.push({ path: ["lanes", laneName, ...where], message: `unknown host ${JSON.stringify(host)} (hosts: ${Object.keys(config.hosts).join(", ")})` });
      }
    };
    lane.route.forEach((step, i) => check(["route", i, "host"], step.host));
    Object.keys(lane.reserved).forEach((host) => check(["reserved", host], host));
    lane.keepWarm.forEach((host, i) => check(["keepWarm", i], host));
    if (lane.route.length === 0 && lane.paidFallback.length === 0 && lane.paid.length === 0) {
      issues.push({ path: ["lanes", laneName, "route"], message: "a lane needs at least one route step" });
    }
    if (lane.paid.length === 0 && lane.model === "") {
      issues.push({ path: ["lanes", laneName, "model"], message: "a lane with an Ollama route needs a model" });
    }
    if (lane.paid.length > 0 && (lane.route.length > 0 || lane.paidFallback.length > 0)) {
      issues.push({ path: ["lanes", laneName, "paid"], message: "a `paid` lane calls its providers directly: it takes no `route` or `paidFallback`" });
    }
    for (const key of ["paidFallback", "paid"]) {
      lane[key].forEach((provider, i) => {
        const known = config.providers[provider];
        if (known === void 0) {
          issues.push({ path: ["lanes", laneName, key, i], message: `unknown provider ${JSON.stringify(provider)} (providers: ${Object.keys(config.providers).join(", ") || "none"})` });
        } else if (priceOf(config.prices, known.model, known.kind) === void 0) {
          issues.push({ path: ["prices"], message: `no price for ${JSON.stringify(known.model)} (provider ${provider}): a paid call's worst-case cost cannot be reserved without it` });
        }
      });
      if (lane[key].length > 0 && config.budget === void 0) {
        issues.push({ path: ["lanes", laneName, key], message: "paid providers need a `budget` with hardKillUsd" });
      }
    }
    if (lane.route[0]?.when === "unavailable") {
      issues.push({ path: ["lanes", laneName, "route", 0, "when"], message: "the first step cannot be conditional" });
    }
  }
  for (const [hostName, host] of Object.entries(config.hosts)) {
    const reserved = Object.values(config.lanes).reduce((sum, lane) => sum + (lane.reserved[hostName] ?? 0), 0);
    if (reserved > host.slots) {
      issues.push({ path: ["hosts", hostName, "slots"], message: `lanes reserve ${reserved} slots but the host has ${host.slots}` });
    }
  }
  issues.push(...callerIssues(config));
  for (const [model, lane] of Object.entries(config.legacy.lanes)) {
    if (!(lane in config.lanes)) issues.push({ path: ["legacy", "lanes", model], message: `unknown lane ${JSON.stringify(lane)}` });
  }
  return issues;
}));
var ConfigLoadError = class extends Schema3.TaggedError()("ConfigLoadError", {
  path: Schema3.String,
  message: Schema3.String
}) {
};
var hostUrlEnvName = (host) => `AWOOOP_HOST_${host.toUpperCase().replace(/[^A-Z0-9]/g, "_")}_URL`;
var applyEnvOverrides = (raw, env) => {
  if (typeof raw !== "object" || raw === null) return raw;
  const hosts = raw.hosts;
  if (typeof hosts !== "object" || hosts === null) return raw;
  const next2 = {};
  for (const [name, host] of Object.entries(hosts)) {
    const url = env[hostUrlEnvName(name)];
    next2[name] = url && typeof host === "object" && host !== null ? { ...host, url } : host;
  }
  return { ...raw, hosts: next2 };
};
var decode = Schema3.decodeUnknownEither(GatewayConfigSchema, { errors: "all", onExcessProperty: "error" });
var parseConfig = (text, file, env = {}) => Effect.gen(function* () {
  const raw = yield* Effect.try({
    try: () => YAML.parse(text),
    catch: (e) => new ConfigLoadError({ path: file, message: `${file}: not valid YAML/JSON: ${e.message}` })
  });
  const result = decode(applyCallerKeys(applyEnvOverrides(raw, env), env));
  if (Either.isLeft(result)) {
    const issues = ParseResult2.ArrayFormatter.formatErrorSync(result.left);
    const at = (path4) => path4.length ? path4.join(".") : "(root)";
    const lines = issues.filter(
      (issue) => !(issue.message.startsWith("Expected undefined, actual") && issues.some((other) => other !== issue && (at(other.path) === at(issue.path) || at(other.path).startsWith(`${at(issue.path)}.`))))
    ).map((issue) => `  at ${at(issue.path)}: ${issue.message}`);
    return yield* new ConfigLoadError({ path: file, message: `${file}: invalid gateway config
${lines.join("\n")}` });
  }
  return result.right;
});
var loadConfigFile = (file, env = process.env) => Effect.gen(function* () {
  const text = yield* Effect.try({
    try: () => fs.readFileSync(file, "utf8"),
    catch: (e) => new ConfigLoadError({ path: file, message: `cannot read config ${file}: ${e.message}` })
  });
  return yield* parseConfig(text, file, env);
});
var defaultConfigPath = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../config/gateway.example.yaml");
var GatewayConfigTag = class _GatewayConfigTag extends Context.Tag("awooop/GatewayConfig")() {
  /** Reads AWOOOP_CONFIG (default: the shipped example). */
  static fromEnv = Layer.effect(
    _GatewayConfigTag,
    Effect.gen(function* () {
      const file = yield* Config.string("AWOOOP_CONFIG").pipe(Config.withDefault(defaultConfigPath));
      return yield* loadConfigFile(file);
    })
  );
  static layerOf = (config) => Layer.succeed(_GatewayConfigTag, config);
};

// src/routing/Host.ts
import { Clock as Clock3, Effect as Effect6, FiberHandle, PubSub, Ref, Schedule as Schedule2 } from "effect";

// src/journal/StreamWriter.ts
import { Clock, Effect as Effect3 } from "effect";

// src/journal/RunEnds.ts
import { Effect as Effect2 } from "effect";
var isTerminalRunEvent = (type) => type === "RunCompleted" || type === "RunFailed";
var fieldOf = (data, key) => typeof data === "object" && data !== null ? data[key] : void 0;
var OpenRuns = class {
  open = /* @__PURE__ */ new Map();
  note(event) {
    if (event.type === "RunStarted") {
      if (fieldOf(event.data, "async") === true || !event.streamId.startsWith("run-")) return;
      this.open.set(event.streamId, {
        streamId: event.streamId,
        traceId: event.traceId,
        projectId: event.projectId,
        lane: event.lane,
        startedAt: event.occurredAt,
        next: event.streamPosition + 1,
        attempts: /* @__PURE__ */ new Set()
      });
      return;
    }
    const run = this.open.get(event.streamId);
    if (run === void 0) return;
    if (isTerminalRunEvent(event.type)) {
      this.open.delete(event.streamId);
      return;
    }
    run.next = Math.max(run.next, event.streamPosition + 1);
    const attempt = fieldOf(event.data, "attempt");
    if (typeof attempt !== "number") return;
    if (event.type === "AttemptStarted") run.attempts.add(attempt);
    else if (event.type === "AttemptSucceeded" || event.type === "AttemptFailed") run.attempts.delete(attempt);
  }
  get size() {
    return this.open.size;
  }
  /** Takes them all (the journal is closing). */
  drain() {
    const all = [...this.open.values()];
    this.open.clear();
    return all;
  }
};

// src/journal/StreamWriter.ts
var makeStreamWriter = (journal, base, startPosition = 0, options = {}) => {
  let next2 = startPosition;
  let ended = false;
  const openAttempts = [];
  const row = ({ _tag, ...data }, occurredAt) => ({
    streamId: base.streamId,
    streamPosition: next2++,
    type: _tag,
    traceId: base.traceId,
    projectId: base.projectId,
    lane: base.lane,
    data,
    occurredAt
  });
  const track = (event) => {
    const type = event._tag;
    if (isTerminalRunEvent(type)) {
      if (ended) return false;
      ended = true;
      return true;
    }
    const attempt = event.attempt;
    if (typeof attempt === "number") {
      if (type === "AttemptStarted") openAttempts.push(attempt);
      else if (type === "AttemptSucceeded" || type === "AttemptFailed") {
        const i = openAttempts.indexOf(attempt);
        if (i >= 0) openAttempts.splice(i, 1);
      }
    }
    return true;
  };
  const second = (type) => Effect3.logError(`Journal: ${base.streamId} already ended; a second terminal event (${type}) was NOT written`);
  return {
    streamId: base.streamId,
    append: (event) => Effect3.suspend(() => {
      if (!track(event)) return second(event._tag);
      return Effect3.clockWith((clock) => {
        const e = row(event, clock.unsafeCurrentTimeMillis());
        if (!(options.durableEnd === true && isTerminalRunEvent(e.type))) return journal.append(e);
        return journal.appendPersisted(e).pipe(
          Effect3.catchAll((error) => Effect3.logWarning(`Journal: the end of ${base.streamId} could not be persisted before the answer`, error))
        );
      });
    }),
    appendDurable: (event) => Effect3.suspend(() => {
      if (!track(event)) return second(event._tag);
      return Effect3.clockWith((clock) => journal.appendDurable(row(event, clock.unsafeCurrentTimeMillis())));
    }),
    position: () => next2,
    progress: () => ({ ended, openAttempts: [...openAttempts] })
  };
};
var endRun = (run, fields, startedAt) => Effect3.suspend(() => {
  const progress = run.progress();
  if (progress.ended) return Effect3.void;
  return Effect3.gen(function* () {
    const now = yield* Clock.currentTimeMillis;
    for (const attempt of progress.openAttempts) {
      yield* run.append({ _tag: "AttemptFailed", attempt, kind: "interrupted", status: null, message: fields.message, afterFirstChunk: null });
    }
    yield* run.append({ _tag: "RunFailed", status: fields.status, error: fields.error, message: fields.message, durationMs: now - startedAt });
  });
});

// src/routing/Breaker.ts
import { Cause, Clock as Clock2, Data, Duration, Effect as Effect4, Exit, Option, Schedule, SynchronizedRef } from "effect";
var BreakerOpen = class extends Data.TaggedError("BreakerOpen") {
};
var noTransition = Option.none();
var make = (host, config, onTransition = () => Effect4.void) => Effect4.gen(function* () {
  const threshold = Math.max(1, Math.floor(config.consecutiveTimeouts));
  const baseCooldown = Duration.decode(config.cooldown);
  const cooldowns = config.cooldownSchedule ?? Schedule.forever.pipe(Schedule.as(baseCooldown));
  const state = yield* SynchronizedRef.make({ _tag: "Closed", epoch: 0, timeouts: 0 });
  const open = (s, now, timeouts, reason) => {
    const previous = s._tag === "Open" ? s : { cooldownMillis: Duration.toMillis(baseCooldown), cooldownState: cooldowns.initial };
    return cooldowns.step(now, void 0, previous.cooldownState).pipe(
      Effect4.map(([cooldownState, cooldown, decision]) => {
        const cooldownMillis = decision._tag === "Done" ? previous.cooldownMillis : Duration.toMillis(cooldown);
        const reopensAt = now + cooldownMillis;
        return [
          Option.some({ _tag: "BreakerOpened", at: now, consecutiveTimeouts: timeouts, until: reopensAt, reason }),
          {
            _tag: "Open",
            epoch: s.epoch + 1,
            timeouts,
            openedAt: now,
            reopensAt,
            probeInFlight: false,
            cooldownMillis,
            cooldownState
          }
        ];
      })
    );
  };
  const close = (s, now) => [
    s._tag === "Open" ? Option.some({ _tag: "BreakerClosed", at: now }) : noTransition,
    { _tag: "Closed", epoch: s.epoch + 1, timeouts: 0 }
  ];
  const admitPure = (s, now) => {
    if (s._tag === "Closed") {
      return [{ _tag: "Admitted", ticket: { epoch: s.epoch, probe: false }, transition: noTransition }, s];
    }
    if (s.probeInFlight) return [{ _tag: "Refused", until: null, probeInFlight: true }, s];
    if (now < s.reopensAt) return [{ _tag: "Refused", until: s.reopensAt, probeInFlight: false }, s];
    return [
      {
        _tag: "Admitted",
        ticket: { epoch: s.epoch, probe: true },
        transition: Option.some({ _tag: "BreakerHalfOpened", at: now })
      },
      { ...s, probeInFlight: true }
    ];
  };
  const settlePure = (s, now, ticket, outcome) => {
    const unchanged = Effect4.succeed([noTransition, s]);
    if (ticket.epoch !== s.epoch) return unchanged;
    if (s._tag === "Closed") {
      if (ticket.probe) return unchanged;
      switch (outcome) {
        case "success":
          return Effect4.succeed([noTransition, { ...s, timeouts: 0 }]);
        case "timeout": {
          const timeouts = s.timeouts + 1;
          return timeouts >= threshold ? open(s, now, timeouts, `${timeouts} consecutive timeouts`) : Effect4.succeed([noTransition, { ...s, timeouts }]);
        }
        // The host poller marks a refusing host down; here they neither count nor reset.
        case "failure":
        case "ignore":
          return unchanged;
      }
    }
    if (!ticket.probe || !s.probeInFlight) return unchanged;
    switch (outcome) {
      case "success":
        return Effect4.succeed(close(s, now));
      case "timeout":
        return open(s, now, s.timeouts + 1, "probe timed out");
      case "failure":
        return open(s, now, s.timeouts, "probe failed");
      case "ignore":
        return Effect4.succeed([noTransition, { ...s, probeInFlight: false }]);
    }
  };
  const emit = (t) => Option.match(t, { onNone: () => Effect4.void, onSome: onTransition });
  const admitLocked = Effect4.gen(function* () {
    const now = yield* Clock2.currentTimeMillis;
    const admission = yield* SynchronizedRef.modify(state, (s) => admitPure(s, now));
    if (admission._tag === "Refused") {
      return yield* new BreakerOpen({ host, until: admission.until, probeInFlight: admission.probeInFlight });
    }
    yield* emit(admission.transition);
    return admission.ticket;
  });
  const settleLocked = (ticket, outcome) => Effect4.gen(function* () {
    const now = yield* Clock2.currentTimeMillis;
    const transition = yield* SynchronizedRef.modifyEffect(state, (s) => settlePure(s, now, ticket, outcome));
    yield* emit(transition);
  });
  const settlesToNothing = (s, ticket, outcome) => ticket.epoch !== s.epoch || s._tag === "Closed" && (ticket.probe || outcome === "failure" || outcome === "ignore" || outcome === "success" && s.timeouts === 0);
  const settle2 = (ticket, outcome) => Effect4.flatMap(
    SynchronizedRef.get(state),
    (s) => settlesToNothing(s, ticket, outcome) ? Effect4.void : settleLocked(ticket, outcome)
  );
  const outcomeOf = (exit, classify2) => {
    if (Exit.isFailure(exit) && Cause.isInterruptedOnly(exit.cause)) return Effect4.succeed("ignore");
    try {
      return Effect4.succeed(classify2(exit));
    } catch (defect) {
      return Effect4.logError("Breaker classify threw; counting as failure", defect).pipe(
        Effect4.annotateLogs("host", host),
        Effect4.as("failure")
      );
    }
  };
  const settledAfter = (effect, ticket, classify2) => Effect4.onExit(effect, (exit) => Effect4.flatMap(outcomeOf(exit, classify2), (outcome) => settle2(ticket, outcome)));
  const guarded = (effect, classify2) => (
    // Uninterruptible between admission and settlement so an admitted ticket (above all a
    // probe) is always settled; only `effect` itself can be interrupted.
    Effect4.uninterruptibleMask(
      (restore) => Effect4.flatMap(admitLocked, (ticket) => settledAfter(restore(effect), ticket, classify2))
    )
  );
  const guard = (effect, classify2) => (
    // A closed breaker's ticket changes nothing when it is taken, so an interruption before its
    // settlement is registered loses nothing: the common case needs no uninterruptible region.
    Effect4.flatMap(SynchronizedRef.get(state), (s) => {
      if (s._tag !== "Closed") return guarded(effect, classify2);
      return settledAfter(effect, { epoch: s.epoch, probe: false }, classify2);
    })
  );
  const snapshotOf = (s, now) => {
    if (s._tag === "Closed") {
      return { status: "closed", consecutiveTimeouts: s.timeouts, openedAt: null, reopensAt: null, probeInFlight: false };
    }
    const halfOpen = s.probeInFlight || now >= s.reopensAt;
    return {
      status: halfOpen ? "half-open" : "open",
      consecutiveTimeouts: s.timeouts,
      openedAt: s.openedAt,
      reopensAt: halfOpen ? null : s.reopensAt,
      probeInFlight: s.probeInFlight
    };
  };
  const snapshot = Effect4.clockWith(
    (clock) => Effect4.map(SynchronizedRef.get(state), (s) => snapshotOf(s, clock.unsafeCurrentTimeMillis()))
  );
  const reset = Effect4.gen(function* () {
    const now = yield* Clock2.currentTimeMillis;
    yield* emit(yield* SynchronizedRef.modify(state, (s) => close(s, now)));
  });
  return { host, snapshot, guard, reset };
});

// src/routing/Slots.ts
import { Deferred, Effect as Effect5, Exit as Exit2, FiberId, Option as Option2 } from "effect";
var make2 = (total2, reservations) => Effect5.sync(() => {
  const reservedTotal = Object.values(reservations).reduce((a, b) => a + b, 0);
  const sharedTotal = Math.max(0, total2 - reservedTotal);
  let sharedInUse = 0;
  const reservedInUse = {};
  let signal = Deferred.unsafeMake(FiberId.none);
  let armed = false;
  const notify = () => {
    if (!armed) return;
    armed = false;
    const previous = signal;
    signal = Deferred.unsafeMake(FiberId.none);
    Deferred.unsafeDone(previous, Exit2.void);
  };
  const permit = (lane, pool) => {
    let released = false;
    return {
      pool,
      release: Effect5.sync(() => {
        if (released) return;
        released = true;
        if (pool === "reserved") reservedInUse[lane] = (reservedInUse[lane] ?? 0) - 1;
        else sharedInUse--;
        notify();
      })
    };
  };
  const acquire = (lane) => {
    const ownInUse = reservedInUse[lane] ?? 0;
    if (ownInUse < (reservations[lane] ?? 0)) {
      reservedInUse[lane] = ownInUse + 1;
      return permit(lane, "reserved");
    }
    if (sharedInUse < sharedTotal) {
      sharedInUse++;
      return permit(lane, "shared");
    }
    return null;
  };
  const arm = () => {
    armed = true;
    return signal;
  };
  const inUse = () => {
    let n = sharedInUse;
    for (const lane in reservedInUse) n += reservedInUse[lane];
    return n;
  };
  const free = (lane) => Math.max(0, (reservations[lane] ?? 0) - (reservedInUse[lane] ?? 0)) + Math.max(0, sharedTotal - sharedInUse);
  const snapshot = Effect5.sync(() => {
    const reserved = {};
    for (const [lane, n] of Object.entries(reservations)) reserved[lane] = { total: n, inUse: reservedInUse[lane] ?? 0 };
    return { total: total2, inUse: inUse(), shared: { total: sharedTotal, inUse: sharedInUse }, reserved };
  });
  return {
    tryAcquire: (lane) => Effect5.sync(() => Option2.fromNullable(acquire(lane))),
    acquireOrSignal: (lane) => Effect5.sync(() => acquire(lane) ?? arm()),
    changed: Effect5.sync(arm),
    snapshot,
    freeFor: (lane) => Effect5.sync(() => free(lane)),
    viewFor: (lane) => Effect5.sync(() => ({ total: total2, inUse: inUse(), freeForLane: free(lane) }))
  };
});

// src/routing/Host.ts
var asString = (v) => typeof v === "string" ? v : null;
var readInstalled = (json) => (Array.isArray(json.models) ? json.models : []).flatMap((m) => {
  if (typeof m !== "object" || m === null) return [];
  const rec = m;
  const name = asString(rec.name) ?? asString(rec.model);
  if (name === null) return [];
  const details = typeof rec.details === "object" && rec.details !== null ? rec.details : {};
  return [{ name, parameterSize: asString(details.parameter_size) }];
});
var readResident = (json) => (Array.isArray(json.models) ? json.models : []).flatMap((m) => {
  if (typeof m !== "object" || m === null) return [];
  const rec = m;
  const name = asString(rec.name) ?? asString(rec.model);
  if (name === null) return [];
  return [{ name, expiresAt: asString(rec.expires_at), sizeVram: typeof rec.size_vram === "number" ? rec.size_vram : null }];
});
var sleepUntil = (at) => Effect6.flatMap(Clock3.currentTimeMillis, (now) => now >= at ? Effect6.void : Effect6.zipRight(Effect6.sleep(Math.min(at - now, 864e5)), Effect6.suspend(() => sleepUntil(at))));
var make3 = (name, config, reservations, deps) => Effect6.gen(function* () {
  const target = { name, url: config.url };
  const streamId = `host-${name}`;
  const base = { streamId, traceId: null, projectId: null, lane: null };
  const baseWriter = deps.sharedWriter?.(base) ?? makeStreamWriter(deps.journal, base, yield* deps.journal.streamHead(streamId).pipe(Effect6.orDie));
  const writer = deps.observe?.(baseWriter) ?? baseWriter;
  const slots = yield* make2(config.slots, reservations);
  const breaker = yield* make(
    name,
    { consecutiveTimeouts: deps.breaker.consecutiveTimeouts, cooldown: deps.breaker.cooldownMs },
    (t) => writer.append({ host: name, ...t })
  );
  let health = {
    status: "unknown",
    lastCheckedAt: null,
    lastLatencyMs: null,
    lastError: null,
    installed: null,
    resident: null,
    version: null
  };
  let maintenance = { open: false, reason: null, until: null };
  const windowId = yield* Ref.make(0);
  const closer = yield* FiberHandle.make();
  const hostChanges = yield* PubSub.unbounded();
  const journalsHealth = deps.journalsHealth ?? (() => true);
  const healthEvent = (event) => journalsHealth() ? writer.append(event) : Effect6.void;
  const markDown = (error, now) => Effect6.flatMap(
    Effect6.sync(() => {
      const changed = health.status !== "down";
      health = { ...health, status: "down", lastCheckedAt: now, lastError: error };
      return changed;
    }),
    (changed) => changed ? Effect6.zipRight(
      healthEvent({ _tag: "HostDown", host: name, error }),
      Effect6.suspend(() => PubSub.publish(hostChanges, { status: "down", resident: (health.resident ?? []).map((m) => m.name), loaded: [], evicted: [] }))
    ) : Effect6.void
  );
  const pollTimeoutMs = Math.max(1, Math.min(deps.probeTimeoutMs, Math.floor(deps.pollIntervalMs * 0.4)));
  const probeTags = deps.upstream.unary(target, "GET", "/api/tags", null, pollTimeoutMs).pipe(Effect6.either);
  const poll = Effect6.gen(function* () {
    const started = yield* Clock3.currentTimeMillis;
    let [tags, ps, version] = yield* Effect6.all([
      probeTags,
      deps.upstream.unary(target, "GET", "/api/ps", null, pollTimeoutMs).pipe(Effect6.either),
      deps.upstream.unary(target, "GET", "/api/version", null, pollTimeoutMs).pipe(Effect6.either)
    ], { concurrency: 3 });
    const now = yield* Clock3.currentTimeMillis;
    if (tags._tag === "Left") {
      const again = tags.left.kind === "refused" ? tags : yield* probeTags;
      if (again._tag === "Left") return yield* markDown(again.left.message, yield* Clock3.currentTimeMillis);
      tags = again;
    }
    const installed = readInstalled(tags.right.json);
    const resident = ps._tag === "Right" ? readResident(ps.right.json) : null;
    const before = health;
    health = {
      status: "up",
      lastCheckedAt: now,
      lastLatencyMs: now - started,
      lastError: null,
      installed,
      resident: resident ?? before.resident,
      version: version._tag === "Right" ? asString(version.right.json.version) : before.version
    };
    if (before.status !== "up") yield* healthEvent({ _tag: "HostUp", host: name, latencyMs: now - started });
    let change = before.status !== "up" ? { status: "up", resident: (resident ?? before.resident ?? []).map((m) => m.name), loaded: [], evicted: [] } : null;
    if (resident !== null) {
      const was = new Set((before.resident ?? []).map((m) => m.name));
      const is = new Set(resident.map((m) => m.name));
      const loaded = [...is].filter((m) => !was.has(m));
      const evicted = [...was].filter((m) => !is.has(m));
      if (before.resident === null || loaded.length > 0 || evicted.length > 0) {
        yield* healthEvent({ _tag: "ResidencyChanged", host: name, resident: [...is], loaded, evicted });
        change = { status: "up", resident: [...is], loaded, evicted };
      }
    }
    if (change !== null) yield* PubSub.publish(hostChanges, change);
  });
  yield* poll.pipe(
    Effect6.catchAllCause((cause) => Effect6.logWarning(`poll of host ${name} failed`, cause)),
    Effect6.repeat(Schedule2.spaced(deps.pollIntervalMs)),
    Effect6.forkScoped
  );
  const closeWindow = (id, reason, expired) => Effect6.gen(function* () {
    const current = yield* Ref.get(windowId);
    const ours = deps.windows === void 0 ? id === null || id === current : yield* deps.windows.close(name, id);
    const was = maintenance;
    if (id === null || id === current) maintenance = { open: false, reason: null, until: null };
    if (!ours || !was.open && deps.windows === void 0) return false;
    yield* writer.append({ _tag: "MaintenanceClosed", host: name, reason, expired, openReason: was.reason, until: was.until });
    return true;
  }).pipe(Effect6.uninterruptible);
  const closeAt = (id, until) => until === null ? FiberHandle.clear(closer) : FiberHandle.run(
    closer,
    Effect6.zipRight(sleepUntil(until), closeWindow(id, `the window ended at ${new Date(until).toISOString()}`, true))
  );
  const openMaintenance = (reason, until) => Effect6.gen(function* () {
    const id = deps.windows === void 0 ? yield* Ref.updateAndGet(windowId, (n) => n + 1) : yield* Effect6.tap(deps.windows.open(name, reason, until), (id2) => Ref.set(windowId, id2));
    const m = { open: true, reason, until };
    maintenance = m;
    yield* writer.append({ _tag: "MaintenanceOpened", host: name, open: true, reason, until });
    yield* closeAt(id, until);
    return m;
  }).pipe(Effect6.uninterruptible);
  const closeMaintenance = (reason) => Effect6.zipLeft(closeWindow(null, reason, false), FiberHandle.clear(closer));
  const adoptMaintenance = (window) => Effect6.gen(function* () {
    if (window === null) {
      if (!maintenance.open) return;
      maintenance = { open: false, reason: null, until: null };
      return yield* FiberHandle.clear(closer);
    }
    if (maintenance.open && (yield* Ref.get(windowId)) === window.id) return;
    yield* Ref.set(windowId, window.id);
    maintenance = { open: true, reason: window.reason, until: window.until };
    yield* closeAt(window.id, window.until);
  }).pipe(Effect6.uninterruptible);
  const maintenanceAt = (now) => maintenance.open && maintenance.until !== null && now >= maintenance.until ? { open: false, reason: null, until: null } : maintenance;
  const effectiveMaintenance = Effect6.clockWith((clock) => Effect6.sync(() => maintenanceAt(clock.unsafeCurrentTimeMillis())));
  const view = (lane) => Effect6.flatMap(breaker.snapshot, (b) => Effect6.clockWith((clock) => Effect6.flatMap(slots.viewFor(lane), (slotsView) => {
    const m = maintenanceAt(clock.unsafeCurrentTimeMillis());
    return Effect6.succeed({
      protected: config.protected,
      health: health.status,
      breaker: { status: b.status, reopensAt: b.reopensAt, probeInFlight: b.probeInFlight },
      maintenance: { open: m.open, until: m.until },
      installed: health.installed,
      slots: slotsView
    });
  })));
  return {
    name,
    config,
    target,
    slots,
    breaker,
    health: Effect6.sync(() => health),
    maintenance: effectiveMaintenance,
    setMaintenance: (m) => m.open ? Effect6.asVoid(openMaintenance(m.reason ?? "maintenance", m.until)) : Effect6.asVoid(closeMaintenance(m.reason ?? "closed")),
    openMaintenance,
    closeMaintenance,
    adoptMaintenance,
    changes: PubSub.subscribe(hostChanges),
    record: (event) => writer.append({ ...event, host: name }),
    view,
    reportRefused: (error) => Effect6.flatMap(Clock3.currentTimeMillis, (now) => markDown(error, now)),
    poll: Effect6.catchAllCause(poll, (cause) => Effect6.logWarning(`poll of host ${name} failed`, cause))
  };
});

// src/routing/Lane.ts
import { Cause as Cause3, Clock as Clock5, Deferred as Deferred2, Effect as Effect11, ExecutionStrategy, Exit as Exit6, Option as Option5, Ref as Ref2, Scope as Scope2 } from "effect";

// src/domain/Errors.ts
import { HttpApiSchema } from "@effect/platform";
import { Schema as Schema4 } from "effect";
var status = (code) => ({ [HttpApiSchema.AnnotationStatus]: code });
var statusOf = (error) => {
  const ast = error.constructor.ast;
  return ast.annotations[HttpApiSchema.AnnotationStatus] ?? HttpApiSchema.getStatusErrorAST(ast);
};
var BadRequest = class extends Schema4.TaggedError()("BadRequest", {
  message: Schema4.String
}, status(400)) {
  get status() {
    return statusOf(this);
  }
};
var UnknownLane = class extends Schema4.TaggedError()("UnknownLane", {
  lane: Schema4.String,
  known: Schema4.Array(Schema4.String)
}, status(400)) {
  get status() {
    return statusOf(this);
  }
  get message() {
    return `unknown lane ${JSON.stringify(this.lane)} in X-AwoooP-Lane (lanes: ${this.known.join(", ")})`;
  }
};
var ModelDenied = class extends Schema4.TaggedError()("ModelDenied", {
  lane: Schema4.String,
  model: Schema4.String,
  rule: Schema4.String,
  hosts: Schema4.Array(Schema4.String)
}, status(403)) {
  get status() {
    return statusOf(this);
  }
  get message() {
    return `lane ${this.lane}: model ${this.model} denied on ${this.hosts.join(", ")} by rule ${this.rule}`;
  }
};
var ModelNotFound = class extends Schema4.TaggedError()("ModelNotFound", {
  lane: Schema4.String,
  model: Schema4.String,
  hosts: Schema4.Array(Schema4.String)
}, status(404)) {
  get status() {
    return statusOf(this);
  }
  get message() {
    return `model '${this.model}' not found on lane ${this.lane}'s hosts (${this.hosts.join(", ")})`;
  }
};
var AsyncOnlyLane = class extends Schema4.TaggedError()("AsyncOnlyLane", {
  lane: Schema4.String
}, status(409)) {
  get status() {
    return statusOf(this);
  }
  get message() {
    return `lane ${this.lane} is async-only: synchronous requests are refused; submit an async run`;
  }
};
var NotManaged = class extends Schema4.TaggedError()("NotManaged", {
  route: Schema4.String
}, status(403)) {
  get status() {
    return statusOf(this);
  }
  get message() {
    return `${this.route} is not served: the AwoooP gateway does not manage models; pull, push, create, copy and delete on the hosts themselves`;
  }
};
var RouteNotFound = class extends Schema4.TaggedError()("RouteNotFound", {
  method: Schema4.String,
  path: Schema4.String
}, status(404)) {
  get status() {
    return statusOf(this);
  }
  get message() {
    return `no route for ${this.method} ${this.path}`;
  }
};
var BodyTooLarge = class extends Schema4.TaggedError()("BodyTooLarge", {
  limit: Schema4.Number
}, status(413)) {
  get status() {
    return statusOf(this);
  }
  get message() {
    return `request body larger than ${this.limit} bytes`;
  }
};
var LaneSaturated = class extends Schema4.TaggedError()("LaneSaturated", {
  lane: Schema4.String,
  reason: Schema4.String,
  retryAfterSeconds: Schema4.Number
}, status(503)) {
  get status() {
    return statusOf(this);
  }
  get message() {
    return `lane ${this.lane} saturated: ${this.reason}`;
  }
};
var AllHostsUnavailable = class extends Schema4.TaggedError()("AllHostsUnavailable", {
  lane: Schema4.String,
  reasons: Schema4.Array(Schema4.String),
  retryAfterSeconds: Schema4.Number
}, status(503)) {
  get status() {
    return statusOf(this);
  }
  get message() {
    return `lane ${this.lane}: no host could serve the request: ${this.reasons.join("; ")}`;
  }
};
var AllAttemptsTimedOut = class extends Schema4.TaggedError()("AllAttemptsTimedOut", {
  lane: Schema4.String,
  reasons: Schema4.Array(Schema4.String)
}, status(504)) {
  get status() {
    return statusOf(this);
  }
  get message() {
    return `lane ${this.lane}: every attempt timed out: ${this.reasons.join("; ")}`;
  }
};
var UpstreamRejected = class extends Schema4.TaggedError()("UpstreamRejected", {
  host: Schema4.String,
  upstreamStatus: Schema4.Number,
  upstreamError: Schema4.String
}) {
  get status() {
    return this.upstreamStatus;
  }
  get message() {
    return `host ${this.host}: ${this.upstreamError}`;
  }
};
var ShuttingDown = class extends Schema4.TaggedError()("ShuttingDown", {}, status(503)) {
  get status() {
    return statusOf(this);
  }
  get message() {
    return "the gateway is shutting down; retry on another replica";
  }
};
var BudgetDenied = class extends Schema4.TaggedError()("BudgetDenied", {
  lane: Schema4.String,
  /** Why the budget said no (names the hard kill and the figures). */
  reason: Schema4.String,
  /** Why a paid call was wanted at all (e.g. "all Ollama endpoints failed: …"). */
  fallbackReason: Schema4.String
}, status(503)) {
  get status() {
    return statusOf(this);
  }
  get message() {
    return `lane ${this.lane}: paid call refused by the budget hard kill: ${this.reason} (${this.fallbackReason})`;
  }
};
var BudgetUnavailable = class extends Schema4.TaggedError()("BudgetUnavailable", {
  lane: Schema4.String,
  fallbackReason: Schema4.String
}, status(503)) {
  get status() {
    return statusOf(this);
  }
  get message() {
    return `lane ${this.lane}: paid call refused: the budget ledger is unreachable, so the budget hard kill cannot be checked (fail closed) (${this.fallbackReason})`;
  }
};
var PaidProvidersFailed = class extends Schema4.TaggedError()("PaidProvidersFailed", {
  lane: Schema4.String,
  reasons: Schema4.Array(Schema4.String)
}, status(503)) {
  get status() {
    return statusOf(this);
  }
  get message() {
    return `lane ${this.lane}: no paid provider could serve the request: ${this.reasons.join("; ")}`;
  }
};
var Unauthorized = class extends Schema4.TaggedError()("Unauthorized", {
  reason: Schema4.String
}, status(401)) {
  get status() {
    return statusOf(this);
  }
  get message() {
    return `unauthorized: ${this.reason}`;
  }
};
var InFlightBytesExceeded = class extends Schema4.TaggedError()("InFlightBytesExceeded", {
  /** "server.maxInFlightBodyBytes" or "server.maxInFlightBodyBytesPerClient" */
  limit: Schema4.String,
  bytes: Schema4.Number
}, status(503)) {
  get status() {
    return statusOf(this);
  }
  get retryAfterSeconds() {
    return 1;
  }
  get message() {
    return `the gateway is receiving too many request bodies at once (${this.limit} = ${this.bytes} bytes); retry shortly`;
  }
};
var CallerForbidden = class extends Schema4.TaggedError()("CallerForbidden", {
  caller: Schema4.String,
  reason: Schema4.String
}, status(403)) {
  get status() {
    return statusOf(this);
  }
  get message() {
    return `caller ${this.caller} ${this.reason}`;
  }
};
var RunStoreUnavailable = class extends Schema4.TaggedError()("RunStoreUnavailable", {
  lane: Schema4.String,
  reason: Schema4.String
}, status(503)) {
  get status() {
    return statusOf(this);
  }
  get message() {
    return `lane ${this.lane}: the async run was not accepted: the run store is unavailable (${this.reason})`;
  }
};
var JournalUnavailable = class extends Schema4.TaggedError()("JournalUnavailable", {
  lane: Schema4.String
}, status(503)) {
  get status() {
    return statusOf(this);
  }
  get message() {
    return `lane ${this.lane}: the request was not run: the step journal is unavailable (neither PostgreSQL nor the local spill takes writes); retry shortly`;
  }
};

// src/domain/OllamaApi.ts
import { Schema as Schema5 } from "effect";
var FiniteNumber = Schema5.Number.pipe(Schema5.finite());
var OptionValue = Schema5.Union(FiniteNumber, Schema5.String, Schema5.Boolean, Schema5.Array(Schema5.String), Schema5.Null);
var Options = Schema5.Record({ key: Schema5.String, value: OptionValue });
var KeepAlive = Schema5.Union(FiniteNumber, Schema5.String);
var Format = Schema5.Union(Schema5.String, Schema5.Record({ key: Schema5.String, value: Schema5.Unknown }));
var Think = Schema5.Union(Schema5.Boolean, Schema5.Literal("low", "medium", "high"));
var Model = Schema5.String.pipe(Schema5.minLength(1, { message: () => "model is required" }), Schema5.maxLength(256));
var GenerateRequest = Schema5.Struct({
  model: Model,
  prompt: Schema5.optional(Schema5.String),
  suffix: Schema5.optional(Schema5.String),
  system: Schema5.optional(Schema5.String),
  template: Schema5.optional(Schema5.String),
  context: Schema5.optional(Schema5.Array(Schema5.Int)),
  stream: Schema5.optional(Schema5.Boolean),
  raw: Schema5.optional(Schema5.Boolean),
  format: Schema5.optional(Format),
  keep_alive: Schema5.optional(KeepAlive),
  images: Schema5.optional(Schema5.Array(Schema5.String)),
  options: Schema5.optional(Options),
  think: Schema5.optional(Think),
  truncate: Schema5.optional(Schema5.Boolean),
  shift: Schema5.optional(Schema5.Boolean),
  logprobs: Schema5.optional(Schema5.Boolean),
  top_logprobs: Schema5.optional(Schema5.Int.pipe(Schema5.between(0, 20)))
});
var ChatMessage = Schema5.Struct({
  role: Schema5.Literal("system", "user", "assistant", "tool"),
  content: Schema5.optionalWith(Schema5.String, { default: () => "" }),
  images: Schema5.optional(Schema5.Array(Schema5.String)),
  tool_calls: Schema5.optional(Schema5.Array(Schema5.Record({ key: Schema5.String, value: Schema5.Unknown }))),
  tool_name: Schema5.optional(Schema5.String),
  thinking: Schema5.optional(Schema5.String)
});
var ChatRequest = Schema5.Struct({
  model: Model,
  messages: Schema5.optionalWith(Schema5.Array(ChatMessage), { default: () => [] }),
  tools: Schema5.optional(Schema5.Array(Schema5.Record({ key: Schema5.String, value: Schema5.Unknown }))),
  format: Schema5.optional(Format),
  options: Schema5.optional(Options),
  stream: Schema5.optional(Schema5.Boolean),
  keep_alive: Schema5.optional(KeepAlive),
  think: Schema5.optional(Think),
  logprobs: Schema5.optional(Schema5.Boolean),
  top_logprobs: Schema5.optional(Schema5.Int.pipe(Schema5.between(0, 20)))
});
var EmbedRequest = Schema5.Struct({
  model: Model,
  input: Schema5.Union(Schema5.String, Schema5.Array(Schema5.String)),
  truncate: Schema5.optional(Schema5.Boolean),
  dimensions: Schema5.optional(Schema5.Int.pipe(Schema5.positive())),
  keep_alive: Schema5.optional(KeepAlive),
  options: Schema5.optional(Options)
});
var EmbeddingsRequest = Schema5.Struct({
  model: Model,
  prompt: Schema5.String,
  keep_alive: Schema5.optional(KeepAlive),
  options: Schema5.optional(Options)
});
var ShowRequest = Schema5.Struct({
  model: Schema5.optional(Model),
  /** Older clients send `name`. */
  name: Schema5.optional(Model),
  verbose: Schema5.optional(Schema5.Boolean)
});
var canonicalModel = (name) => {
  const slash = name.lastIndexOf("/");
  return name.indexOf(":", slash + 1) < 0 ? `${name}:latest` : name;
};
var sameModel = (a, b) => a === b || canonicalModel(a) === canonicalModel(b);
var operationPath = {
  generate: "/api/generate",
  chat: "/api/chat",
  embed: "/api/embed",
  embeddings: "/api/embeddings"
};

// src/upstream/OllamaUpstream.ts
import { Data as Data2, Effect as Effect7, Exit as Exit3 } from "effect";
import { EventEmitter } from "node:events";
import { Agent, request } from "undici";

// src/upstream/Ndjson.ts
var NEWLINE = 10;
var decoder = new TextDecoder("utf-8", { fatal: true });
var LineSplitter = class {
  pending = null;
  /** Whole lines (each including its trailing "\n") completed by this chunk. */
  push(chunk) {
    const lines = [];
    let start = 0;
    if (this.pending !== null) {
      const nl = chunk.indexOf(NEWLINE);
      if (nl < 0) {
        this.pending = concat(this.pending, chunk);
        return lines;
      }
      lines.push(concat(this.pending, chunk.subarray(0, nl + 1)));
      this.pending = null;
      start = nl + 1;
    }
    for (; ; ) {
      const nl = chunk.indexOf(NEWLINE, start);
      if (nl < 0) break;
      lines.push(chunk.subarray(start, nl + 1));
      start = nl + 1;
    }
    if (start < chunk.length) this.pending = chunk.slice(start);
    return lines;
  }
  /** What is left when the stream ends: a last line without "\n", or null. */
  rest() {
    const p = this.pending;
    this.pending = null;
    return p !== null && p.some((b) => b !== 32 && b !== 9 && b !== 13 && b !== 10) ? p : null;
  }
  get bufferedBytes() {
    return this.pending?.length ?? 0;
  }
};
var concat = (a, b) => {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
};
var parseLine = (line) => {
  let text;
  try {
    text = decoder.decode(line);
  } catch {
    return { _tag: "Malformed", message: "invalid UTF-8 in a stream line" };
  }
  if (text.trim() === "") return { _tag: "Blank" };
  try {
    const value = JSON.parse(text);
    return typeof value === "object" && value !== null && !Array.isArray(value) ? { _tag: "Chunk", value } : { _tag: "Malformed", message: "a stream line is not a JSON object" };
  } catch {
    return { _tag: "Malformed", message: `a stream line is not valid JSON: ${JSON.stringify(text.slice(0, 80))}` };
  }
};
var encoder = new TextEncoder();
var encodeLine = (value) => encoder.encode(JSON.stringify(value) + "\n");
var joinLines = (lines) => lines.length === 1 ? lines[0] : Buffer.concat(lines);

// src/upstream/OllamaUpstream.ts
var UpstreamFailure = class extends Data2.TaggedError("UpstreamFailure") {
};
var usageOf = (chunk) => ({
  inputTokens: typeof chunk.prompt_eval_count === "number" ? chunk.prompt_eval_count : null,
  outputTokens: typeof chunk.eval_count === "number" ? chunk.eval_count : null,
  doneReason: typeof chunk.done_reason === "string" ? chunk.done_reason : null
});
var errorCode = (cause) => {
  let current = cause;
  for (let depth = 0; depth < 5 && typeof current === "object" && current !== null; depth++) {
    const code = current.code;
    if (typeof code === "string") return code;
    current = current.cause;
  }
  return void 0;
};
var transportFailure = (host, cause) => {
  const code = errorCode(cause);
  const refused = code === "ECONNREFUSED" || code === "EHOSTUNREACH" || code === "ENOTFOUND" || code === "EAI_AGAIN";
  return new UpstreamFailure({
    host,
    kind: refused ? "refused" : "reset",
    status: null,
    message: refused ? `connection refused (${code})` : `connection failed${code ? ` (${code})` : ""}: ${String(cause?.message ?? cause)}`
  });
};
var statusFailure = (host, status2, body) => {
  let message = body.slice(0, 500);
  try {
    const parsed = JSON.parse(body);
    if (typeof parsed.error === "string") message = parsed.error;
  } catch {
  }
  const kind = status2 === 503 ? "busy" : status2 === 404 ? "not-found" : status2 >= 500 ? "server-error" : "rejected";
  return new UpstreamFailure({ host, kind, status: status2, message: `${status2}: ${message}` });
};
var timeoutFailure = (host, ms, what) => new UpstreamFailure({ host, kind: "timeout", status: null, message: `no ${what} within ${ms / 1e3}s` });
var Abort = class extends EventEmitter {
  aborted = false;
  abort() {
    if (this.aborted) return;
    this.aborted = true;
    this.emit("abort");
  }
};
var withDeadline = (ms, onTimeout, run, cancel = () => {
}) => Effect7.async((resume) => {
  const controller = new Abort();
  let live = true;
  const stop = () => {
    controller.abort();
    cancel();
  };
  const timer = setTimeout(() => {
    if (!live) return;
    live = false;
    stop();
    resume(Exit3.fail(onTimeout()));
  }, ms);
  const settle2 = (exit) => {
    if (!live) return;
    live = false;
    clearTimeout(timer);
    resume(exit);
  };
  run(controller).then(settle2, (defect) => settle2(Exit3.die(defect)));
  return Effect7.sync(() => {
    if (!live) return;
    live = false;
    clearTimeout(timer);
    stop();
  });
});
var OllamaUpstream = class extends Effect7.Service()("awooop/OllamaUpstream", {
  scoped: Effect7.gen(function* () {
    const agent = yield* Effect7.acquireRelease(
      Effect7.sync(() => new Agent({ keepAliveTimeout: 3e4, connections: 256, headersTimeout: 0, bodyTimeout: 0 })),
      (a) => Effect7.promise(() => a.destroy())
    );
    const headers = { "content-type": "application/json" };
    const send = async (target, method, path4, body, signal) => {
      let response;
      try {
        response = await request(target.url.replace(/\/$/, "") + path4, {
          method,
          dispatcher: agent,
          headers: body === null ? {} : headers,
          body,
          signal
        });
      } catch (error) {
        return transportFailure(target.name, error);
      }
      if (response.statusCode >= 200 && response.statusCode < 300) return response;
      return statusFailure(target.name, response.statusCode, await response.body.text().catch(() => ""));
    };
    const unary = (target, method, path4, body, timeoutMs) => withDeadline(timeoutMs, () => timeoutFailure(target.name, timeoutMs, "answer"), async (signal) => {
      const response = await send(target, method, path4, method === "POST" ? body : null, signal);
      if (response instanceof UpstreamFailure) return Exit3.fail(response);
      let bytes;
      try {
        bytes = new Uint8Array(await response.body.arrayBuffer());
      } catch (error) {
        return Exit3.fail(transportFailure(target.name, error));
      }
      const parsed = parseLine(bytes);
      if (parsed._tag !== "Chunk") {
        return Exit3.fail(new UpstreamFailure({ host: target.name, kind: "malformed", status: null, message: parsed._tag === "Malformed" ? parsed.message : "empty answer" }));
      }
      if (typeof parsed.value.error === "string") {
        return Exit3.fail(new UpstreamFailure({ host: target.name, kind: "server-error", status: response.statusCode, message: parsed.value.error }));
      }
      return Exit3.succeed({ bytes, json: parsed.value });
    });
    const openStream = (target, path4, body, timeoutMs) => Effect7.gen(function* () {
      const splitter = new LineSplitter();
      let usage = null;
      let done = false;
      const queued = [];
      let response = null;
      let iterator = null;
      const destroy = () => {
        response?.body.destroy();
        response = null;
      };
      const finish = () => {
        const opened = response;
        const it = iterator;
        response = null;
        if (opened === null) return;
        if (!done || it === null) return void opened.body.destroy();
        const timer = setTimeout(() => opened.body.destroy(), 1e3);
        void (async () => {
          let bytes = 0;
          try {
            for (; ; ) {
              const next2 = await it.next();
              if (next2.done) break;
              bytes += next2.value.length;
              if (bytes > 64 * 1024) {
                opened.body.destroy();
                break;
              }
            }
          } catch {
          }
          clearTimeout(timer);
        })();
      };
      const close = Effect7.sync(finish);
      const accept = (line) => {
        const parsed = parseLine(line);
        switch (parsed._tag) {
          case "Blank":
            return null;
          case "Malformed":
            return new UpstreamFailure({ host: target.name, kind: "malformed", status: null, message: parsed.message });
          case "Chunk": {
            if (typeof parsed.value.error === "string") {
              return new UpstreamFailure({ host: target.name, kind: "server-error", status: 200, message: parsed.value.error });
            }
            queued.push(line);
            if (parsed.value.done === true) {
              done = true;
              usage = usageOf(parsed.value);
            }
            return null;
          }
        }
      };
      const nextLines = async () => {
        while (queued.length === 0 && !done) {
          let chunk;
          try {
            chunk = await iterator.next();
          } catch (error) {
            return Exit3.fail(transportFailure(target.name, error));
          }
          if (chunk.done) {
            const last = splitter.rest();
            const failure = last === null ? null : accept(last);
            if (failure !== null) return Exit3.fail(failure);
            if (queued.length === 0 && !done) {
              return Exit3.fail(new UpstreamFailure({ host: target.name, kind: "truncated", status: null, message: "the stream ended without a done chunk" }));
            }
            break;
          }
          for (const line of splitter.push(chunk.value)) {
            if (done) break;
            const failure = accept(line);
            if (failure !== null) return Exit3.fail(failure);
          }
        }
        return Exit3.succeed(queued.splice(0, queued.length));
      };
      const head = yield* withDeadline(timeoutMs, () => timeoutFailure(target.name, timeoutMs, "first chunk"), async (signal) => {
        const opened = await send(target, "POST", path4, body, signal);
        if (opened instanceof UpstreamFailure) return Exit3.fail(opened);
        response = opened;
        iterator = opened.body[Symbol.asyncIterator]();
        return nextLines();
      }, destroy).pipe(
        Effect7.onExit((exit) => Exit3.isSuccess(exit) ? Effect7.void : close)
      );
      let finished = done;
      const pull = Effect7.suspend(() => {
        if (finished) return Effect7.succeed(null);
        return Effect7.map(
          withDeadline(timeoutMs, () => timeoutFailure(target.name, timeoutMs, "next chunk"), nextLines, destroy),
          (lines) => {
            finished = done;
            return lines.length === 0 ? null : joinLines(lines);
          }
        );
      });
      return { head, pull, usage: () => usage, close };
    });
    return { unary, openStream };
  })
}) {
};

// src/routing/ChunkSource.ts
import { Effect as Effect8, Option as Option3, Stream } from "effect";
var toStream = (source) => Stream.repeatEffectOption(
  Effect8.flatMap(source.next, (chunk) => chunk === null ? Effect8.fail(Option3.none()) : Effect8.succeed(chunk))
);

// src/routing/Plan.ts
import { Schema as Schema7 } from "effect";

// src/run/SkipReason.ts
import { Schema as Schema6 } from "effect";
var SkipReason = Schema6.Union(
  Schema6.Struct({ kind: Schema6.Literal("circuit-open"), until: Schema6.NullOr(Schema6.Number) }),
  Schema6.Struct({ kind: Schema6.Literal("probe-in-flight") }),
  Schema6.Struct({ kind: Schema6.Literal("host-down") }),
  Schema6.Struct({ kind: Schema6.Literal("heavy-model-denied"), sizeB: Schema6.Number, minParamsB: Schema6.Number }),
  Schema6.Struct({ kind: Schema6.Literal("model-not-installed") }),
  /** A "when: unavailable" step after a step that a rule refused (not one that was unavailable). */
  Schema6.Struct({ kind: Schema6.Literal("only-when-unavailable") })
);
var Skip = Schema6.Struct({ host: Schema6.String, reason: SkipReason });
var isUnavailability = (reason) => reason.kind === "circuit-open" || reason.kind === "probe-in-flight" || reason.kind === "host-down" || reason.kind === "model-not-installed";
var skipWords = (host, reason, wording) => {
  const pick = (caller, operator, record, fallback = record) => `${host} ${wording === "caller" ? caller : wording === "operator" ? operator : wording === "record" ? record : fallback}`;
  const r = reason;
  const size = r.sizeB ?? "?";
  switch (r.kind) {
    case "circuit-open":
      return pick(`circuit open${r.until != null ? ` until ${new Date(r.until).toISOString()}` : ""}`, "circuit open", "circuit open");
    case "probe-in-flight":
      return pick("circuit half-open, probe in flight", "circuit half-open (probe in flight)", "circuit half-open (probe in flight)", "circuit half-open");
    case "host-down":
      return pick("down", "down", "down");
    case "heavy-model-denied":
      return pick(
        `denies ${size}B models (protected host, heavy >= ${r.minParamsB ?? "?"}B, no maintenance window)`,
        `denies ${size}B models (protected host, no maintenance window)`,
        `denies heavy models (${size}B >= ${r.minParamsB ?? "?"}B)`
      );
    case "model-not-installed":
      return pick("does not have the model", "lacks the model", "lacks the model", "model not installed");
    case "only-when-unavailable":
      return pick(
        "is used only when the hosts before it are unavailable, and one was refused by a rule",
        "only when the hosts before it are unavailable",
        "skipped (only-when-unavailable)"
      );
    default:
      return `${host} skipped (${r.kind ?? "unknown"})`;
  }
};
var describeSkip = (skip) => skipWords(skip.host, skip.reason, "caller");

// src/routing/Policy.ts
var parseParameterSize = (text) => {
  if (!text) return null;
  const match = /^\s*(\d+(?:\.\d+)?)\s*([KMBT])\s*$/i.exec(text);
  if (!match) return null;
  const n = Number(match[1]);
  switch (match[2].toUpperCase()) {
    case "K":
      return n / 1e6;
    case "M":
      return n / 1e3;
    case "B":
      return n;
    default:
      return n * 1e3;
  }
};
var parameterSizeFromTag = (model) => {
  const colon = model.lastIndexOf(":");
  if (colon < 0) return null;
  const tag = model.slice(colon + 1).toLowerCase();
  const moe = /(?:^|[-_])(\d+)x(\d+(?:\.\d+)?)b(?:$|[-_])/.exec(tag);
  if (moe) return Number(moe[1]) * Number(moe[2]);
  const plain = /(?:^|[-_])(\d+(?:\.\d+)?)([bm])(?:$|[-_])/.exec(tag);
  if (!plain) return null;
  return plain[2] === "m" ? Number(plain[1]) / 1e3 : Number(plain[1]);
};
var modelSizeB = (model, hostReportedSize) => parseParameterSize(hostReportedSize) ?? parameterSizeFromTag(model);
var isHeavy = (sizeB, minParamsB) => sizeB !== null && sizeB >= minParamsB;

// src/routing/Plan.ts
var InstalledModel = Schema7.Struct({ name: Schema7.String, parameterSize: Schema7.NullOr(Schema7.String) });
var HostView = Schema7.Struct({
  protected: Schema7.Boolean,
  /** "unknown" until the first poll answers; treated as up. */
  health: Schema7.Literal("up", "down", "unknown"),
  breaker: Schema7.Struct({
    status: Schema7.Literal("closed", "open", "half-open"),
    reopensAt: Schema7.NullOr(Schema7.Number),
    probeInFlight: Schema7.Boolean
  }),
  maintenance: Schema7.Struct({ open: Schema7.Boolean, until: Schema7.NullOr(Schema7.Number) }),
  /** Models installed (from /api/tags); null when never polled, so nothing can be ruled out. */
  installed: Schema7.NullOr(Schema7.Array(InstalledModel)),
  /** Recorded for the audit; slots are taken at attempt time, not planned. */
  slots: Schema7.Struct({ total: Schema7.Number, inUse: Schema7.Number, freeForLane: Schema7.Number })
});
var PlanStep = Schema7.Struct({
  host: Schema7.String,
  timeoutMs: Schema7.Number,
  when: Schema7.Literal("always", "unavailable")
});
var PlanInput = Schema7.Struct({
  lane: Schema7.String,
  model: Schema7.String,
  route: Schema7.Array(PlanStep),
  hosts: Schema7.Record({ key: Schema7.String, value: HostView }),
  policy: Schema7.Struct({ heavyModelMinParamsB: Schema7.Number }),
  now: Schema7.Number
});
var PlannedAttempt = Schema7.Struct({
  host: Schema7.String,
  timeoutMs: Schema7.Number,
  /** Conditional attempts run only if every attempt before them failed for unavailability. */
  conditional: Schema7.Boolean
});
var Plan = Schema7.Struct({ attempts: Schema7.Array(PlannedAttempt), skipped: Schema7.Array(Skip) });
var skipReason = (input, host) => {
  const view = input.hosts[host];
  if (view === void 0) return { kind: "host-down" };
  if (view.protected && !view.maintenance.open) {
    const installed = view.installed?.find((m) => sameModel(m.name, input.model));
    const sizeB = modelSizeB(input.model, installed?.parameterSize);
    if (sizeB !== null && isHeavy(sizeB, input.policy.heavyModelMinParamsB)) {
      return { kind: "heavy-model-denied", sizeB, minParamsB: input.policy.heavyModelMinParamsB };
    }
  }
  if (view.health === "down") return { kind: "host-down" };
  if (view.installed !== null && !view.installed.some((m) => sameModel(m.name, input.model))) return { kind: "model-not-installed" };
  if (view.breaker.status === "open") return { kind: "circuit-open", until: view.breaker.reopensAt };
  if (view.breaker.status === "half-open" && view.breaker.probeInFlight) return { kind: "probe-in-flight" };
  return null;
};
var plan = (input) => {
  const attempts = [];
  const skipped = [];
  let allUnavailableSoFar = true;
  let ruleRefusedEarlier = false;
  for (const step of input.route) {
    const conditional = step.when === "unavailable";
    if (conditional && ruleRefusedEarlier) {
      skipped.push({ host: step.host, reason: { kind: "only-when-unavailable" } });
      continue;
    }
    const reason = skipReason(input, step.host);
    if (reason !== null) {
      skipped.push({ host: step.host, reason });
      if (!isUnavailability(reason)) {
        allUnavailableSoFar = false;
        ruleRefusedEarlier = true;
      }
      continue;
    }
    attempts.push({ host: step.host, timeoutMs: step.timeoutMs, conditional: conditional && !allUnavailableSoFar });
    allUnavailableSoFar = false;
  }
  return { attempts, skipped };
};

// src/routing/Relay.ts
import { Clock as Clock4, Effect as Effect9, Exit as Exit5, FiberRef as FiberRef2, Scope } from "effect";

// src/run/Terminal.ts
import { Cause as Cause2, Exit as Exit4, Option as Option4 } from "effect";
var classify = (exit) => {
  if (Exit4.isSuccess(exit)) return "success";
  const failure = Option4.getOrUndefined(Exit4.causeOption(exit).pipe(Option4.flatMap((c) => c._tag === "Fail" ? Option4.some(c.error) : Option4.none())));
  if (failure === void 0) return "ignore";
  switch (failure.kind) {
    case "timeout":
      return "timeout";
    case "not-found":
    case "rejected":
      return "ignore";
    default:
      return "failure";
  }
};
var failureOf = (cause) => Cause2.failureOption(cause);
var endOf = (exit) => {
  const cause = Exit4.isFailure(exit) ? exit.cause : Cause2.empty;
  const failure = Option4.getOrUndefined(failureOf(cause));
  if (failure !== void 0) return { status: failure.status, error: failure._tag, message: failure.message };
  if (Cause2.isInterruptedOnly(cause)) return { status: 499, error: "ClientAborted", message: "the caller went away" };
  return { status: 500, error: "InternalError", message: `the run failed inside the gateway: ${String(Cause2.squash(cause)).slice(0, 300)}` };
};

// src/routing/AbortReason.ts
import { FiberRef } from "effect";
var callerWentAway = { status: 499, error: "ClientAborted", message: "the caller went away mid-stream" };
var abortReason = FiberRef.unsafeMake(callerWentAway);

// src/routing/Relay.ts
var relay = (ctx, open, scope) => {
  let phase = "head";
  const failed2 = (failure) => Effect9.uninterruptible(Effect9.gen(function* () {
    const now = yield* Clock4.currentTimeMillis;
    yield* ctx.run.append({ _tag: "AttemptFailed", attempt: ctx.attempt, host: ctx.host, kind: failure.kind, status: failure.status, message: failure.message, durationMs: now - ctx.attemptStartedAt, afterFirstChunk: true });
    yield* ctx.run.append({ _tag: "RunFailed", status: 502, error: "StreamBroken", message: `host ${ctx.host}: ${failure.message}`, durationMs: now - ctx.startedAt });
    return encodeLine({ error: `lane ${ctx.lane}: host ${ctx.host} failed mid-stream: ${failure.message}` });
  }));
  const pulled = Effect9.matchEffect(open.pull, {
    onFailure: (failure) => {
      phase = "over";
      return failed2(failure);
    },
    onSuccess: (chunk) => {
      if (chunk !== null) return Effect9.succeed(chunk);
      phase = "over";
      return Effect9.as(Effect9.uninterruptible(ctx.complete(open.usage())), null);
    }
  });
  const next2 = Effect9.suspend(() => {
    if (phase === "rest") return pulled;
    if (phase === "over") return Effect9.succeed(null);
    phase = "rest";
    return Effect9.succeed(joinLines(open.head));
  });
  const close = (exit) => Effect9.gen(function* () {
    if (phase === "over") return;
    phase = "over";
    const now = yield* Clock4.currentTimeMillis;
    const why = Exit5.isFailure(exit) && !Exit5.isInterrupted(exit) ? endOf(exit) : yield* FiberRef2.get(abortReason);
    yield* ctx.run.append({ _tag: "RunFailed", status: why.status, error: why.error, message: why.message, durationMs: now - ctx.startedAt });
  });
  return Effect9.as(Scope.addFinalizerExit(scope, close), { next: next2 });
};

// src/observability/EventLoopLag.ts
import { Effect as Effect10 } from "effect";
import { monitorEventLoopDelay, performance as performance2 } from "node:perf_hooks";
var SAMPLE_MS = 20;
var STALL_MS = 50;
var KEPT_STALLS = 256;
var WINDOW_MS = 6e4;
var stalledByGateway = (longestStallMs, timeoutMs) => longestStallMs >= timeoutMs / 2;
var EventLoopLag = class extends Effect10.Service()("awooop/EventLoopLag", {
  scoped: Effect10.gen(function* () {
    let stalled = 0;
    let last = performance2.now();
    const histogram = monitorEventLoopDelay({ resolution: 10 });
    histogram.enable();
    let windowStart = last;
    let previous = { p50: 0, p99: 0, max: 0 };
    const stalls = [];
    const tick = () => {
      const now = performance2.now();
      const late = now - last - SAMPLE_MS;
      if (late > 0) stalled += late;
      if (late > STALL_MS) {
        stalls.push({ end: now, ms: late });
        if (stalls.length > KEPT_STALLS) stalls.shift();
      }
      last = now;
      if (now - windowStart >= WINDOW_MS) {
        previous = { p50: histogram.percentile(50), p99: histogram.percentile(99), max: histogram.max };
        histogram.reset();
        windowStart = now;
      }
    };
    const timer = setInterval(tick, SAMPLE_MS);
    timer.unref();
    yield* Effect10.addFinalizer(
      () => Effect10.sync(() => {
        clearInterval(timer);
        histogram.disable();
      })
    );
    const pending = (now) => Math.max(0, now - last - SAMPLE_MS);
    const stalledMs = () => stalled + pending(performance2.now());
    const mark = () => ({ at: performance2.now(), stalled: stalledMs() });
    const since = (from) => {
      const now = performance2.now();
      let longest = Math.min(pending(now), now - from.at);
      for (let i = stalls.length - 1; i >= 0 && stalls[i].end > from.at; i--) {
        longest = Math.max(longest, Math.min(stalls[i].ms, stalls[i].end - from.at));
      }
      return { lagMs: Math.round(stalledMs() - from.stalled), longestStallMs: Math.round(longest) };
    };
    const snapshot = () => {
      const fresh = histogram.count > 0;
      const ns = (v) => Number.isFinite(v) ? v / 1e9 : 0;
      return {
        p50Seconds: ns(fresh ? histogram.percentile(50) : previous.p50),
        p99Seconds: ns(fresh ? histogram.percentile(99) : previous.p99),
        maxSeconds: ns(fresh ? histogram.max : previous.max),
        stalledSeconds: stalledMs() / 1e3
      };
    };
    return { mark, since, snapshot };
  })
}) {
};

// src/run/Miss.ts
var failureLabels = {
  timeout: "timeout",
  refused: "refused",
  busy: "busy",
  "server-error": "error",
  reset: "connection reset",
  malformed: "malformed answer",
  truncated: "truncated answer",
  "not-found": "model not found",
  saturated: "saturated"
};
var failedPart = (m) => {
  const label = failureLabels[m.kind];
  if (label !== void 0) return `${m.host} ${label}`;
  return isUnavailability(m) ? skipWords(m.host, { kind: m.kind }, "fallback") : void 0;
};
var fallbackReason = (misses, route = []) => {
  const rank = (host) => {
    const i = route.indexOf(host);
    return i < 0 ? route.length : i;
  };
  const tried2 = misses.filter((m) => m.kind !== "only-when-unavailable").sort((a, b) => rank(a.host) - rank(b.host));
  const failed2 = tried2.map(failedPart);
  if (failed2.some((part) => part === void 0)) return null;
  const parts = [...new Set(failed2)];
  return `all Ollama endpoints failed: ${parts.length > 0 ? parts.join(", ") : "the lane has no Ollama endpoint"}`;
};
var directReason = (lane) => `lane ${lane} calls paid providers directly (no Ollama route)`;

// src/run/Attempts.ts
var initial = (input, plan2) => ({
  input,
  plan: plan2,
  round: plan2.attempts,
  pending: plan2.attempts,
  busy: [],
  deferred: [],
  misses: plan2.skipped.map((s) => ({ host: s.host, kind: s.reason.kind, text: describeSkip(s) })),
  onlyUnavailable: plan2.skipped.every((s) => s.reason.kind !== "heavy-model-denied"),
  attempts: input.attemptsSoFar,
  over: null,
  last: null
});
var settle = (s) => {
  let i = 0;
  while (i < s.pending.length && s.pending[i].conditional && s.onlyUnavailable && s.busy.length > 0) i++;
  return i === 0 ? s : { ...s, pending: s.pending.slice(i), deferred: [...s.deferred, ...s.pending.slice(0, i)] };
};
var tried = (s) => ({ ...s, pending: s.pending.slice(1) });
var failedMiss = (o) => o.gatewayStallMs !== null ? { host: o.host, kind: "gateway-stall", text: `${o.host} timed out while the gateway's event loop was blocked ${o.gatewayStallMs}ms` } : { host: o.host, kind: o.kind, text: `${o.host} ${o.kind === "timeout" ? "timed out" : "failed"}: ${o.message}` };
var failed = (s, o) => ({
  ...tried(s),
  attempts: s.attempts + 1,
  misses: [...s.misses, failedMiss(o)],
  onlyUnavailable: s.onlyUnavailable && (o.kind === "refused" || o.kind === "busy" || o.kind === "not-found"),
  over: o.kind === "rejected" ? "rejected" : null,
  last: o.kind === "rejected" ? { _tag: "Fail", error: new UpstreamRejected({ host: o.host, upstreamStatus: o.status ?? 400, upstreamError: o.message.replace(/^\d+: /, "") }) } : null
});
var waitExpired = (s, waited) => ({
  ...s,
  misses: [...s.misses, ...s.busy.map((b) => ({ host: b.host, kind: "saturated", text: `${b.host} all slots busy${waited ? ` for ${s.input.maxWaitMs / 1e3}s` : ""}` }))],
  over: "exhausted"
});
var evolve = (state, outcome) => {
  const s = settle(state);
  switch (outcome._tag) {
    case "Skipped":
      return tried(s);
    case "Busy":
      return { ...tried(s), busy: [...s.busy, s.pending[0]] };
    case "BreakerOpen":
      return { ...tried(s), misses: [...s.misses, { host: outcome.host, kind: "circuit-open", text: `${outcome.host} circuit open` }] };
    case "Failed":
      return failed(s, outcome);
    case "Succeeded":
      return { ...tried(s), attempts: s.attempts + 1, over: "succeeded", last: { _tag: "Done", host: outcome.host } };
    case "SlotFreed": {
      const again = s.round.filter((p) => s.busy.includes(p) || s.deferred.includes(p));
      return { ...s, round: again, pending: again, busy: [], deferred: [] };
    }
    case "WaitExpired":
      return waitExpired(s, outcome.waited);
  }
};
var exhaustedError = (s) => {
  const { lane, model, retryAfterSeconds } = s.input;
  if (s.plan.attempts.length === 0) {
    const kinds = new Set(s.plan.skipped.map((k) => k.reason.kind));
    const hosts = s.plan.skipped.map((k) => k.host);
    if (kinds.size === 1 && kinds.has("heavy-model-denied")) {
      return new ModelDenied({ lane, model, rule: `policy.heavyModelMinParamsB=${s.input.heavyModelMinParamsB} on protected hosts`, hosts });
    }
    if (kinds.size === 1 && kinds.has("model-not-installed")) return new ModelNotFound({ lane, model, hosts });
    return new AllHostsUnavailable({ lane, reasons: s.misses.map((m) => m.text), retryAfterSeconds });
  }
  const misses = s.misses.filter((m) => m.kind !== "only-when-unavailable");
  const all = (test) => misses.length > 0 && misses.every(test);
  if (all((m) => m.kind === "saturated")) return new LaneSaturated({ lane, reason: misses.map((m) => m.text).join("; "), retryAfterSeconds });
  if (all((m) => m.kind === "timeout")) return new AllAttemptsTimedOut({ lane, reasons: misses.map((m) => m.text) });
  if (all((m) => m.kind === "not-found" || m.kind === "model-not-installed")) return new ModelNotFound({ lane, model, hosts: misses.map((m) => m.host) });
  return new AllHostsUnavailable({ lane, reasons: s.misses.map((m) => m.text), retryAfterSeconds });
};
var exhausted = (s) => {
  const error = exhaustedError(s);
  const { paid, caller, lane } = s.input;
  const reason = paid.direct ? directReason(lane) : fallbackReason(s.misses, s.input.routeHosts);
  if (paid.providers.length === 0 || reason === null) return { _tag: "Fail", error };
  if (caller.mayPay === false) {
    const who = caller.caller ?? "anonymous";
    const skipped = { reason: `caller ${who} may not spend money on paid providers (paidFallback: false)`, providers: paid.providers, fallbackReason: reason, caller: caller.caller ?? null };
    const refusal = paid.direct ? new CallerForbidden({ caller: who, reason: `may not use the paid lane ${lane} (paidFallback: false)` }) : error;
    return { _tag: "PaidRefused", error: refusal, skipped };
  }
  return { _tag: "Pay", providers: paid.providers, reason, direct: paid.direct, error, attempts: s.attempts };
};
var next = (state) => {
  if (state.last !== null) return state.last;
  if (state.over === "exhausted") return exhausted(state);
  const s = settle(state);
  const step = s.pending[0];
  if (step !== void 0) {
    if (step.conditional && !s.onlyUnavailable) {
      return { _tag: "SkipConditional", host: step.host, message: `${step.host} is used only when the hosts before it are unavailable` };
    }
    return { _tag: "Try", step, attempt: s.attempts + 1 };
  }
  if (s.busy.length > 0) return { _tag: "WaitForSlot", hosts: s.busy.map((b) => b.host) };
  return exhausted(s);
};

// src/run/Cost.ts
var costOf = (usage, price) => usage === null || usage.inputTokens === null || usage.outputTokens === null ? null : usage.inputTokens * price.inputPerToken + usage.outputTokens * price.outputPerToken;

// src/run/Run.ts
var callerFacts = (caller) => ({
  intent: caller.intent,
  caller: caller.caller ?? null,
  legacy: caller.legacy,
  traceMinted: caller.traceMinted,
  parentSpanId: caller.parentSpanId
});

// src/routing/Lane.ts
var noMark = { at: 0, stalled: 0 };
var noLag = { lagMs: 0, longestStallMs: 0 };
var make4 = (name, config, deps) => Effect11.gen(function* () {
  const admitted = yield* Ref2.make(0);
  const observe = deps.observe?.(name, config) ?? ((run) => run);
  const route = config.route.map((s) => ({ host: s.host, timeoutMs: s.timeout, when: s.when }));
  const retryAfterSeconds = Math.max(1, Math.ceil(config.queue.maxWait / 1e3));
  const ollamaPrice = priceOf(deps.config.prices, config.model);
  const ollamaCost = (usage) => ollamaPrice === void 0 ? 0 : costOf(usage, ollamaPrice);
  const admit = Ref2.modify(admitted, (n) => n < config.queue.capacity ? [true, n + 1] : [false, n]);
  const leave = Ref2.update(admitted, (n) => n - 1);
  const snapshot = () => Effect11.gen(function* () {
    const hosts = {};
    for (const step of route) {
      const host = deps.hosts.get(step.host);
      if (host === void 0 || hosts[step.host] !== void 0) continue;
      const view = yield* host.view(name);
      hosts[step.host] = view.installed === null ? view : { ...view, installed: view.installed.filter((m) => sameModel(m.name, config.model)) };
    }
    return hosts;
  });
  const fail = (run, error, startedAt) => Effect11.gen(function* () {
    const now = yield* Clock5.currentTimeMillis;
    yield* run.append({ _tag: "RunFailed", status: error.status, error: error._tag, message: error.message, durationMs: now - startedAt });
    return yield* Effect11.fail(error);
  });
  const markLag = () => deps.lag?.mark() ?? noMark;
  const lagSince = (from) => deps.lag?.since(from) ?? noLag;
  const complete = (run, host, usage, startedAt, attemptStartedAt, firstChunkAt, lag) => Effect11.gen(function* () {
    const now = yield* Clock5.currentTimeMillis;
    yield* run.append({ _tag: "AttemptSucceeded", host, durationMs: now - attemptStartedAt, firstChunkMs: firstChunkAt === null ? null : firstChunkAt - attemptStartedAt, eventLoopLagMs: lag.lagMs, eventLoopStallMs: lag.longestStallMs });
    yield* run.append({
      _tag: "RunCompleted",
      endpoint: host,
      providerTier: "ollama",
      inputTokens: usage?.inputTokens ?? null,
      outputTokens: usage?.outputTokens ?? null,
      doneReason: usage?.doneReason ?? null,
      costUsd: ollamaCost(usage),
      durationMs: now - startedAt
    });
  });
  const attempt = (host, step, body, request2, started, lagAtStart) => {
    const path4 = operationPath[request2.operation];
    const judge = (exit) => {
      const outcome = classify(exit);
      return outcome === "timeout" && stalledByGateway(lagSince(lagAtStart).longestStallMs, step.timeoutMs) ? "ignore" : outcome;
    };
    const call = request2.stream ? Effect11.map(deps.upstream.openStream(host.target, path4, body, step.timeoutMs), (open) => ({ _tag: "Stream", open })) : Effect11.map(deps.upstream.unary(host.target, "POST", path4, body, step.timeoutMs), (r) => ({ _tag: "Unary", bytes: r.bytes, usage: usageOf(r.json) }));
    return host.breaker.guard(Effect11.zipRight(started, call), judge);
  };
  const decideAt = (now) => Effect11.gen(function* () {
    const input = {
      lane: name,
      model: config.model,
      route,
      hosts: yield* snapshot(),
      policy: { heavyModelMinParamsB: deps.config.policy.heavyModelMinParamsB },
      now: yield* now
    };
    return { input, plan: plan(input) };
  });
  const decide = decideAt(Clock5.currentTimeMillis);
  const attemptsInput = (request2, as) => {
    const direct = config.paid.length > 0;
    return {
      lane: name,
      model: config.model,
      routeHosts: route.map((s) => s.host),
      heavyModelMinParamsB: deps.config.policy.heavyModelMinParamsB,
      maxWaitMs: config.queue.maxWait,
      retryAfterSeconds,
      paid: { providers: deps.paid === void 0 ? [] : direct ? config.paid : config.paidFallback, direct },
      caller: request2.caller,
      attemptsSoFar: as?.attemptsSoFar ?? 0
    };
  };
  const drive = (at, state, signals) => {
    const step = next(state);
    const again = (outcome, armed = signals) => Effect11.suspend(() => drive(at, evolve(state, outcome), armed));
    switch (step._tag) {
      case "Try":
        return tryHost(at, step, state, signals);
      case "SkipConditional":
        return Effect11.zipRight(at.run.append({ _tag: "HostSkipped", host: step.host, reason: "only-when-unavailable", message: step.message }), again({ _tag: "Skipped", host: step.host }));
      case "WaitForSlot":
        return Effect11.flatMap(waitForSlot(at, signals), (outcome) => again(outcome, []));
      case "Fail":
        return fail(at.run, step.error, at.startedAt);
      case "PaidRefused":
        return Effect11.zipRight(at.run.append({ _tag: "PaidFallbackSkipped", ...step.skipped }), fail(at.run, step.error, at.startedAt));
      case "Pay":
        return pay(at, step);
      case "Done":
        return Effect11.dieMessage(`lane ${name}: the attempt loop went on after ${step.host} answered`);
    }
  };
  const pay = (at, step) => deps.paid.run({
    lane: name,
    run: at.run,
    runId: at.runId,
    caller: at.request.caller,
    request: at.request,
    providers: step.providers,
    reason: step.reason,
    direct: step.direct,
    startedAt: at.startedAt,
    attemptsSoFar: step.attempts,
    ollamaError: step.error
  });
  const waitForSlot = (at, signals) => Effect11.flatMap(Clock5.currentTimeMillis, (now) => {
    const deadline = at.startedAt + config.queue.maxWait;
    if (now >= deadline) return Effect11.succeed({ _tag: "WaitExpired", waited: false });
    return Effect11.raceAll(signals.map((d) => Deferred2.await(d))).pipe(
      Effect11.timeout(deadline - now),
      Effect11.option,
      Effect11.map((freed) => Option5.isSome(freed) ? { _tag: "SlotFreed" } : { _tag: "WaitExpired", waited: true })
    );
  });
  const tryHost = (at, step, state, signals) => Effect11.gen(function* () {
    const host = deps.hosts.get(step.step.host);
    const taken = yield* Effect11.uninterruptible(takeSlot(host));
    if (taken._tag === "Busy") return yield* drive(at, evolve(state, { _tag: "Busy", host: step.step.host }), [...signals, taken.signal]);
    const attemptStartedAt = yield* Clock5.currentTimeMillis;
    const started = at.run.append({ _tag: "AttemptStarted", attempt: step.attempt, host: step.step.host, timeoutMs: step.step.timeoutMs, slotPool: taken.pool });
    const lagAtStart = markLag();
    const result = yield* Effect11.either(attempt(host, step.step, at.body, at.request, started, lagAtStart).pipe(
      Effect11.tap((answer2) => answer2._tag === "Stream" ? Scope2.addFinalizer(taken.scope, answer2.open.close) : Effect11.void)
    ));
    const timing = { attemptStartedAt, now: yield* Clock5.currentTimeMillis, lagAtStart, lag: lagSince(lagAtStart) };
    if (result._tag === "Right") return yield* answered(at, step, result.right, taken.scope, timing);
    yield* Scope2.close(taken.scope, Exit6.void);
    return yield* drive(at, evolve(state, yield* missed(at, host, step, result.left, timing)), signals);
  });
  const takeSlot = (host) => Effect11.gen(function* () {
    const permit = yield* host.slots.acquireOrSignal(name);
    if (!("pool" in permit)) return { _tag: "Busy", signal: permit };
    const scope = yield* Effect11.flatMap(Effect11.scope, (request2) => Scope2.fork(request2, ExecutionStrategy.sequential));
    yield* Scope2.addFinalizer(scope, permit.release);
    return { _tag: "Taken", pool: permit.pool, scope };
  });
  const missed = (at, host, step, error, timing) => Effect11.gen(function* () {
    const h = step.step.host;
    if (error instanceof BreakerOpen) {
      yield* at.run.append({ _tag: "HostSkipped", host: h, reason: "circuit-open", until: error.until, probeInFlight: error.probeInFlight });
      return { _tag: "BreakerOpen", host: h };
    }
    const stall = error.kind === "timeout" && stalledByGateway(timing.lag.longestStallMs, step.step.timeoutMs);
    yield* at.run.append({
      _tag: "AttemptFailed",
      attempt: step.attempt,
      host: h,
      kind: error.kind,
      status: error.status,
      message: stall ? `${error.message}, but the gateway's event loop was blocked ${timing.lag.longestStallMs}ms of it: not counted against ${h}` : error.message,
      durationMs: timing.now - timing.attemptStartedAt,
      afterFirstChunk: false,
      eventLoopLagMs: timing.lag.lagMs,
      eventLoopStallMs: timing.lag.longestStallMs,
      ...stall ? { gatewayStall: true } : {}
    });
    if (error.kind === "refused") yield* host.reportRefused(error.message);
    return { _tag: "Failed", host: h, kind: error.kind, status: error.status, message: error.message, gatewayStallMs: stall ? timing.lag.longestStallMs : null };
  });
  const answered = (at, step, answer2, scope, timing) => Effect11.gen(function* () {
    const host = step.step.host;
    const info = { runId: at.runId, traceId: at.request.caller.traceId, lane: name, model: config.model, endpoint: host };
    if (answer2._tag === "Unary") {
      yield* Scope2.close(scope, Exit6.void);
      yield* complete(at.run, host, answer2.usage, at.startedAt, timing.attemptStartedAt, null, timing.lag);
      return { _tag: "Unary", info, bytes: answer2.bytes };
    }
    const source = yield* relay({
      lane: name,
      run: at.run,
      host,
      attempt: step.attempt,
      startedAt: at.startedAt,
      attemptStartedAt: timing.attemptStartedAt,
      complete: (usage) => complete(at.run, host, usage, at.startedAt, timing.attemptStartedAt, timing.now, lagSince(timing.lagAtStart))
    }, answer2.open, scope);
    return { _tag: "Stream", info, source, stream: toStream(source), idleTimeoutMs: step.step.timeoutMs };
  });
  const start = (request2, as, runId) => Effect11.gen(function* () {
    const caller = request2.caller;
    const run = observe(
      as?.run ?? makeStreamWriter(deps.journal, { streamId: `run-${runId}`, traceId: caller.traceId, projectId: caller.projectId, lane: name }, 0, { durableEnd: deps.config.server.durableRunEnd }),
      request2
    );
    if (as !== void 0) return run;
    yield* run.append({
      _tag: "RunStarted",
      runId,
      // The process that runs it: a run of a process that is gone is an orphan (journal/Orphans.ts).
      instance: deps.journal.instance,
      operation: request2.operation,
      protocol: request2.protocol ?? "ollama",
      stream: request2.stream,
      requestedModel: request2.body.model,
      assignedModel: config.model === "" ? null : config.model,
      ...callerFacts(caller),
      ...deps.config.server.journalPrompts ? { prompt: request2.prompt } : {}
    });
    return run;
  });
  const admitAndRoute = (request2, as, runId, run, startedAt) => Effect11.gen(function* () {
    if (config.async && as === void 0) return yield* fail(run, new AsyncOnlyLane({ lane: name }), startedAt);
    const admitted2 = yield* Effect11.acquireRelease(admit, (ok) => ok ? leave : Effect11.void);
    if (!admitted2) {
      return yield* fail(run, new LaneSaturated({ lane: name, reason: `admission queue full (${config.queue.capacity} requests in the lane)`, retryAfterSeconds }), startedAt);
    }
    const { input, plan: decision } = yield* decideAt(Effect11.succeed(startedAt));
    yield* run.append({ _tag: "RouteDecided", input, plan: decision });
    const body = decision.attempts.length === 0 ? new Uint8Array(0) : Buffer.from(JSON.stringify({ ...request2.body, model: config.model, stream: request2.stream }));
    const at = { run, runId, request: request2, startedAt, body };
    return yield* drive(at, initial(attemptsInput(request2, as), decision), []);
  });
  const handle = (request2, as) => Effect11.gen(function* () {
    const startedAt = yield* Clock5.currentTimeMillis;
    const runId = as?.runId ?? crypto.randomUUID();
    if (as === void 0 && deps.journal.unavailable()) return yield* Effect11.fail(new JournalUnavailable({ lane: name }));
    const run = yield* start(request2, as, runId);
    return yield* admitAndRoute(request2, as, runId, run, startedAt).pipe(
      Effect11.onExit((exit) => {
        if (Exit6.isSuccess(exit)) return Effect11.void;
        if (as !== void 0 && Option5.isNone(failureOf(exit.cause)) && Cause3.isInterruptedOnly(exit.cause)) return Effect11.void;
        return endRun(run, endOf(exit), startedAt);
      })
    );
  });
  return { name, config, handle, inFlight: Ref2.get(admitted), decide };
});

// test/support/MemoryJournal.ts
import { Effect as Effect13, Layer as Layer3 } from "effect";

// src/journal/Journal.ts
import * as SqlClient from "@effect/sql/SqlClient";
import { Chunk, Clock as Clock6, Config as Config2, Context as Context2, Data as Data3, Deferred as Deferred3, Duration as Duration2, Effect as Effect12, Exit as Exit7, Fiber, Layer as Layer2, Option as Option6, Queue } from "effect";
import * as fs3 from "node:fs";
import * as os from "node:os";
import * as path3 from "node:path";

// src/journal/Spill.ts
import * as fs2 from "node:fs";
import * as path2 from "node:path";
var nodeFs = {
  writeSync: (fd, buffer, offset, length) => fs2.writeSync(fd, buffer, offset, length),
  fsyncSync: (fd) => fs2.fsyncSync(fd),
  ftruncateSync: (fd, length) => fs2.ftruncateSync(fd, length)
};
var SEGMENT_PREFIX = "journal-spill-";
var MAX_SEGMENT_BYTES = 8 * 1024 * 1024;
var isRow = (v) => {
  const r = v;
  return typeof r === "object" && r !== null && typeof r.streamId === "string" && typeof r.streamPosition === "number" && typeof r.type === "string" && typeof r.data === "string" && typeof r.occurredAt === "string";
};
var Spill = class {
  constructor(dir, io = nodeFs) {
    this.dir = dir;
    this.io = io;
    fs2.mkdirSync(dir, { recursive: true });
    for (const name of this.segments()) {
      const n = Number(name.slice(SEGMENT_PREFIX.length, -".jsonl".length));
      if (Number.isFinite(n) && n >= this.seq) this.seq = n + 1;
    }
  }
  dir;
  io;
  current = null;
  seq = 0;
  /** Segment file names, oldest first. */
  segments() {
    let names;
    try {
      names = fs2.readdirSync(this.dir);
    } catch (error) {
      const code = error.code;
      if (code === "ENOENT" || code === "ENOTDIR") return [];
      throw error;
    }
    return names.filter((f) => f.startsWith(SEGMENT_PREFIX) && f.endsWith(".jsonl")).sort();
  }
  get pending() {
    return this.segments().length > 0;
  }
  /**
   * Appends rows and fsyncs before returning: once this returns, a SIGKILL cannot lose them. Throws
   * when the disk does not take them all; the segment is then as it was before the call.
   */
  append(rows) {
    if (rows.length === 0) return;
    if (this.current === null || this.current.bytes > MAX_SEGMENT_BYTES) this.rotate();
    const cur = this.current;
    const buffer = Buffer.from(rows.map((r) => JSON.stringify(r)).join("\n") + "\n", "utf8");
    try {
      let offset = 0;
      while (offset < buffer.length) {
        const n = this.io.writeSync(cur.fd, buffer, offset, buffer.length - offset);
        if (n <= 0) throw new Error(`the spill write made no progress (${offset} of ${buffer.length} bytes written)`);
        offset += n;
      }
      this.io.fsyncSync(cur.fd);
    } catch (error) {
      try {
        this.io.ftruncateSync(cur.fd, cur.bytes);
      } catch {
        this.seal();
      }
      throw error;
    }
    cur.bytes += buffer.length;
  }
  /** Closes the segment being written, so it can be replayed. */
  seal() {
    if (this.current === null) return;
    fs2.closeSync(this.current.fd);
    this.current = null;
  }
  /** The rows of one segment, and the lines that are not rows (a torn tail), by line number. */
  read(name) {
    const text = fs2.readFileSync(path2.join(this.dir, name), "utf8");
    const rows = [];
    const torn = [];
    const lines = text.split("\n");
    lines.forEach((line, i) => {
      if (line === "" && i === lines.length - 1) return;
      let parsed;
      try {
        parsed = JSON.parse(line);
      } catch {
        parsed = void 0;
      }
      if (isRow(parsed)) rows.push(parsed);
      else torn.push({ line: i + 1, bytes: Buffer.byteLength(line), last: i >= lines.length - 2 });
    });
    return { rows, torn };
  }
  remove(name) {
    if (this.current?.name === name) this.seal();
    fs2.rmSync(path2.join(this.dir, name), { force: true });
  }
  rotate() {
    this.seal();
    const name = `${SEGMENT_PREFIX}${String(this.seq++).padStart(10, "0")}.jsonl`;
    const fd = fs2.openSync(path2.join(this.dir, name), "a");
    this.current = { name, fd, bytes: 0 };
  }
};

// src/journal/Journal.ts
var JournalError = class extends Data3.TaggedError("JournalError") {
};
var journalConfigDefaults = {
  capacity: 1e4,
  batchSize: 512,
  linger: Duration2.millis(10),
  shutdownTimeout: Duration2.seconds(10),
  retryBase: Duration2.millis(50),
  retryCap: Duration2.seconds(2),
  writeTimeout: Duration2.seconds(5),
  spillDir: "./.data/spill"
};
var freshSpillDirs = /* @__PURE__ */ new Set();
var freshSpillDir = () => {
  const dir = fs3.mkdtempSync(path3.join(os.tmpdir(), "awooop-spill-"));
  freshSpillDirs.add(dir);
  return dir;
};
var JournalConfig = class extends Context2.Reference()("awooop/JournalConfig", {
  defaultValue: () => ({ ...journalConfigDefaults, spillDir: freshSpillDir() })
}) {
};
var JournalConfigFromEnv = Layer2.effect(
  JournalConfig,
  Config2.all({
    capacity: Config2.integer("AWOOOP_JOURNAL_CAPACITY").pipe(
      Config2.validate({ message: "must be \u2265 1", validation: (n) => n >= 1 }),
      Config2.withDefault(journalConfigDefaults.capacity)
    ),
    batchSize: Config2.integer("AWOOOP_JOURNAL_BATCH_SIZE").pipe(
      Config2.validate({ message: "must be \u2265 1", validation: (n) => n >= 1 }),
      Config2.withDefault(journalConfigDefaults.batchSize)
    ),
    linger: Config2.duration("AWOOOP_JOURNAL_LINGER").pipe(
      Config2.withDefault(Duration2.decode(journalConfigDefaults.linger))
    ),
    shutdownTimeout: Config2.duration("AWOOOP_JOURNAL_SHUTDOWN_TIMEOUT").pipe(
      Config2.withDefault(Duration2.decode(journalConfigDefaults.shutdownTimeout))
    ),
    spillDir: Config2.string("AWOOOP_SPILL_DIR").pipe(Config2.withDefault(journalConfigDefaults.spillDir))
  }).pipe(Effect12.map((c) => ({ ...journalConfigDefaults, ...c })))
);
var STOP = { _tag: "Stop" };
var MAX_INT4 = 2147483647;
var MIN_DATE_MS = -621355968e5;
var MAX_DATE_MS = 253402300799999;
var BAD_JSON_ESCAPE = /(?<!\\)((?:\\\\)*)\\u(?:0000|d[89a-f][0-9a-f]{2})/gi;
var cleanText = (s) => s.includes("\0") ? s.replaceAll("\0", "\uFFFD") : s;
var cleanNullable = (s) => s === null ? null : cleanText(s);
var storableJson = (json) => json.includes("\\u") ? json.replace(BAD_JSON_ESCAPE, "$1\\ufffd") : json;
var toJson = (data) => {
  let json;
  try {
    json = JSON.stringify(data);
  } catch (cause) {
    return { _tag: "Invalid", error: `data is not JSON-serialisable: ${String(cause)}` };
  }
  if (json === void 0) return "null";
  return storableJson(json);
};
var lastMs = Number.NaN;
var lastIso = "";
var isoOf = (ms) => {
  if (ms !== lastMs) {
    lastIso = new Date(ms).toISOString();
    lastMs = ms;
  }
  return lastIso;
};
var jsonString = (s) => storableJson(JSON.stringify(s));
var jsonNullable = (s) => s === null ? "null" : jsonString(s);
var prepare = (event) => {
  const position = event.streamPosition;
  if (!Number.isInteger(position) || position < 0 || position > MAX_INT4) {
    return { _tag: "Invalid", error: `${event.type} of ${event.streamId}: streamPosition must be an integer in [0, ${MAX_INT4}], got ${position}` };
  }
  const at = event.occurredAt;
  if (!Number.isFinite(at) || at < MIN_DATE_MS || at > MAX_DATE_MS) {
    return { _tag: "Invalid", error: `${event.type} of ${event.streamId}: occurredAt must be epoch milliseconds of a date in years 1..9999, got ${at}` };
  }
  const data = toJson(event.data);
  if (typeof data !== "string") return { _tag: "Invalid", error: `${event.type} of ${event.streamId}: ${data.error}` };
  return {
    _tag: "Row",
    streamId: cleanText(event.streamId),
    streamPosition: position,
    traceId: cleanNullable(event.traceId),
    projectId: cleanNullable(event.projectId),
    lane: cleanNullable(event.lane),
    type: cleanText(event.type),
    data,
    occurredAt: isoOf(at)
  };
};
var prepareAll = (events) => {
  const rows = [];
  for (const event of events) {
    const row = prepare(event);
    if (row._tag !== "Row") return row;
    rows.push(row);
  }
  return rows;
};
var isUniqueViolation = (error) => typeof error.cause === "object" && error.cause !== null && error.cause.code === "23505";
var invalidEvent = (invalid) => Effect12.dieMessage(`Journal: cannot store event ${invalid.error}`);
var toStored = (row) => ({
  globalPosition: row.globalPosition,
  streamId: row.streamId,
  streamPosition: row.streamPosition,
  traceId: row.traceId,
  projectId: row.projectId,
  lane: row.lane,
  type: row.type,
  data: row.data,
  occurredAt: row.occurredAt,
  recordedAt: row.recordedAt
});
var readFailed = (what) => (cause) => new JournalError({ reason: `cannot read ${what}`, cause });
var make5 = Effect12.gen(function* () {
  const sql = yield* SqlClient.SqlClient;
  const config = yield* JournalConfig;
  const batchSize = Math.max(1, Math.floor(config.batchSize));
  const queue = yield* Queue.bounded(Math.max(1, Math.floor(config.capacity)));
  let offered = 0;
  let written = 0;
  let batches = 0;
  let retries = 0;
  let failing = false;
  let closed = false;
  const instance = crypto.randomUUID();
  const openRuns = new OpenRuns();
  let inFlight = [];
  const insert = (rows, redelivery) => {
    const parts = new Array(rows.length);
    for (let i = 0; i < rows.length; i++) {
      const row = rows[i];
      parts[i] = `{"s":${jsonString(row.streamId)},"p":${row.streamPosition},"t":${jsonNullable(row.traceId)},"j":${jsonNullable(row.projectId)},"l":${jsonNullable(row.lane)},"y":${jsonString(row.type)},"o":"${row.occurredAt}","d":${row.data}}`;
    }
    const batch = `[${parts.join(",")}]`;
    const idempotent = sql`SELECT step_journal_append(${batch}::jsonb, true)`;
    if (redelivery) return idempotent;
    return sql`SELECT step_journal_append(${batch}::jsonb, false)`.pipe(
      Effect12.catchIf(isUniqueViolation, () => idempotent)
    );
  };
  const spill = new Spill(config.spillDir);
  let spilledRows = 0;
  let spillFailing = false;
  const unavailableLatch = yield* Effect12.makeLatch(false);
  const isUnavailable = () => failing && spillFailing;
  const lost = { dropped: 0, torn: 0, shutdown: 0 };
  let droppedUnlogged = 0;
  const setSpillFailing = (on) => Effect12.sync(() => {
    spillFailing = on;
    if (isUnavailable()) unavailableLatch.unsafeOpen();
    else unavailableLatch.unsafeClose();
  });
  const setFailing = (on) => Effect12.sync(() => {
    failing = on;
    if (isUnavailable()) unavailableLatch.unsafeOpen();
    else unavailableLatch.unsafeClose();
  });
  const logDropped = Effect12.suspend(() => {
    if (droppedUnlogged === 0) return Effect12.void;
    const n = droppedUnlogged;
    droppedUnlogged = 0;
    return Effect12.logError(
      `Journal: ${n} event(s) DROPPED (${lost.dropped} since start): neither Postgres nor the spill in ${config.spillDir} takes writes and the queue is full; awooop_journal_events_lost_total counts them`
    );
  });
  const replayTimeout = Duration2.times(Duration2.decode(config.writeTimeout), 3);
  const insertTimed = (rows, timeout = config.writeTimeout, redelivery = false) => insert(rows, redelivery).pipe(
    // Off the writer's path: an interrupted query cancels through the pool, which a black hole holds.
    Effect12.disconnect,
    Effect12.timeoutFail({ duration: timeout, onTimeout: () => new JournalError({ reason: `write timed out after ${Duration2.format(timeout)}` }) }),
    Effect12.catchAllDefect((defect) => Effect12.fail(new JournalError({ reason: "unexpected defect while writing", cause: defect }))),
    Effect12.either
  );
  const spillRows = (rows) => Effect12.try({
    try: () => {
      spill.append(rows);
      spilledRows += rows.length;
    },
    catch: (cause) => new JournalError({ reason: `cannot write the spill in ${config.spillDir}`, cause })
  }).pipe(Effect12.either);
  const reportTorn = (segment, torn) => Effect12.suspend(() => {
    if (torn.length === 0) return Effect12.void;
    lost.torn += torn.length;
    return Effect12.logError(
      `Journal: spill segment ${segment} has ${torn.length} torn line(s) (${torn.map((t) => `line ${t.line}, ${t.bytes} bytes${t.last ? ", the last" : ""}`).join("; ")}): ${torn.length} event(s) LOST (a process died while writing them); the rest is replayed`
    );
  });
  const replaySpill = (inherited) => Effect12.gen(function* () {
    spill.seal();
    for (const segment of spill.segments()) {
      const read = spill.read(segment);
      const rows = read.rows.map((r) => ({ _tag: "Row", ...r }));
      for (let i = 0; i < rows.length; i += batchSize) {
        const result = yield* insertTimed(rows.slice(i, i + batchSize), replayTimeout, true);
        if (result._tag === "Left") return false;
      }
      yield* reportTorn(segment, read.torn);
      spill.remove(segment);
      if (inherited) offered += rows.length;
      else spilledRows = Math.max(0, spilledRows - rows.length);
      written += rows.length;
      if (rows.length > 0) batches++;
    }
    return true;
  });
  const replayer = Effect12.gen(function* () {
    while (true) {
      yield* Effect12.sleep(failing ? config.retryBase : config.retryCap);
      yield* logDropped;
      if (!failing) continue;
      if (!(yield* replaySpill(false))) {
        yield* Effect12.sleep(config.retryCap);
        continue;
      }
      const back = yield* Effect12.sync(() => {
        if (spill.pending) return false;
        spilledRows = 0;
        failing = false;
        spillFailing = false;
        unavailableLatch.unsafeClose();
        return true;
      });
      if (back) yield* Effect12.logInfo("Journal: Postgres accepts writes again; every spilled event is now in step_journal");
    }
  }).pipe(
    // It must outlive anything a round can throw (an unreadable spill folder, say).
    Effect12.catchAllCause((cause) => Effect12.zipRight(Effect12.logError("Journal: the spill replayer failed; restarting it", cause), Effect12.sleep(config.retryCap))),
    Effect12.forever
  );
  const degradedError = new JournalError({ reason: "the journal is degraded (Postgres unavailable; events spill to local disk)" });
  const persist = (rows) => Effect12.gen(function* () {
    let pause = Duration2.toMillis(config.retryBase);
    while (true) {
      if (!failing) {
        const result = yield* insertTimed(rows);
        if (result._tag === "Right") {
          written += rows.length;
          batches++;
          return "committed";
        }
        retries++;
        yield* setFailing(true);
        yield* Effect12.logWarning(`Journal: writing ${rows.length} events failed; spilling to ${config.spillDir} until Postgres is back`, result.left);
      }
      const spilled = yield* spillRows(rows);
      if (spilled._tag === "Right") {
        if (spillFailing) {
          yield* setSpillFailing(false);
          yield* Effect12.logWarning(`Journal: the spill in ${config.spillDir} takes writes again`);
        }
        return "spilled";
      }
      if (!spillFailing) {
        yield* setSpillFailing(true);
        yield* Effect12.logError(
          `Journal: UNAVAILABLE \u2014 Postgres and the spill in ${config.spillDir} both refuse writes; holding ${rows.length} events and retrying both; new runs are refused (503) until one takes writes`,
          spilled.left
        );
      }
      retries++;
      yield* Effect12.sleep(pause);
      pause = Math.min(pause * 2, Duration2.toMillis(config.retryCap));
    }
  });
  const processBatch = (items) => Effect12.gen(function* () {
    inFlight = items;
    const rows = [];
    for (const item of items) if (item._tag === "Row") rows.push(item);
    const outcome = rows.length > 0 ? yield* persist(rows) : failing ? "spilled" : "committed";
    inFlight = [];
    let stop = false;
    for (const item of items) {
      if (item._tag === "Marker") {
        const ok = outcome === "committed" || item.level === "disk";
        Deferred3.unsafeDone(item.done, ok ? Exit7.void : Exit7.fail(degradedError));
      } else if (item._tag === "Stop") stop = true;
    }
    return stop;
  });
  if (spill.pending) {
    yield* Effect12.logInfo(`Journal: replaying events spilled by an earlier run from ${config.spillDir}`);
    while (!(yield* replaySpill(true))) yield* Effect12.sleep(config.retryCap);
  }
  yield* Effect12.forkScoped(replayer);
  const lingerMs = Duration2.toMillis(config.linger ?? journalConfigDefaults.linger);
  let endLinger = null;
  let awaited = false;
  const linger = Effect12.async((resume) => {
    const done = () => {
      endLinger = null;
      clearTimeout(timer);
      resume(Effect12.void);
    };
    const timer = setTimeout(done, lingerMs);
    endLinger = done;
    return Effect12.sync(() => {
      endLinger = null;
      clearTimeout(timer);
    });
  });
  const waitedFor = Effect12.sync(() => {
    if (endLinger !== null) endLinger();
    else awaited = true;
  });
  const writerLoop = Effect12.gen(function* () {
    while (true) {
      let items = Chunk.toReadonlyArray(yield* Queue.takeBetween(queue, 1, batchSize));
      if (lingerMs > 0 && items.length < batchSize && items.every((item) => item._tag === "Row")) {
        if (awaited) awaited = false;
        else {
          inFlight = items;
          yield* linger;
        }
        const more = yield* Queue.takeUpTo(queue, batchSize - items.length);
        if (more.length > 0) items = [...items, ...more];
      }
      const stop = yield* processBatch(items);
      if (stop) return;
    }
  });
  const writer = yield* Effect12.forkScoped(writerLoop);
  const takeRemaining = Effect12.gen(function* () {
    const all = [];
    while (true) {
      const chunk = yield* Queue.takeAll(queue);
      if (Chunk.isEmpty(chunk)) return all;
      for (const item of chunk) all.push(item);
    }
  });
  const endOpenRuns = Effect12.gen(function* () {
    const open = openRuns.drain();
    if (open.length === 0) return;
    const now = yield* Clock6.currentTimeMillis;
    const rows = [];
    for (const run of open) {
      for (const events of closingEvents(run, now, { status: 503, error: "ShuttingDown", message: "the gateway shut down before the run ended", shutdown: true })) {
        const row = prepare(events);
        if (row._tag === "Row") rows.push(row);
      }
    }
    offered += rows.length;
    yield* Queue.offerAll(queue, rows);
    yield* Effect12.logWarning(`Journal: ${open.length} run(s) still open at shutdown ended with RunFailed (ShuttingDown)`);
  });
  const shutdown = Effect12.gen(function* () {
    closed = true;
    const drain = Effect12.gen(function* () {
      yield* endOpenRuns;
      yield* Queue.offer(queue, STOP);
      yield* waitedFor;
      yield* Fiber.join(writer);
      const rest = yield* takeRemaining;
      for (let i = 0; i < rest.length; i += batchSize) {
        yield* processBatch(rest.slice(i, i + batchSize));
      }
    });
    const drained = yield* drain.pipe(Effect12.interruptible, Effect12.timeout(config.shutdownTimeout), Effect12.exit);
    yield* logDropped;
    if (Exit7.isSuccess(drained)) {
      yield* Effect12.logDebug(`Journal: closed; ${written} events written in total`);
      if (freshSpillDirs.delete(config.spillDir) && !spill.pending) {
        yield* Effect12.sync(() => fs3.rmSync(config.spillDir, { recursive: true, force: true })).pipe(Effect12.ignore);
      }
    } else {
      yield* Fiber.interrupt(writer).pipe(Effect12.timeout(Duration2.seconds(2)), Effect12.ignore);
      const left = [...inFlight, ...yield* takeRemaining];
      inFlight = [];
      let unwritten = 0;
      const failure = new JournalError({
        reason: `the journal closed before these events were committed (shutdown timeout ${Duration2.format(config.shutdownTimeout)})`
      });
      for (const item of left) {
        if (item._tag === "Row") unwritten++;
        else if (item._tag === "Marker") Deferred3.unsafeDone(item.done, Exit7.fail(failure));
      }
      lost.shutdown += unwritten;
      yield* Effect12.logError(
        `Journal: shutdown could not drain the queue within ${Duration2.format(config.shutdownTimeout)}: ${unwritten} events were NOT written to step_journal`
      );
    }
    yield* Queue.shutdown(queue);
  });
  yield* Effect12.addFinalizer(() => shutdown);
  const closedWarning = (n) => Effect12.suspend(() => {
    lost.shutdown += n;
    return Effect12.logError(`Journal: ${n} event(s) appended after the journal closed; NOT written (${lost.shutdown} lost at shutdown)`);
  });
  let lastDropLogAt = 0;
  const drop = (n) => Effect12.suspend(() => {
    lost.dropped += n;
    droppedUnlogged += n;
    return Effect12.flatMap(Clock6.currentTimeMillis, (now) => {
      if (now - lastDropLogAt < 1e3) return Effect12.void;
      lastDropLogAt = now;
      return logDropped;
    });
  });
  const unavailableError = new JournalError({ reason: "the journal is unavailable (neither Postgres nor the spill takes writes)" });
  const capacity = Math.max(1, Math.floor(config.capacity));
  const enqueue = (items, events) => {
    if (Option6.getOrElse(queue.unsafeSize(), () => capacity) + items.length <= capacity) {
      return Effect12.map(Queue.offerAll(queue, items), () => {
        offered += events;
      });
    }
    return Effect12.gen(function* () {
      for (let i = 0; i < items.length; i++) {
        const item = items[i];
        const put = Queue.unsafeOffer(queue, item) || (yield* Effect12.raceFirst(Effect12.as(Queue.offer(queue, item), true), Effect12.as(unavailableLatch.await, false)));
        if (put) {
          if (item._tag === "Row") offered++;
          continue;
        }
        const rest = items.slice(i);
        for (const left of rest) {
          if (left._tag === "Marker") Deferred3.unsafeDone(left.done, Exit7.fail(unavailableError));
        }
        return yield* drop(rest.filter((left) => left._tag === "Row").length);
      }
    });
  };
  const append = (event) => Effect12.suspend(() => {
    if (closed) return closedWarning(1);
    const row = prepare(event);
    if (row._tag !== "Row") return invalidEvent(row);
    openRuns.note(event);
    if (Queue.unsafeOffer(queue, row)) {
      offered++;
      return Effect12.void;
    }
    return enqueue([row], 1);
  });
  const appendAll = (events) => Effect12.suspend(() => {
    const list = Array.from(events);
    if (list.length === 0) return Effect12.void;
    if (closed) return closedWarning(list.length);
    const rows = prepareAll(list);
    if (!Array.isArray(rows)) return invalidEvent(rows);
    for (const event of list) openRuns.note(event);
    return enqueue(rows, rows.length);
  });
  const closedError = () => new JournalError({ reason: "the journal is closed" });
  const appendMarked = (events, level) => Effect12.suspend(() => {
    const list = isEvent(events) ? [events] : Array.from(events);
    if (closed) return Effect12.fail(closedError());
    const rows = prepareAll(list);
    if (!Array.isArray(rows)) return invalidEvent(rows);
    for (const event of list) openRuns.note(event);
    return Effect12.flatMap(Deferred3.make(), (done) => enqueue([...rows, { _tag: "Marker", done, level }], rows.length).pipe(
      Effect12.zipRight(waitedFor),
      Effect12.zipRight(Deferred3.await(done))
    ));
  });
  const appendDurable = (events) => appendMarked(events, "commit");
  const appendPersisted = (events) => appendMarked(events, "disk");
  const flush = Effect12.suspend(() => {
    if (closed) return Effect12.void;
    return Effect12.flatMap(Deferred3.make(), (done) => enqueue([{ _tag: "Marker", done, level: "commit" }], 0).pipe(
      Effect12.zipRight(waitedFor),
      Effect12.zipRight(Deferred3.await(done)),
      // Fails only when a shutdown timed out, which is logged with the count of lost events.
      Effect12.ignore
    ));
  });
  const streamHead = Effect12.fn("Journal.streamHead")(function* (streamId) {
    const rows = yield* sql`
      SELECT COALESCE(MAX(stream_position) + 1, 0)::int AS "head"
      FROM step_journal WHERE stream_id = ${streamId}`.pipe(Effect12.mapError(readFailed(`the head of ${streamId}`)));
    return rows[0]?.head ?? 0;
  });
  const selectStored = sql`
    SELECT global_position::float8 AS "globalPosition", stream_id AS "streamId",
      stream_position AS "streamPosition", trace_id AS "traceId", project_id AS "projectId", lane, type, data,
      floor(extract(epoch FROM occurred_at) * 1000)::float8 AS "occurredAt",
      floor(extract(epoch FROM recorded_at) * 1000)::float8 AS "recordedAt"
    FROM step_journal`;
  const readStream = Effect12.fn("Journal.readStream")(function* (streamId) {
    const rows = yield* sql`${selectStored} WHERE stream_id = ${streamId} ORDER BY global_position`.pipe(
      Effect12.mapError(readFailed(`stream ${streamId}`))
    );
    return rows.map(toStored);
  });
  const readTrace = Effect12.fn("Journal.readTrace")(function* (traceId) {
    const rows = yield* sql`${selectStored} WHERE trace_id = ${traceId} ORDER BY global_position`.pipe(
      Effect12.mapError(readFailed(`trace ${traceId}`))
    );
    return rows.map(toStored);
  });
  const stats = Effect12.sync(() => ({
    queued: Math.max(0, offered - written - spilledRows),
    degraded: failing,
    unavailable: isUnavailable(),
    spillFailing,
    spilled: spilledRows,
    written,
    batches,
    retries,
    lost: { ...lost },
    openRuns: openRuns.size
  }));
  return {
    /** This journal's (this process's) instance id: recorded on RunStarted, see Orphans.ts. */
    instance,
    append,
    appendAll,
    appendDurable,
    appendPersisted,
    flush,
    /** True while neither Postgres nor the spill takes writes: new runs are refused (503). */
    unavailable: isUnavailable,
    /** True while Postgres does not take writes (events spill). */
    degraded: () => failing,
    streamHead: (streamId) => streamHead(streamId),
    readStream: (streamId) => readStream(streamId),
    readTrace: (traceId) => readTrace(traceId),
    stats
  };
});
var closingEvents = (run, now, fields) => {
  const base = { streamId: run.streamId, traceId: run.traceId, projectId: run.projectId, lane: run.lane, occurredAt: now };
  let position = run.next;
  const events = [];
  const why = { ...fields.orphaned !== void 0 ? { orphaned: fields.orphaned } : {}, ...fields.shutdown !== void 0 ? { shutdown: fields.shutdown } : {} };
  for (const attempt of [...run.attempts].sort((a, b) => a - b)) {
    const { _tag: _tag2, ...data2 } = { _tag: "AttemptFailed", attempt, kind: "interrupted", message: fields.message, ...why };
    events.push({ ...base, streamPosition: position++, type: _tag2, data: data2 });
  }
  const { _tag, ...data } = { _tag: "RunFailed", ...fields, durationMs: Math.max(0, now - run.startedAt) };
  events.push({ ...base, streamPosition: position, type: _tag, data });
  return events;
};
var isEvent = (value) => typeof value.streamId === "string" && !(Symbol.iterator in value);
var Journal = class extends Effect12.Service()("awooop/Journal", {
  scoped: make5,
  dependencies: []
}) {
};

// test/support/MemoryJournal.ts
var makeMemoryJournal = Effect13.sync(() => {
  const stored = [];
  const write = (events) => Effect13.sync(() => {
    for (const event of events) stored.push({ ...event, globalPosition: stored.length + 1, recordedAt: event.occurredAt });
  });
  const one = (events) => Symbol.iterator in events ? events : [events];
  const stats = {
    queued: 0,
    degraded: false,
    unavailable: false,
    spillFailing: false,
    spilled: 0,
    written: 0,
    batches: 0,
    retries: 0,
    lost: { dropped: 0, torn: 0, shutdown: 0 },
    openRuns: 0
  };
  const journal = Journal.make({
    instance: crypto.randomUUID(),
    append: (event) => write([event]),
    appendAll: write,
    appendDurable: (events) => write(one(events)),
    appendPersisted: (events) => write(one(events)),
    flush: Effect13.void,
    unavailable: () => false,
    degraded: () => false,
    streamHead: (streamId) => Effect13.sync(() => stored.reduce((head, e) => e.streamId === streamId ? Math.max(head, e.streamPosition + 1) : head, 0)),
    readStream: (streamId) => Effect13.sync(() => stored.filter((e) => e.streamId === streamId)),
    readTrace: (traceId) => Effect13.sync(() => stored.filter((e) => e.traceId === traceId)),
    stats: Effect13.sync(() => ({ ...stats, written: stored.length }))
  });
  return Object.assign(journal, { events: () => [...stored] });
});
var MemoryJournalLive = Layer3.effect(Journal, makeMemoryJournal);

// bench/lane-micro.ts
var total = Number(process.argv[2] ?? 5e4);
var concurrency = Number(process.argv[3] ?? 32);
var answer = { model: "gemma3:4b", response: "hello", done: true, done_reason: "stop", prompt_eval_count: 1, eval_count: 3 };
var answerBytes = Buffer.from(JSON.stringify(answer) + "\n");
var polls = {
  "/api/tags": { models: [{ name: "gemma3:4b", model: "gemma3:4b", details: { parameter_size: "4.3B", family: "gemma3" } }] },
  "/api/ps": { models: [] },
  "/api/version": { version: "0.0.0" }
};
var upstream = OllamaUpstream.make({
  unary: (_t, method, path4) => Effect14.succeed(method === "GET" ? { bytes: Buffer.from(JSON.stringify(polls[path4])), json: polls[path4] } : { bytes: answerBytes, json: answer }),
  openStream: () => Effect14.dieMessage("not used")
});
var program = Effect14.gen(function* () {
  const config = yield* parseConfig(JSON.stringify({
    hosts: { "gcp-a": { url: "http://gcp-a.invalid", slots: 64, protected: true }, "gcp-b": { url: "http://gcp-b.invalid", slots: 64, protected: true } },
    lanes: { "alert-fast": { model: "gemma3:4b", reserved: { "gcp-a": 32 }, route: [{ host: "gcp-a", timeout: "45s" }, { host: "gcp-b", timeout: "45s" }], queue: { capacity: 1024 } } },
    server: { pollInterval: "600s" }
  }), "micro.json", {});
  const journal = yield* makeMemoryJournal;
  const hosts = /* @__PURE__ */ new Map();
  for (const [name, hc] of Object.entries(config.hosts)) {
    hosts.set(name, yield* make3(name, hc, name === "gcp-a" ? { "alert-fast": 32 } : {}, {
      journal,
      upstream,
      breaker: { consecutiveTimeouts: 3, cooldownMs: 3e4 },
      pollIntervalMs: 6e5,
      probeTimeoutMs: 1e3
    }));
  }
  for (const h of hosts.values()) yield* h.poll;
  const lane = yield* make4("alert-fast", config.lanes["alert-fast"], { journal, upstream, hosts, config });
  const one = Effect14.gen(function* () {
    const scope = yield* Scope3.make();
    const r = yield* Scope3.extend(lane.handle({
      operation: "generate",
      body: { model: "gemma3:4b", prompt: "why is the alert firing?", stream: false },
      stream: false,
      caller: { projectId: "bench", traceId: crypto.randomUUID().replaceAll("-", ""), parentSpanId: null, lane: "alert-fast", intent: null, legacy: false, traceMinted: false },
      prompt: null
    }), scope);
    yield* Scope3.close(scope, Exit8.void);
    return r;
  });
  yield* Effect14.forEach(Array.from({ length: 2e3 }), () => one, { concurrency, discard: true });
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  yield* Effect14.forEach(Array.from({ length: total }), () => one, { concurrency, discard: true });
  const cpu = process.cpuUsage(cpu0);
  const ms = performance.now() - t0;
  console.log(`${total} lane requests at c=${concurrency}: ${((cpu.user + cpu.system) / total).toFixed(1)} \xB5s CPU/req, ${(total / ms * 1e3).toFixed(0)} req/s, journal ${journal.events().length} events`);
});
Effect14.runPromise(Effect14.scoped(program)).catch((e) => {
  console.error(e);
  process.exit(1);
});
