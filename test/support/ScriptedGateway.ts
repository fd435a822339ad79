/**
 * The routing core without sockets or Postgres, for `TestClock` tests of routing decisions: the
 * host and lane actors (routing/Host.ts, routing/Lane.ts) built from the same test topology as
 * TestGateway.ts (real `parseConfig`), journaling into MemoryJournal.ts, calling the hosts of
 * ScriptedUpstream.ts. What HTTP adds (headers, the `{"error"}` body, the clients) stays with the e2e
 * suites; this is for what the lanes decide and when.
 *
 *   it.scoped("...", () => Effect.gen(function*() {
 *     const gw = yield* makeScriptedGateway({ breaker: { consecutiveTimeouts: 100 } })
 *     gw.host("gcp-a").script({ _tag: "Hang" })
 *     const a = yield* gw.generate("alert-fast")   // the TestClock moved on until it is answered
 *   }))
 */
import { Chunk, Clock, Effect, Either, Fiber, Option, type Scope, Stream, TestClock } from "effect"
import { parseConfig } from "../../src/config/GatewayConfig.ts"
import type { GatewayError } from "../../src/domain/Errors.ts"
import type { StoredEvent } from "../../src/journal/Journal.ts"
import * as Host from "../../src/routing/Host.ts"
import * as Lane from "../../src/routing/Lane.ts"
import { makeMemoryJournal } from "./MemoryJournal.ts"
import { makeScriptedUpstream } from "./ScriptedUpstream.ts"
import { buildRawConfig, mergeHosts, newTraceId, type TestGatewayOptions } from "./TestGateway.ts"

/** One request's outcome, as the HTTP edge would render it. */
export interface Answer {
  readonly traceId: string
  /** The host that answered (the `X-AwoooP-Endpoint` header), or null on an error. */
  readonly endpoint: string | null
  /** The answer's text (a unary `response`, or a stream's responses joined). */
  readonly text: string
  /** A stream's parsed lines (empty for a unary answer). */
  readonly lines: ReadonlyArray<{ readonly response?: string; readonly done?: boolean }>
  readonly error: GatewayError | null
  /** Clock time from the request to its answer (TestClock time under TestClock). */
  readonly ms: number
}

const decode = (bytes: Uint8Array) => Buffer.from(bytes).toString("utf8")

export const makeScriptedGateway = (options: TestGatewayOptions = {}): Effect.Effect<ScriptedGateway, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const names = Object.keys(mergeHosts(options))
    const raw = buildRawConfig(options, Object.fromEntries(names.map((n) => [n, `http://${n}.scripted.invalid`])))
    const config = yield* parseConfig(JSON.stringify(raw), "scripted-gateway.json", {})
    const journal = yield* makeMemoryJournal
    const upstream = makeScriptedUpstream(names)
    const hosts = new Map<string, Host.HostActor>()
    for (const [name, hostConfig] of Object.entries(config.hosts)) {
      const reservations = Object.fromEntries(Object.entries(config.lanes).flatMap(([lane, c]) => (c.reserved[name] ?? 0) > 0 ? [[lane, c.reserved[name]!]] : []))
      hosts.set(name, yield* Host.make(name, hostConfig, reservations, {
        journal,
        upstream: upstream.service,
        breaker: { consecutiveTimeouts: config.breaker.consecutiveTimeouts, cooldownMs: config.breaker.cooldown },
        pollIntervalMs: config.server.pollInterval,
        probeTimeoutMs: config.server.probeTimeout
      }))
    }
    const lanes = new Map<string, Lane.LaneActor>()
    for (const [name, laneConfig] of Object.entries(config.lanes)) {
      lanes.set(name, yield* Lane.make(name, laneConfig, { journal, upstream: upstream.service, hosts, config }))
    }
    const pollHosts = Effect.forEach(hosts.values(), (h) => h.poll, { discard: true })
    yield* pollHosts

    const send = (lane: string, init: { readonly stream?: boolean; readonly body?: Record<string, unknown> } = {}) =>
      Effect.gen(function*() {
        const traceId = newTraceId()
        const stream = init.stream ?? false
        const started = yield* Clock.currentTimeMillis
        const outcome = yield* Effect.either(lanes.get(lane)!.handle({
          operation: "generate",
          body: { model: "gemma3:4b", prompt: "why is the alert firing?", stream, ...init.body },
          stream,
          caller: { projectId: "awoooi", traceId, parentSpanId: null, lane, intent: null, legacy: false, traceMinted: false },
          prompt: null
        }))
        if (Either.isLeft(outcome)) {
          return { traceId, endpoint: null, text: "", lines: [], error: outcome.left, ms: (yield* Clock.currentTimeMillis) - started } satisfies Answer
        }
        const result = outcome.right
        const chunks = result._tag === "Unary" ? [result.bytes] : yield* Stream.runCollect(result.stream)
        const lines = [...chunks].flatMap((c) => decode(c).split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as { response?: string; done?: boolean }))
        return {
          traceId,
          endpoint: result.info.endpoint,
          text: lines.map((l) => l.response ?? "").join(""),
          lines: result._tag === "Unary" ? [] : lines,
          error: null,
          ms: (yield* Clock.currentTimeMillis) - started
        } satisfies Answer
        // The request's scope (as the edge's): the lane's admission and slot are released when the answer is read.
      }).pipe(Effect.scoped)

    /** Lets every fiber that can run, run (before the clock moves, so nothing is skipped over). */
    const runReady = Effect.repeatN(Effect.yieldNow(), 8)
    /** Moves the TestClock to the earliest pending sleep (a reply, a step timeout, a cooldown, a poll): each wakes at its exact time. */
    const advance = Effect.gen(function*() {
      const next = Chunk.reduce(yield* TestClock.sleeps(), Infinity, (a, b) => Math.min(a, b))
      const now = yield* TestClock.currentTimeMillis
      if (next !== Infinity) yield* TestClock.adjust(Math.max(0, next - now))
      return next === Infinity ? 1 : Math.max(1, next - now)
    })

    /** Moves the TestClock on until `check` holds (checked whenever every runnable fiber has run). */
    const waitFor = (what: string, check: Effect.Effect<boolean>, limitMs: number): Effect.Effect<void> =>
      Effect.gen(function*() {
        for (let waited = 0; ; waited += yield* advance) {
          yield* runReady
          if (yield* check) return
          if (waited > limitMs) return yield* Effect.dieMessage(`never happened: ${what}`)
        }
      })
    const until = (what: string, check: () => boolean, limitMs = 120_000) => waitFor(what, Effect.sync(check), limitMs)

    /** Runs `effect` in a fiber and moves the TestClock on until it is done. */
    const settle = <A, E>(effect: Effect.Effect<A, E>, limitMs = 120_000): Effect.Effect<A, E> =>
      Effect.gen(function*() {
        const fiber = yield* Effect.fork(effect)
        yield* waitFor("the effect to end", Effect.map(Fiber.poll(fiber), Option.isSome), limitMs)
        return yield* Fiber.join(fiber)
      })

    const readAll = (read: Effect.Effect<ReadonlyArray<StoredEvent>, unknown>) => Effect.orDie(read)
    return {
      config,
      journal,
      hosts,
      lanes,
      host: upstream.host,
      pollHosts,
      send,
      generate: (lane: string, init?: { readonly stream?: boolean; readonly body?: Record<string, unknown> }) => settle(send(lane, init)),
      settle,
      until,
      runEvents: (traceId: string) => readAll(journal.readTrace(traceId)),
      streamEvents: (streamId: string) => readAll(journal.readStream(streamId))
    }
  })

export type ScriptedGateway = {
  readonly config: import("../../src/config/GatewayConfig.ts").GatewayConfig
  readonly journal: import("./MemoryJournal.ts").MemoryJournal
  readonly hosts: ReadonlyMap<string, Host.HostActor>
  readonly lanes: ReadonlyMap<string, Lane.LaneActor>
  readonly host: ReturnType<typeof makeScriptedUpstream>["host"]
  readonly pollHosts: Effect.Effect<void>
  /** One generate on `lane`, without moving the clock (fork it, or use `generate`). */
  readonly send: (lane: string, init?: { readonly stream?: boolean; readonly body?: Record<string, unknown> }) => Effect.Effect<Answer>
  /** One generate on `lane`, the TestClock moved on until it is answered. */
  readonly generate: (lane: string, init?: { readonly stream?: boolean; readonly body?: Record<string, unknown> }) => Effect.Effect<Answer>
  readonly settle: <A, E>(effect: Effect.Effect<A, E>, limitMs?: number) => Effect.Effect<A, E>
  readonly until: (what: string, check: () => boolean, limitMs?: number) => Effect.Effect<void>
  readonly runEvents: (traceId: string) => Effect.Effect<ReadonlyArray<StoredEvent>>
  readonly streamEvents: (streamId: string) => Effect.Effect<ReadonlyArray<StoredEvent>>
}
