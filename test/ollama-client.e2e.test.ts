/**
 * The real `ollama` npm client, pointed at the gateway instead of a host: everything a service does
 * today keeps working, and every refusal surfaces as a `ResponseError` with the right status.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { fakeEmbedding, fakeTokenCount } from "./support/FakeOllama.ts"
import { collect, newTraceId, startTestGateway, type TestGateway, thrown } from "./support/TestGateway.ts"

let gw: TestGateway
beforeAll(async () => {
  gw = await startTestGateway({
    hosts: {
      "gpu-node": { slots: 2, fake: { version: "0.11.2" } },
      stuck: { slots: 2, fake: { mode: "hang" } },
      dead: { slots: 1, url: "http://127.0.0.1:1" }
    },
    lanes: {
      heavy: { model: "qwen2.5:14b", route: [{ host: "gcp-a", timeout: "300ms" }, { host: "gcp-b", timeout: "300ms" }] },
      ghost: { model: "llama9:1b", route: [{ host: "111", timeout: "300ms" }] },
      "stuck-lane": { model: "gemma3:4b", route: [{ host: "stuck", timeout: "300ms" }] },
      "dead-lane": { model: "gemma3:4b", route: [{ host: "dead", timeout: "300ms" }] }
    },
    server: { maxBodyBytes: 65_536 }
  })
})
afterAll(() => gw?.close())

const alert = () => gw.ollama({ "X-AwoooP-Lane": "alert-fast", "X-AwoooP-Project-ID": "awoooi", "X-AwoooP-Intent": "DIAGNOSE" })

describe("inference through the gateway with the ollama client", () => {
  it("generate, non-streaming", async () => {
    const answer = await alert().generate({ model: "gemma3:4b", prompt: "why is disk full?" })
    expect(answer.response).toBe("[gcp-a] hello world")
    expect(answer.done).toBe(true)
    expect(answer.model).toBe("gemma3:4b")
    expect(answer.eval_count).toBe(3)
    expect(answer.prompt_eval_count).toBe(fakeTokenCount("why is disk full?"))
  })

  it("generate, streaming: every chunk, then exactly one done", async () => {
    const parts = await collect(await alert().generate({ model: "gemma3:4b", prompt: "hi", stream: true }))
    expect(parts.map((p) => p.response).join("")).toBe("[gcp-a] hello world")
    expect(parts.filter((p) => p.done)).toHaveLength(1)
    expect(parts.at(-1)).toMatchObject({ done: true, done_reason: "stop", eval_count: 3 })
  })

  it("chat, non-streaming and streaming", async () => {
    const messages = [{ role: "user", content: "summarise the incident" }]
    const answer = await alert().chat({ model: "gemma3:4b", messages })
    expect(answer.message).toMatchObject({ role: "assistant", content: "[gcp-a] hello world" })
    expect(answer.done).toBe(true)

    const parts = await collect(await alert().chat({ model: "gemma3:4b", messages, stream: true }))
    expect(parts.map((p) => p.message.content).join("")).toBe("[gcp-a] hello world")
    expect(parts.at(-1)?.done).toBe(true)
  })

  it("embed and the legacy embeddings route, on the embedding lane (header or legacy rule)", async () => {
    const viaHeader = await gw.ollama({ "X-AwoooP-Lane": "embedding" }).embed({ model: "bge-m3", input: ["disk full", "cpu high"] })
    expect(viaHeader.model).toBe("bge-m3")
    expect(viaHeader.embeddings).toEqual([fakeEmbedding("bge-m3", "disk full"), fakeEmbedding("bge-m3", "cpu high")])

    const legacy = await gw.ollama().embeddings({ model: "bge-m3", prompt: "disk full" })
    expect(legacy.embedding).toEqual(fakeEmbedding("bge-m3", "disk full"))
    // Both went to 111, the embedding lane's first host.
    const embedCalls = gw.fakes["111"]!.requests.filter((r) => r.path === "/api/embed" || r.path === "/api/embeddings")
    expect(embedCalls.map((r) => r.path)).toEqual(["/api/embed", "/api/embeddings"])
  })

  it("a legacy caller without any AwoooP header is served on the lane its model maps to", async () => {
    const answer = await gw.ollama().generate({ model: "qwen2.5-coder:7b", prompt: "review" })
    expect(answer.response).toBe("[111] hello world")
  })
})

describe("the fan-out routes", () => {
  it("list (GET /api/tags): every model once, with the hosts that have it", async () => {
    const { models } = await gw.ollama().list()
    const names = models.map((m) => m.name).sort()
    expect(names).toEqual(["bge-m3", "gemma3:4b", "qwen2.5-coder:7b", "qwen2.5:14b"])
    const gemma = models.find((m) => m.name === "gemma3:4b") as unknown as { details: { parameter_size: string }; awooop_hosts: Array<string> }
    expect(gemma.details.parameter_size).toBe("4.3B")
    expect([...gemma.awooop_hosts].sort()).toEqual(["111", "gcp-a", "gcp-b", "gpu-node", "stuck"])
  })

  it("ps (GET /api/ps): resident models per host", async () => {
    await alert().generate({ model: "gemma3:4b", prompt: "warm up" })
    const { models } = await gw.ollama().ps()
    const onGcpA = models.filter((m) => (m as unknown as { awooop_host: string }).awooop_host === "gcp-a")
    expect(onGcpA.map((m) => m.name)).toContain("gemma3:4b")
    expect(models.every((m) => typeof (m as unknown as { awooop_host: unknown }).awooop_host === "string")).toBe(true)
  })

  it("show: details of a model from a host that has it; an unknown model is a 404", async () => {
    const shown = await gw.ollama().show({ model: "gemma3:4b" })
    expect(shown.details.parameter_size).toBe("4.3B")
    expect(shown.capabilities).toContain("completion")
    const error = await thrown(gw.ollama().show({ model: "nope:1b" }))
    expect(error.name).toBe("ResponseError")
    expect(error.status_code).toBe(404)
  })

  it("version: the oldest host version (what every host supports)", async () => {
    expect(await gw.ollama().version()).toEqual({ version: "0.11.2" })
  })

  it("GET / and HEAD / say Ollama is running", async () => {
    const get = await fetch(gw.url + "/")
    expect(get.status).toBe(200)
    expect(await get.text()).toBe("Ollama is running")
    const head = await fetch(gw.url + "/", { method: "HEAD" })
    expect(head.status).toBe(200)
  })
})

describe("every refusal is a ResponseError with the right status_code", () => {
  const cases: Array<[string, number, () => Promise<unknown>, string]> = [
    ["unknown lane", 400, () => gw.ollama({ "X-AwoooP-Lane": "nope" }).generate({ model: "gemma3:4b", prompt: "x" }), "nope"],
    ["malformed trace id", 400, () => gw.ollama({ "X-AwoooP-Lane": "alert-fast", "X-AwoooP-Trace-ID": "not-hex" }).generate({ model: "gemma3:4b", prompt: "x" }), "X-AwoooP-Trace-ID"],
    ["heavy model on protected hosts", 403, () => gw.ollama({ "X-AwoooP-Lane": "heavy" }).generate({ model: "qwen2.5:14b", prompt: "x" }), "heavy"],
    ["model on no host of the lane", 404, () => gw.ollama({ "X-AwoooP-Lane": "ghost" }).chat({ model: "llama9:1b", messages: [{ role: "user", content: "x" }] }), "llama9:1b"],
    // A generate/chat on an async lane becomes an async run (202); an embed there is refused.
    ["async-only lane", 409, () => gw.ollama({ "X-AwoooP-Lane": "deep-rca" }).embed({ model: "qwen2.5:14b", input: "x" }), "deep-rca"],
    ["body too large", 413, () => alert().generate({ model: "gemma3:4b", prompt: "x".repeat(100_000) }), "65536"],
    ["model management (pull)", 403, () => gw.ollama().pull({ model: "gemma3:4b" }), "does not manage models"],
    ["every host down", 503, () => gw.ollama({ "X-AwoooP-Lane": "dead-lane" }).generate({ model: "gemma3:4b", prompt: "x" }), "dead-lane"],
    ["every attempt timed out", 504, () => gw.ollama({ "X-AwoooP-Lane": "stuck-lane" }).generate({ model: "gemma3:4b", prompt: "x" }), "stuck-lane"],
    ["streaming call refused before the stream starts", 403, () => gw.ollama({ "X-AwoooP-Lane": "heavy" }).generate({ model: "qwen2.5:14b", prompt: "x", stream: true }), "heavy"]
  ]
  for (const [what, status, call, mention] of cases) {
    it(`${what} → ${status}`, async () => {
      const error = await thrown(call)
      expect(error.name).toBe("ResponseError")
      expect(error.status_code).toBe(status)
      expect(error.error).toContain(mention)
    })
  }

  it("the trace id the caller sent comes back on a refusal (for the on-call engineer to look up)", async () => {
    const traceId = newTraceId()
    const res = await gw.post("/api/embed", { model: "qwen2.5:14b", input: "x" }, { "x-awooop-lane": "deep-rca", "x-awooop-trace-id": traceId })
    expect(res.status).toBe(409)
    expect(res.headers.get("x-awooop-trace-id")).toBe(traceId)
  })
})
