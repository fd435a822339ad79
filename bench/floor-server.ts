/**
 * A floor server for bench/floor.ts (see there): `node --import tsx bench/floor-server.ts <mode> <host url> [database url]`,
 * prints `READY <port>`. Modes: effect, journal, run-row, projector.
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http"
import { Effect, Layer, ManagedRuntime } from "effect"
import { Agent, request } from "undici"
import { timeOrderedUuid } from "../src/domain/TimeOrderedId.ts"
import { Journal, journalConfigLayer } from "../src/journal/Journal.ts"
import { Projector, projectorConfigLayer } from "../src/projections/Projector.ts"
import { layerFromUrl } from "../src/storage/Database.ts"
import { MigrationsLive } from "../src/storage/Migrations.ts"

export type Mode = "effect" | "journal" | "run-row" | "projector"

/** One gateway run's events as the gateway journaled them (bench/gateway.ts's request), ids replaced per request. */
const runEvents = (runId: string, now: number) => [
  { type: "RunStarted", data: { runId, caller: null, intent: null, legacy: false, stream: false, instance: "floor", protocol: "ollama", operation: "generate", traceMinted: true, parentSpanId: null, assignedModel: "gemma3:4b", requestedModel: "gemma3:4b" } },
  { type: "RouteDecided", data: { plan: { skipped: [], attempts: [{ host: "gcp-a", timeoutMs: 45000, conditional: false }, { host: "gcp-b", timeoutMs: 45000, conditional: false }] }, input: { now, lane: "alert-fast", hosts: Object.fromEntries(["gcp-a", "gcp-b"].map((h) => [h, { slots: { inUse: 0, total: 64, freeForLane: 64 }, health: "up", breaker: { status: "closed", reopensAt: null, probeInFlight: false }, installed: [{ name: "gemma3:4b", parameterSize: "4.3B" }], protected: true, maintenance: { open: false, until: null } }])), model: "gemma3:4b", route: [{ host: "gcp-a", when: "always", timeoutMs: 45000 }, { host: "gcp-b", when: "always", timeoutMs: 45000 }], policy: { heavyModelMinParamsB: 14 } } } },
  { type: "AttemptStarted", data: { host: "gcp-a", attempt: 1, slotPool: "reserved", timeoutMs: 45000 } },
  { type: "AttemptSucceeded", data: { host: "gcp-a", durationMs: 3, firstChunkMs: null, eventLoopLagMs: 0, eventLoopStallMs: 0 } },
  { type: "RunCompleted", data: { costUsd: 0, endpoint: "gcp-a", doneReason: "stop", durationMs: 4, inputTokens: 6, outputTokens: 8, providerTier: "ollama" } }
]

const serve = async (mode: Mode, upstream: string, dbUrl: string | undefined) => {
  const agent = new Agent({ connections: 256, keepAliveTimeout: 30_000 })
  const storage = Layer.provideMerge(MigrationsLive, layerFromUrl(dbUrl ?? ""))
  const projector = mode === "projector" ? Projector.Default.pipe(Layer.provide(projectorConfigLayer({}))) : Layer.empty
  const journal = Layer.merge(Journal.Default.pipe(Layer.provide(journalConfigLayer({}))), projector).pipe(Layer.provideMerge(storage))
  // "effect" builds no layer at all: no pool, no journal.
  const runtime = ManagedRuntime.make((mode === "effect" ? Layer.empty : journal) as Layer.Layer<Journal>)
  const services = mode === "effect" ? null : await runtime.runPromise(Journal)

  const body = (req: IncomingMessage) =>
    Effect.async<Buffer>((resume) => {
      const chunks: Array<Buffer> = []
      req.on("data", (c: Buffer) => chunks.push(c))
      req.on("end", () => resume(Effect.succeed(Buffer.concat(chunks))))
    })
  const call = (bytes: Buffer) =>
    Effect.tryPromise(async () => {
      const r = await request(`${upstream}/api/generate`, { method: "POST", dispatcher: agent, headers: { "content-type": "application/json" }, body: bytes })
      return { status: r.statusCode, bytes: Buffer.from(await r.body.arrayBuffer()) }
    })
  const append = (runId: string, traceId: string, from: number, to: number, now: number) =>
    services === null ? Effect.void : mode === "run-row"
    ? (to < 5 ? Effect.void : services.append({ streamId: `run-${runId}`, streamPosition: 0, traceId, projectId: "bench", lane: "alert-fast", type: "RunRecorded", data: runEvents(runId, now), occurredAt: now }))
    : Effect.forEach(runEvents(runId, now).slice(from, to), (e, i) =>
      services.append({ streamId: `run-${runId}`, streamPosition: from + i, traceId, projectId: "bench", lane: "alert-fast", type: e.type, data: e.data, occurredAt: now }), { discard: true })
  const handle = (req: IncomingMessage, res: ServerResponse) =>
    Effect.gen(function*() {
      const bytes = yield* body(req)
      const parsed = JSON.parse(bytes.toString("utf8")) as { readonly model?: unknown }
      if (typeof parsed.model !== "string") return res.writeHead(400).end()
      // Run ids as the gateway makes them: time-ordered, so the stream key's index grows at its end.
      const runId = timeOrderedUuid()
      const traceId = crypto.randomUUID().replaceAll("-", "")
      yield* append(runId, traceId, 0, 3, Date.now())
      const answer = yield* call(bytes)
      JSON.parse(answer.bytes.toString("utf8")) // the usage a run's cost is computed from
      yield* append(runId, traceId, 3, 5, Date.now())
      res.writeHead(answer.status, { "content-type": "application/json; charset=utf-8" }).end(answer.bytes)
    }).pipe(Effect.catchAllCause(() => Effect.sync(() => res.writeHead(502).end())))
  const server = createServer((req, res) => {
    if (req.method === "GET") return res.end("ok")
    runtime.runFork(handle(req, res))
  })
  server.listen(0, "127.0.0.1", () => {
    const address = server.address()
    process.stdout.write(`READY ${typeof address === "object" && address !== null ? address.port : 0}\n`)
  })
  process.on("SIGTERM", () => server.close(() => void runtime.dispose().then(() => process.exit(0))))
}

await serve(process.argv[2] as Mode, process.argv[3]!, process.argv[4])
