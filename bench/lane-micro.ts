/**
 * The lane's own cost per request, in process: Lane + Host (slots, breaker) + the run's writer over an
 * in-memory journal, against an upstream that answers at once. No sockets, no Postgres: what is left
 * is the Effect work of routing one request (issue 14, item 4).
 *
 *   npx tsx bench/lane-micro.ts [requests=50000] [concurrency=32]
 */
import { Effect, Exit, Scheduler, Scope } from "effect"
import { parseConfig } from "../src/config/GatewayConfig.ts"
import * as Host from "../src/routing/Host.ts"
import * as Lane from "../src/routing/Lane.ts"
import { OllamaUpstream } from "../src/upstream/OllamaUpstream.ts"
import { makeMemoryJournal } from "../test/support/MemoryJournal.ts"

// Every Effect operation a fiber runs asks its scheduler whether to yield: counting those calls counts ops.
let ops = 0
const sched = Scheduler.defaultScheduler as unknown as { shouldYield: (f: unknown) => unknown }
const shouldYield = sched.shouldYield.bind(sched)
sched.shouldYield = (f) => (ops++, shouldYield(f))
const total = Number(process.argv[2] ?? 50000)
const concurrency = Number(process.argv[3] ?? 32)
const answer = { model: "gemma3:4b", response: "hello", done: true, done_reason: "stop", prompt_eval_count: 1, eval_count: 3 }
const answerBytes = Buffer.from(JSON.stringify(answer) + "\n")
const polls: Record<string, unknown> = {
  "/api/tags": { models: [{ name: "gemma3:4b", model: "gemma3:4b", details: { parameter_size: "4.3B", family: "gemma3" } }] },
  "/api/ps": { models: [] },
  "/api/version": { version: "0.0.0" }
}
const upstream = OllamaUpstream.make({
  unary: (_t, method, path) => Effect.succeed(method === "GET" ? { bytes: Buffer.from(JSON.stringify(polls[path])), json: polls[path] as Record<string, unknown> } : { bytes: answerBytes, json: answer }),
  openStream: () => Effect.dieMessage("not used")
})

const program = Effect.gen(function*() {
  const config = yield* parseConfig(JSON.stringify({
    hosts: { "gcp-a": { url: "http://gcp-a.invalid", slots: 64, protected: true }, "gcp-b": { url: "http://gcp-b.invalid", slots: 64, protected: true } },
    lanes: { "alert-fast": { model: "gemma3:4b", reserved: { "gcp-a": 32 }, route: [{ host: "gcp-a", timeout: "45s" }, { host: "gcp-b", timeout: "45s" }], queue: { capacity: 1024 } } },
    server: { pollInterval: "600s" }
  }), "micro.json", {})
  const journal = yield* makeMemoryJournal
  const hosts = new Map<string, Host.HostActor>()
  for (const [name, hc] of Object.entries(config.hosts)) {
    hosts.set(name, yield* Host.make(name, hc, name === "gcp-a" ? { "alert-fast": 32 } : {}, {
      journal, upstream, breaker: { consecutiveTimeouts: 3, cooldownMs: 30000 }, pollIntervalMs: 600000, probeTimeoutMs: 1000
    }))
  }
  for (const h of hosts.values()) yield* h.poll
  const lane = yield* Lane.make("alert-fast", config.lanes["alert-fast"]!, { journal, upstream, hosts, config })
  const one = Effect.gen(function*() {
    const scope = yield* Scope.make()
    const r = yield* Scope.extend(lane.handle({
      operation: "generate",
      body: { model: "gemma3:4b", prompt: "why is the alert firing?", stream: false },
      stream: false,
      caller: { projectId: "bench", traceId: crypto.randomUUID().replaceAll("-", ""), parentSpanId: null, lane: "alert-fast", intent: null, legacy: false, traceMinted: false },
      prompt: null
    } as never), scope)
    yield* Scope.close(scope, Exit.void)
    return r
  })
  // warm up
  yield* Effect.forEach(Array.from({ length: 2000 }), () => one, { concurrency, discard: true })
  ops = 0
  yield* one
  console.log(`one request alone: ${ops} Effect ops`)
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  yield* Effect.forEach(Array.from({ length: total }), () => one, { concurrency, discard: true })
  const cpu = process.cpuUsage(cpu0)
  const ms = performance.now() - t0
  console.log(`${total} lane requests at c=${concurrency}: ${((cpu.user + cpu.system) / total).toFixed(1)} µs CPU/req, ${(total / ms * 1000).toFixed(0)} req/s, journal ${journal.events().length} events`)
})
Effect.runPromise(Effect.scoped(program)).catch((e) => { console.error(e); process.exit(1) })
