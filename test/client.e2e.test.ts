/**
 * The typed Effect client (imported as the package's `./client` export) against a live gateway:
 * answers decoded by the API's schemas, streams of typed chunks, and each gateway refusal as its
 * tagged error in the error channel.
 */
import { FetchHttpClient } from "@effect/platform"
import { Chunk, Effect, Either, Stream } from "effect"
import {
  GatewayClient,
  type GatewayClientError,
  type GatewayClientService
} from "awooop-inference-gateway/client"
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest"
import { fakeEmbedding, fakeText } from "./support/FakeOllama.ts"
import { newTraceId, startTestGateway, type TestGateway } from "./support/TestGateway.ts"

process.env.AWOOOP_CLIENT_TEST_GEMINI_KEY = "gem-client-test-key"
delete process.env.AWOOOP_CLIENT_TEST_UNSET_KEY

let gw: TestGateway

const run = <A>(f: (client: GatewayClientService) => Effect.Effect<A, GatewayClientError>) =>
  Effect.runPromise(Effect.flatMap(GatewayClient, f).pipe(
    Effect.provide(GatewayClient.layer({ baseUrl: gw.url, defaults: { project: "awoooi" } })),
    Effect.provide(FetchHttpClient.layer)
  ))

/** The call's failure (it must fail). */
const failure = async (f: (client: GatewayClientService) => Effect.Effect<unknown, GatewayClientError>) => {
  const result = await run((c) => Effect.either(f(c)))
  if (Either.isRight(result)) throw new Error(`expected a failure, got ${JSON.stringify(result.right)}`)
  return result.left
}

beforeAll(async () => {
  gw = await startTestGateway({
    projections: {},
    breaker: { consecutiveTimeouts: 1000 },
    server: { maxBodyBytes: 16_384 },
    lanes: {
      heavy: { model: "qwen2.5:14b", route: [{ host: "gcp-a", timeout: "300ms" }] },
      missing: { model: "nope:1b", route: [{ host: "111", timeout: "300ms" }] },
      tiny: { model: "gemma3:4b", route: [{ host: "gpu-node", timeout: "2s" }], queue: { capacity: 1, maxWait: "200ms" } },
      "paid-denied": { paid: ["gemini"] },
      "paid-missing": { paid: ["claude"] }
    },
    extra: {
      providers: {
        // Never called: the budget refuses first (gemini), or its key is not set (claude).
        gemini: { kind: "gemini", model: "gemini-2.5-flash", apiKeyEnv: "AWOOOP_CLIENT_TEST_GEMINI_KEY", baseUrl: "http://127.0.0.1:9", timeout: "1s" },
        claude: { kind: "anthropic", model: "claude-haiku-4-5", apiKeyEnv: "AWOOOP_CLIENT_TEST_UNSET_KEY", baseUrl: "http://127.0.0.1:9", timeout: "1s" }
      },
      prices: { "gemini-2.5-flash": { input: 0.30, output: 2.50 }, "claude-haiku-4-5": { input: 1, output: 5 } },
      budget: { hardKillUsd: 0.000001, period: "day" }
    }
  })
}, 30_000)

afterAll(async () => {
  await gw?.close()
})

beforeEach(() => {
  for (const fake of Object.values(gw.fakes)) fake.setMode("ok")
})

describe("answers", () => {
  it("generate, chat and embed decode into the API's response types; the options become the AwoooP headers", async () => {
    const trace = newTraceId()
    const answer = await run((c) => c.generate({ model: "gemma3:4b", prompt: "why?" }, { lane: "alert-fast", trace, intent: "DIAGNOSE" }))
    expect(answer.response).toBe("[gcp-a] hello world")
    expect(answer.done).toBe(true)
    expect(answer.eval_count).toBeGreaterThan(0)
    const started = (await gw.runEvents(trace)).find((e) => e.type === "RunStarted")!
    expect(started.projectId).toBe("awoooi")
    expect((started.data as Record<string, unknown>).intent).toBe("DIAGNOSE")

    const chat = await run((c) => c.chat({ model: "gemma3:4b", messages: [{ role: "user", content: "hi" }] }, { lane: "alert-fast" }))
    expect(chat.message.content).toBe("[gcp-a] hello world")
    expect(chat.message.role).toBe("assistant")

    const embedded = await run((c) => c.embed({ model: "bge-m3", input: ["alpha"] }, { lane: "embedding" }))
    expect(embedded.embeddings).toEqual([fakeEmbedding("bge-m3", "alpha")])
  })

  it("a caller's own traceparent reaches the gateway (the client's span propagation does not replace it)", async () => {
    const trace = newTraceId()
    await run((c) => c.generate({ model: "gemma3:4b", prompt: "x" }, { lane: "alert-fast", traceparent: `00-${trace}-1234567890abcdef-01` }))
    const started = (await gw.runEvents(trace)).find((e) => e.type === "RunStarted")!
    expect((started.data as Record<string, unknown>).parentSpanId).toBe("1234567890abcdef")
  })

  it("tags and ps", async () => {
    const tags = await run((c) => c.tags)
    const gemma = tags.models.find((m) => m.name === "gemma3:4b")!
    expect([...gemma.awooop_hosts].sort()).toEqual(["111", "gcp-a", "gcp-b", "gpu-node"])
    expect(gemma.details?.parameter_size).toBe("4.3B")
    const ps = await run((c) => c.ps)
    expect(Array.isArray(ps.models)).toBe(true)
    for (const m of ps.models) expect(typeof m.awooop_host).toBe("string")
  })

  it("streams typed chunks, ending with the final one", async () => {
    const chunks = await run((c) => Stream.runCollect(c.generateStream({ model: "gemma3:4b", prompt: "why?" }, { lane: "alert-fast" })))
    const all = Chunk.toReadonlyArray(chunks)
    expect(all.map((c) => c.response).join("")).toBe(fakeText("gcp-a", 3))
    expect(all[all.length - 1]!.done).toBe(true)
    expect(all.slice(0, -1).every((c) => !c.done)).toBe(true)
    expect(all[all.length - 1]!.done_reason).toBe("stop")

    const chat = await run((c) => Stream.runCollect(c.chatStream({ model: "gemma3:4b", messages: [{ role: "user", content: "hi" }] }, { lane: "alert-fast" })))
    expect(Chunk.toReadonlyArray(chat).map((c) => c.message.content).join("")).toBe(fakeText("gcp-a", 3))
  })

  it("async runs: a generate on an async lane is accepted as a run; submit and poll to success", async () => {
    const accepted = await failure((c) => c.generate({ model: "qwen2.5:14b", prompt: "root cause?" }, { lane: "deep-rca" }))
    expect(accepted._tag).toBe("RequestAccepted")

    const submitted = await run((c) => c.submitRun({ operation: "chat", model: "qwen2.5:14b", messages: [{ role: "user", content: "rca" }] }, { lane: "deep-rca" }))
    expect(submitted.status).toBe("queued")
    expect(submitted.statusUrl).toBe(`/awooop/runs/${submitted.runId}`)
    const deadline = Date.now() + 5_000
    for (;;) {
      const status = await run((c) => c.runStatus(submitted.runId))
      if ("attemptLog" in status && status.status === "succeeded") {
        expect(status.lane).toBe("deep-rca")
        expect((status.result as { message: { content: string } }).message.content).toBe("[111] hello world")
        break
      }
      if (Date.now() > deadline) throw new Error(`run did not finish: ${JSON.stringify(status)}`)
      await new Promise((r) => setTimeout(r, 50))
    }
  })
})

describe("typed errors", () => {
  const generate = (lane: string | undefined, body: { model: string; prompt?: string } = { model: "gemma3:4b", prompt: "x" }) =>
    (c: GatewayClientService) => c.generate(body, lane === undefined ? {} : { lane })

  it("BadRequest, UnknownLane, BodyTooLarge", async () => {
    const bad = await failure(generate(undefined, { model: "llama-nobody-maps" }))
    expect(bad._tag).toBe("BadRequest")
    if (bad._tag === "BadRequest") expect(bad.message).toMatch(/no lane for model/)

    const unknown = await failure(generate("no-such-lane"))
    expect(unknown._tag).toBe("UnknownLane")
    if (unknown._tag === "UnknownLane") {
      expect(unknown.lane).toBe("no-such-lane")
      expect(unknown.known).toContain("alert-fast")
    }

    const large = await failure(generate("alert-fast", { model: "gemma3:4b", prompt: "x".repeat(20_000) }))
    expect(large._tag).toBe("BodyTooLarge")
    if (large._tag === "BodyTooLarge") expect(large.limit).toBe(16_384)
  })

  it("ModelDenied, ModelNotFound, AsyncOnlyLane, UpstreamRejected", async () => {
    const denied = await failure(generate("heavy", { model: "qwen2.5:14b", prompt: "x" }))
    expect(denied._tag).toBe("ModelDenied")
    if (denied._tag === "ModelDenied") expect(denied.hosts).toEqual(["gcp-a"])

    const notFound = await failure(generate("missing", { model: "nope:1b", prompt: "x" }))
    expect(notFound._tag).toBe("ModelNotFound")
    if (notFound._tag === "ModelNotFound") expect(notFound.model).toBe("nope:1b")

    const asyncOnly = await failure((c) => c.embed({ model: "qwen2.5:14b", input: "x" }, { lane: "deep-rca" }))
    expect(asyncOnly._tag).toBe("AsyncOnlyLane")

    // bge-m3 cannot generate: the host's own 400 is passed on.
    const rejected = await failure(generate("embedding", { model: "bge-m3", prompt: "x" }))
    expect(rejected._tag).toBe("UpstreamRejected")
    if (rejected._tag === "UpstreamRejected") {
      expect(rejected.upstreamStatus).toBe(400)
      expect(rejected.host).toBe("111")
    }
  })

  it("AllHostsUnavailable, AllAttemptsTimedOut, LaneSaturated", async () => {
    for (const h of ["gcp-a", "gcp-b", "111"]) gw.fakes[h]!.setMode("busy503")
    const unavailable = await failure(generate("alert-fast"))
    expect(unavailable._tag).toBe("AllHostsUnavailable")
    if (unavailable._tag === "AllHostsUnavailable") expect(unavailable.retryAfterSeconds).toBeGreaterThan(0)

    for (const h of ["gcp-a", "gcp-b", "111"]) gw.fakes[h]!.setMode("hang")
    const timedOut = await failure(generate("alert-fast"))
    expect(timedOut._tag).toBe("AllAttemptsTimedOut")
    if (timedOut._tag === "AllAttemptsTimedOut") expect(timedOut.reasons).toHaveLength(3)

    gw.fakes["gpu-node"]!.setMode("slow", { delayMs: 600 })
    const [first, second] = await Promise.all([
      run((c) => Effect.either(generate("tiny")(c))),
      new Promise((r) => setTimeout(r, 100)).then(() => run((c) => Effect.either(generate("tiny")(c))))
    ])
    expect(Either.isRight(first)).toBe(true)
    expect(Either.isLeft(second) && second.left._tag).toBe("LaneSaturated")
  })

  it("BudgetDenied and PaidProvidersFailed on paid lanes", async () => {
    const denied = await failure(generate("paid-denied"))
    expect(denied._tag).toBe("BudgetDenied")
    const failed = await failure(generate("paid-missing"))
    expect(failed._tag).toBe("PaidProvidersFailed")
    if (failed._tag === "PaidProvidersFailed") expect(failed.reasons.join(" ")).toMatch(/claude/)
  })

  it("StreamFailed when the stream breaks after its first chunk", async () => {
    for (const h of ["gcp-a", "gcp-b", "111"]) gw.fakes[h]!.setMode("resetMidStream")
    const seen: Array<string> = []
    const error = await failure((c) =>
      Stream.runForEach(c.chatStream({ model: "gemma3:4b", messages: [{ role: "user", content: "hi" }] }, { lane: "alert-fast" }), (chunk) =>
        Effect.sync(() => seen.push(chunk.message.content)))
    )
    expect(error._tag).toBe("StreamFailed")
    if (error._tag === "StreamFailed") expect(error.message).toMatch(/mid-stream/)
    expect(seen).toEqual(["[gcp-a] "])
  })

  it("a refusal without a tagged error is a GatewayResponseError with its status", async () => {
    const missing = await failure((c) => c.runStatus("00000000-0000-4000-8000-000000000000"))
    expect(missing._tag).toBe("GatewayResponseError")
    if (missing._tag === "GatewayResponseError") {
      expect(missing.status).toBe(404)
      expect(missing.message).toMatch(/not found/)
    }
  })

  it("invalid options never leave the client", async () => {
    const before = gw.fakes["gcp-a"]!.requests.length
    const invalid = await failure((c) => c.generate({ model: "gemma3:4b", prompt: "x" }, { lane: "alert-fast", trace: "not-a-trace-id" }))
    expect(invalid._tag).toBe("ParseError")
    expect(gw.fakes["gcp-a"]!.requests.length).toBe(before)
  })
})
