/**
 * The real gateway, end to end, for integration tests: N fake Ollama hosts (real HTTP on 127.0.0.1),
 * a config pointing at them (decoded by the real `parseConfig`, so every default and check applies),
 * the real HTTP server on 127.0.0.1 port 0, the real Journal on a fresh PostgreSQL database (or the
 * embedded PGlite one), and the same layer composition as src/main.ts.
 *
 * Plain async:
 *   const gw = await startTestGateway({ lanes: { bulk: { model: "gemma3:4b", route: [{ host: "gcp-a", timeout: "1s" }] } } })
 *   const res = await fetch(gw.url + "/api/generate", { ... })
 *   const events = await gw.runEvents(traceId)
 *   await gw.close()
 *
 * Effect (`@effect/vitest`): `layer(TestGatewayTag.layer(options), { excludeTestServices: true })`, then
 * `const gw = yield* TestGatewayTag` inside `it.effect`. Test services must stay excluded: the gateway
 * reads time through Clock, and a TestClock would freeze its timeouts.
 *
 * Several gateways can share one database (`startTestDatabase()`), which saves creating and
 * migrating one per gateway.
 */
import { HttpServer } from "@effect/platform"
import * as SqlClient from "@effect/sql/SqlClient"
import { Context, Effect, Exit, Layer, Logger, LogLevel, Scope } from "effect"
import { Ollama } from "ollama"
import { type GatewayConfig, GatewayConfigTag, parseConfig } from "../../src/config/GatewayConfig.ts"
import { Drain } from "../../src/http/Drain.ts"
import { HttpTest } from "../../src/http/Server.ts"
import { Journal, journalConfigLayer, type JournalConfigShape, type StoredEvent } from "../../src/journal/Journal.ts"
import { Projector, projectorConfigLayer } from "../../src/projections/Projector.ts"
import { ReadModel } from "../../src/projections/ReadModel.ts"
import { OperationsLive } from "../../src/operations/Operations.ts"
import { Gateway } from "../../src/routing/Gateway.ts"
import { layerEmbedded } from "../../src/storage/Database.ts"
import { MigrationsLive } from "../../src/storage/Migrations.ts"
import { type FakeOllama, type FakeOllamaOptions, startFakeOllama } from "./FakeOllama.ts"
import { type TestDatabase, TestDatabaseLive } from "./TestDatabase.ts"

// ---------------------------------------------------------------------------------------------
// Config

/** A host of the test topology. By default it is served by a fake named after the host. */
export interface TestHostSpec {
  readonly slots?: number
  readonly protected?: boolean
  /** Options for its fake (name defaults to the host name, so answers say "[gcp-a] hello world"). */
  readonly fake?: FakeOllamaOptions
  /** Point the host at this URL instead of starting a fake (e.g. a closed port). */
  readonly url?: string
}

/** Raw config as an operator writes it (durations as strings); decoded by the real schema. */
export type RawConfig = Record<string, unknown>

/** Step timeout used by the default test topology (the runbook's 45 s / 60 s / 120 s, shrunk). */
export const TEST_TIMEOUT = "300ms"

/** The runbook's topology with short timeouts. Lanes given in options replace these by name. */
export const defaultHosts: Record<string, TestHostSpec> = {
  "gcp-a": { slots: 4, protected: true },
  "gcp-b": { slots: 4, protected: true },
  "111": { slots: 2 },
  "gpu-node": { slots: 2 }
}

export const defaultLanes: Record<string, RawConfig> = {
  "alert-fast": {
    model: "gemma3:4b",
    reserved: { "gcp-a": 2, "gcp-b": 2 },
    // No keepWarm by default: background loads would show up in the fakes' request logs and
    // in-flight counts that routing tests assert on. A keep-warm suite sets it on its lane.
    route: [
      { host: "gcp-a", timeout: TEST_TIMEOUT },
      { host: "gcp-b", timeout: TEST_TIMEOUT },
      { host: "111", timeout: TEST_TIMEOUT }
    ]
  },
  "code-review": {
    model: "qwen2.5-coder:7b",
    route: [
      { host: "111", timeout: TEST_TIMEOUT },
      { host: "gcp-b", timeout: TEST_TIMEOUT, when: "unavailable" }
    ]
  },
  embedding: {
    model: "bge-m3",
    route: [
      { host: "111", timeout: TEST_TIMEOUT },
      { host: "gcp-b", timeout: TEST_TIMEOUT, when: "unavailable" }
    ]
  },
  "deep-rca": {
    model: "qwen2.5:14b",
    async: true,
    route: [{ host: "111", timeout: "2s" }, { host: "gpu-node", timeout: "2s" }]
  }
}

export interface TestGatewayOptions {
  /** Merged over `defaultHosts` by name; `null` removes a host. */
  readonly hosts?: Readonly<Record<string, TestHostSpec | null>>
  /** Merged over `defaultLanes` by name (a given lane replaces the default one whole); `null` removes a lane. */
  readonly lanes?: Readonly<Record<string, RawConfig | null>>
  readonly breaker?: RawConfig
  readonly policy?: RawConfig
  readonly legacy?: RawConfig
  /** Merged over the test server defaults (pollInterval 500ms, probeTimeout 3s, drainTimeout 1s; a generous probe timeout keeps a loaded CI machine from marking hosts down). */
  readonly server?: RawConfig
  /** Other top-level keys (providers, prices, budget, …) passed to the config as they are. */
  readonly extra?: RawConfig
  /** Environment for `parseConfig` (host URL overrides). */
  readonly env?: Record<string, string | undefined>
  /** Default: a fresh PostgreSQL database. */
  readonly database?: TestDatabaseHandle | { readonly embedded: string }
  /** Poll every host once before returning, so plan() knows installed models (default true). */
  readonly pollFirst?: boolean
  /** Gateway log level (default Error: tests provoke warnings on purpose). */
  readonly logLevel?: LogLevel.LogLevel
  /** Journal settings (write timeout, retry delays, spill folder); default: the journal's defaults. */
  readonly journal?: Partial<JournalConfigShape>
  /** Run the projector (every `intervalMs`, default 50) and serve the run/trace/cost API; default: neither. */
  readonly projections?: { readonly intervalMs?: number }
}

export const buildRawConfig = (options: TestGatewayOptions, urls: Record<string, string>): RawConfig => {
  const hosts: Record<string, RawConfig> = {}
  for (const [name, spec] of Object.entries(mergeHosts(options))) {
    hosts[name] = { url: urls[name]!, slots: spec.slots ?? 2, protected: spec.protected ?? false }
  }
  const lanes: Record<string, RawConfig> = {}
  for (const [name, lane] of Object.entries({ ...defaultLanes, ...options.lanes })) {
    if (lane !== null && lane !== undefined) lanes[name] = lane
  }
  const legacyLanes: Record<string, string> = {}
  for (const [model, lane] of Object.entries({ "gemma3:4b": "alert-fast", "qwen2.5-coder:7b": "code-review", "bge-m3": "embedding" })) {
    if (lane in lanes) legacyLanes[model] = lane
  }
  return {
    ...options.extra,
    hosts,
    breaker: { consecutiveTimeouts: 2, cooldown: "1s", ...options.breaker },
    policy: { heavyModelMinParamsB: 14, ...options.policy },
    legacy: { projectId: "awoooi", lanes: legacyLanes, ...options.legacy },
    lanes,
    server: { pollInterval: "500ms", probeTimeout: "3s", drainTimeout: "1s", ...options.server }
  }
}

export const mergeHosts = (options: TestGatewayOptions): Record<string, TestHostSpec> => {
  const out: Record<string, TestHostSpec> = {}
  for (const [name, spec] of Object.entries({ ...defaultHosts, ...options.hosts })) {
    if (spec !== null && spec !== undefined) out[name] = spec
  }
  return out
}

// ---------------------------------------------------------------------------------------------
// Database

/** A built database context several gateways can share. */
export interface TestDatabaseHandle {
  readonly context: Context.Context<TestDatabase>
  readonly close: () => Promise<void>
}

/** A fresh, migrated PostgreSQL database (dropped on close). */
export const startTestDatabase = async (): Promise<TestDatabaseHandle> => {
  const scope = Effect.runSync(Scope.make())
  const context = await Effect.runPromise(Layer.buildWithScope(TestDatabaseLive, scope))
  return { context, close: () => Effect.runPromise(Scope.close(scope, Exit.void)) }
}

// ---------------------------------------------------------------------------------------------
// The gateway

/** The services a test may reach into. */
export type GatewayServices = Gateway | Journal | SqlClient.SqlClient | GatewayConfigTag | Drain

export interface TestGateway {
  /** http://127.0.0.1:<port> of the gateway. */
  readonly url: string
  readonly config: GatewayConfig
  /** One fake per host (hosts given a `url` have none). */
  readonly fakes: Readonly<Record<string, FakeOllama>>
  /** The gateway's services, for Effect-style tests: `Effect.provide(gw.context)`. */
  readonly context: Context.Context<GatewayServices>
  /** Runs an effect against the gateway's own services. */
  readonly run: <A, E>(effect: Effect.Effect<A, E, GatewayServices>) => Promise<A>
  /** The real `ollama` client, pointed at the gateway, with these headers. */
  readonly ollama: (headers?: Record<string, string>) => Ollama
  /** POST a JSON body (an object is stringified, a string is sent as is). */
  readonly post: (path: string, body: unknown, headers?: Record<string, string>) => Promise<Response>
  /** Every journaled event of a trace, once each of its runs has ended (RunCompleted/RunFailed). */
  readonly runEvents: (traceId: string, options?: { readonly timeoutMs?: number }) => Promise<ReadonlyArray<StoredEvent>>
  /** Flush the journal, then read one stream ("run-<id>", "host-<name>"). */
  readonly streamEvents: (streamId: string) => Promise<ReadonlyArray<StoredEvent>>
  /** Flush the journal, then run SQL on the gateway's database. */
  readonly query: <T extends object = Record<string, unknown>>(sql: string, params?: ReadonlyArray<unknown>) => Promise<ReadonlyArray<T>>
  /** Poll every host now (health, installed, resident). */
  readonly pollHosts: () => Promise<void>
  readonly close: () => Promise<void>
}

const terminal = new Set(["RunCompleted", "RunFailed"])

/** Builds the whole gateway in the current scope. */
export const make = (options: TestGatewayOptions = {}): Effect.Effect<TestGateway, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const hostSpecs = mergeHosts(options)
    const fakes: Record<string, FakeOllama> = {}
    const urls: Record<string, string> = {}
    for (const [name, spec] of Object.entries(hostSpecs)) {
      if (spec.url !== undefined) {
        urls[name] = spec.url
        continue
      }
      const fake = yield* Effect.acquireRelease(
        Effect.promise(() => startFakeOllama({ name, ...spec.fake })),
        (f) => Effect.promise(() => f.stop())
      )
      fakes[name] = fake
      urls[name] = fake.url
    }
    const raw = buildRawConfig(options, urls)
    const config = yield* parseConfig(JSON.stringify(raw), "test-gateway.json", options.env ?? {})

    const database = options.database === undefined
      ? TestDatabaseLive
      : "embedded" in options.database
      ? Layer.provideMerge(MigrationsLive, layerEmbedded(options.database.embedded))
      : Layer.succeedContext(options.database.context)

    const live = HttpTest.pipe(
      Layer.provideMerge(Drain.Default),
      Layer.provideMerge(OperationsLive),
      Layer.provideMerge(Gateway.Default),
      Layer.provideMerge(
        options.projections === undefined
          ? Layer.empty
          : Layer.merge(
            Projector.Default.pipe(Layer.provide(projectorConfigLayer({ interval: options.projections.intervalMs ?? 50 }))),
            ReadModel.Default
          )
      ),
      Layer.provideMerge(options.journal === undefined ? Journal.Default : Journal.Default.pipe(Layer.provide(journalConfigLayer(options.journal)))),
      Layer.provideMerge(GatewayConfigTag.layerOf(config)),
      Layer.provideMerge(database)
    )
    const scope = yield* Effect.scope
    const level = options.logLevel ?? LogLevel.Error
    const context = yield* Layer.buildWithScope(live, scope).pipe(Logger.withMinimumLogLevel(level))

    const address = Context.get(context, HttpServer.HttpServer).address
    const url = address._tag === "TcpAddress" ? `http://127.0.0.1:${address.port}` : ""
    const journal = Context.get(context, Journal)
    const gateway = Context.get(context, Gateway)
    const sql = Context.get(context, SqlClient.SqlClient)

    const run = <A, E>(effect: Effect.Effect<A, E, GatewayServices>) =>
      Effect.runPromise(effect.pipe(Effect.provide(context), Logger.withMinimumLogLevel(level)))

    const pollHosts = () => run(Effect.forEach(gateway.hosts.values(), (h) => h.poll, { concurrency: "unbounded", discard: true }))
    // Ready = every host served by a fake has answered a poll (a cold, loaded CI machine can make the
    // very first poll miss its timeout and mark a host down until the next one).
    const fakeHostsUp = () =>
      run(Effect.forEach(Object.keys(fakes), (name) => gateway.hosts.get(name)!.health)).then((hs) => hs.every((h) => h.status === "up"))
    if (options.pollFirst ?? true) {
      yield* Effect.promise(async () => {
        const deadline = Date.now() + 15_000
        await pollHosts()
        while (!(await fakeHostsUp()) && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 50))
          await pollHosts()
        }
      })
    }

    const runEvents = async (traceId: string, opts?: { readonly timeoutMs?: number }) => {
      const deadline = Date.now() + (opts?.timeoutMs ?? 3_000)
      for (;;) {
        const events = await run(Effect.zipRight(journal.flush, journal.readTrace(traceId)))
        const started = new Set(events.filter((e) => e.type === "RunStarted").map((e) => e.streamId))
        const ended = new Set(events.filter((e) => terminal.has(e.type)).map((e) => e.streamId))
        if (started.size > 0 && [...started].every((s) => ended.has(s))) return events
        if (Date.now() > deadline) {
          throw new Error(`trace ${traceId}: runs did not end within the wait; journal has ${events.map((e) => e.type).join(", ") || "nothing"}`)
        }
        await new Promise((r) => setTimeout(r, 20))
      }
    }

    const tg: TestGateway = {
      url,
      config,
      context: context as Context.Context<GatewayServices>,
      fakes,
      run,
      ollama: (headers = {}) => new Ollama({ host: url, headers }),
      post: (path, body, headers = {}) =>
        fetch(url + path, {
          method: "POST",
          headers: { "content-type": "application/json", ...headers },
          body: typeof body === "string" ? body : JSON.stringify(body)
        }),
      runEvents,
      streamEvents: (streamId) => run(Effect.zipRight(journal.flush, journal.readStream(streamId))),
      query: <T extends object>(text: string, params: ReadonlyArray<unknown> = []) =>
        run(Effect.zipRight(journal.flush, sql.unsafe<T>(text, params as Array<unknown>))),
      pollHosts,
      close: () => Promise.resolve()
    }
    return tg
  })

/** Starts a gateway outside Effect; `close()` stops it, its fakes and (unless shared) its database. */
export const startTestGateway = async (options: TestGatewayOptions = {}): Promise<TestGateway> => {
  const scope = Effect.runSync(Scope.make())
  const exit = await Effect.runPromiseExit(Scope.extend(make(options), scope))
  if (Exit.isFailure(exit)) {
    await Effect.runPromise(Scope.close(scope, Exit.void))
    throw new Error(`test gateway did not start: ${String(exit.cause)}`)
  }
  let closed = false
  return {
    ...exit.value,
    close: async () => {
      if (closed) return
      closed = true
      await Effect.runPromise(Scope.close(scope, Exit.void))
    }
  }
}

/** The gateway as a service, for `layer(TestGateway.layer(options), { excludeTestServices: true })`. */
export class TestGatewayTag extends Context.Tag("test/TestGateway")<TestGatewayTag, TestGateway>() {
  static readonly layer = (options: TestGatewayOptions = {}) => Layer.scoped(TestGatewayTag, make(options))
}

// ---------------------------------------------------------------------------------------------
// Small helpers for assertions

/** Runs `p` and returns what it threw; fails if it did not throw. */
export const thrown = async (p: Promise<unknown> | (() => Promise<unknown>)): Promise<Error & { status_code?: number; error?: string }> => {
  try {
    await (typeof p === "function" ? p() : p)
  } catch (e) {
    return e as Error & { status_code?: number; error?: string }
  }
  throw new Error("expected a rejection")
}

export const collect = async <T>(itr: AsyncIterable<T>): Promise<Array<T>> => {
  const out: Array<T> = []
  for await (const part of itr) out.push(part)
  return out
}

/** Event types of one run stream, in order. */
export const typesOf = (events: ReadonlyArray<StoredEvent>, streamId?: string): Array<string> =>
  events.filter((e) => streamId === undefined || e.streamId === streamId).map((e) => e.type)

/** A valid random trace id (32 lowercase hex). */
export const newTraceId = (): string => {
  const bytes = crypto.getRandomValues(new Uint8Array(16))
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")
}
