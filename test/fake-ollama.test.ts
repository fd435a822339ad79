import { Effect } from "effect"
import { Ollama } from "ollama"
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from "vitest"
import { type FakeOllama, FakeOllamaScoped, startFakeOllama } from "./support/FakeOllama.ts"

const collect = async <T>(itr: AsyncIterable<T>): Promise<T[]> => {
  const out: T[] = []
  for await (const part of itr) out.push(part)
  return out
}

/** Runs `p` and returns what it threw (fails the test if it did not throw). */
const thrown = async (p: Promise<unknown>): Promise<Error & { status_code?: number; error?: string }> => {
  try {
    await p
  } catch (e) {
    return e as Error & { status_code?: number; error?: string }
  }
  throw new Error("expected a rejection")
}

const isNanoInt = (v: unknown) => typeof v === "number" && Number.isInteger(v) && v >= 0

describe("FakeOllama speaks Ollama's wire format to the real ollama client", () => {
  let fake: FakeOllama
  let client: Ollama

  beforeAll(async () => {
    fake = await startFakeOllama({ name: "hostA" })
    client = new Ollama({ host: fake.url })
  })
  afterAll(() => fake.stop())
  beforeEach(() => {
    fake.setMode("ok", { delayMs: 50, chunks: 3 })
    fake.setResident([])
    fake.reset()
  })

  it("answers / and HEAD / with 'Ollama is running', and /api/version", async () => {
    const get = await fetch(fake.url + "/")
    expect(get.status).toBe(200)
    expect(await get.text()).toBe("Ollama is running")
    const head = await fetch(fake.url + "/", { method: "HEAD" })
    expect(head.status).toBe(200)
    expect(await client.version()).toEqual({ version: "0.12.0" })
    const unknown = await fetch(fake.url + "/api/nope")
    expect(unknown.status).toBe(404)
  })

  it("streams generate: chunks, then one done:true with counters; the text names the host", async () => {
    const parts = await collect(await client.generate({ model: "gemma3:4b", prompt: "say hi", stream: true }))
    expect(parts).toHaveLength(4)
    expect(parts.slice(0, 3).every((p) => p.done === false && p.model === "gemma3:4b")).toBe(true)
    const last = parts[3]!
    expect(last.done).toBe(true)
    expect(last.done_reason).toBe("stop")
    expect(last.eval_count).toBe(3)
    expect(last.prompt_eval_count).toBe(2)
    for (const k of ["total_duration", "load_duration", "prompt_eval_duration", "eval_duration"] as const) {
      expect(isNanoInt(last[k])).toBe(true)
    }
    expect(parts.map((p) => p.response).join("")).toBe("[hostA] hello world")
    // the request was recorded as sent by the client
    expect(fake.requests.at(-1)).toMatchObject({ method: "POST", path: "/api/generate", body: { model: "gemma3:4b", stream: true } })
  })

  it("answers non-streaming generate with one object", async () => {
    fake.setMode("ok", { chunks: 5 })
    const r = await client.generate({ model: "gemma3:4b", prompt: "hi" })
    expect(r.done).toBe(true)
    expect(r.response).toBe("[hostA] hello world!!")
    expect(r.eval_count).toBe(5)
    expect(isNanoInt(r.total_duration)).toBe(true)
  })

  it("streams chat by default when `stream` is absent, and answers non-streaming chat", async () => {
    const raw = await fetch(fake.url + "/api/chat", {
      method: "POST",
      body: JSON.stringify({ model: "qwen2.5-coder:7b", messages: [{ role: "user", content: "hi" }] })
    })
    expect(raw.headers.get("content-type")).toBe("application/x-ndjson")
    const lines = (await raw.text()).trim().split("\n").map((l) => JSON.parse(l))
    expect(lines).toHaveLength(4)
    expect(lines[0].message).toEqual({ role: "assistant", content: "[hostA] " })

    const parts = await collect(
      await client.chat({ model: "qwen2.5-coder:7b", messages: [{ role: "user", content: "hello there" }], stream: true })
    )
    const last = parts.at(-1)!
    expect(last.done).toBe(true)
    expect(last.message).toEqual({ role: "assistant", content: "" })
    expect(parts.map((p) => p.message.content).join("")).toBe("[hostA] hello world")

    const r = await client.chat({ model: "qwen2.5-coder:7b", messages: [{ role: "user", content: "hi" }] })
    expect(r.message).toEqual({ role: "assistant", content: "[hostA] hello world" })
    expect(r.done_reason).toBe("stop")
  })

  it("embeds (embed and legacy embeddings), deterministically", async () => {
    const one = await client.embed({ model: "bge-m3", input: "alpha" })
    expect(one.model).toBe("bge-m3")
    expect(one.embeddings).toHaveLength(1)
    expect(one.embeddings[0]).toHaveLength(8)
    const norm = Math.hypot(...one.embeddings[0]!)
    expect(norm).toBeCloseTo(1, 4)
    const two = await client.embed({ model: "bge-m3", input: ["alpha", "beta"] })
    expect(two.embeddings).toHaveLength(2)
    expect(two.embeddings[0]).toEqual(one.embeddings[0])
    expect(two.embeddings[1]).not.toEqual(one.embeddings[0])
    expect(two.prompt_eval_count).toBe(3) // ceil(5/4) + ceil(4/4)
    const legacy = await client.embeddings({ model: "bge-m3", prompt: "alpha" })
    expect(legacy.embedding).toEqual(one.embeddings[0])
  })

  it("lists installed models and shows one; show of a missing model is a 404 ResponseError", async () => {
    const list = await client.list()
    expect(list.models.map((m) => m.name)).toEqual(["gemma3:4b", "qwen2.5-coder:7b", "bge-m3", "qwen2.5:14b"])
    const g = list.models[0]!
    expect(g.model).toBe("gemma3:4b")
    expect(g.digest).toMatch(/^[0-9a-f]{64}$/)
    expect(g.details).toEqual({
      parent_model: "",
      format: "gguf",
      family: "gemma3",
      families: ["gemma3"],
      parameter_size: "4.3B",
      quantization_level: "Q4_K_M"
    })
    const shown = await client.show({ model: "qwen2.5:14b" })
    expect(shown.details.parameter_size).toBe("14.8B")
    expect(shown.capabilities).toEqual(["completion"])
    const err = await thrown(client.show({ model: "llama9:1t" }))
    expect(err.name).toBe("ResponseError")
    expect(err.status_code).toBe(404)
    expect(err.error).toBe("model 'llama9:1t' not found")
  })

  it("keeps a model resident forever for a keep_alive past the last representable date (no crash)", async () => {
    const answer = await client.generate({ model: "gemma3:4b", prompt: "hi", keep_alive: 1e300 })
    expect(answer.done).toBe(true)
    const ps = await client.ps()
    expect(ps.models.map((m) => m.name)).toEqual(["gemma3:4b"])
    expect(typeof ps.models[0]!.expires_at).toBe("string")
  })

  it("tracks residency in /api/ps: inference and load requests load, keep_alive 0 unloads", async () => {
    expect((await client.ps()).models).toEqual([])
    await client.generate({ model: "gemma3:4b", prompt: "hi" })
    const ps = await client.ps()
    expect(ps.models.map((m) => m.name)).toEqual(["gemma3:4b"])
    expect(ps.models[0]).toMatchObject({ size_vram: ps.models[0]!.size, context_length: 4096 })
    expect(typeof ps.models[0]!.expires_at).toBe("string")

    const loaded = await client.chat({ model: "qwen2.5-coder:7b", messages: [] })
    expect(loaded.done_reason).toBe("load")
    expect((await client.ps()).models.map((m) => m.name)).toEqual(["gemma3:4b", "qwen2.5-coder:7b"])

    const unloaded = await client.generate({ model: "gemma3:4b", prompt: "", keep_alive: 0 })
    expect(unloaded.done_reason).toBe("unload")
    expect((await client.ps()).models.map((m) => m.name)).toEqual(["qwen2.5-coder:7b"])

    fake.setResident(["bge-m3"])
    expect((await client.ps()).models.map((m) => m.name)).toEqual(["bge-m3"])
  })

  it("refuses bad requests like Ollama: unknown model 404, missing model 400, bad JSON 400", async () => {
    const unknown = await thrown(client.generate({ model: "nope:1b", prompt: "hi" }))
    expect(unknown.name).toBe("ResponseError")
    expect(unknown.status_code).toBe(404)
    expect(unknown.error).toBe("model 'nope:1b' not found")

    const missing = await thrown(client.chat({ model: "", messages: [{ role: "user", content: "x" }] }))
    expect(missing.status_code).toBe(400)
    expect(missing.error).toBe("model is required")

    const bad = await fetch(fake.url + "/api/generate", { method: "POST", body: "{nope" })
    expect(bad.status).toBe(400)
    expect(((await bad.json()) as { error: string }).error).toMatch(/^invalid character 'n'/)
  })

  it("surfaces error500 and busy503 as ResponseError, while tags/ps/version keep answering", async () => {
    fake.setMode("error500")
    const e500 = await thrown(client.generate({ model: "gemma3:4b", prompt: "hi", stream: true }))
    expect(e500.name).toBe("ResponseError")
    expect(e500.status_code).toBe(500)
    expect(e500.error).toBe("runner crashed")
    expect((await client.list()).models).toHaveLength(4)

    fake.setMode("busy503")
    const e503 = await thrown(client.embed({ model: "bge-m3", input: "x" }))
    expect(e503.name).toBe("ResponseError")
    expect(e503.status_code).toBe(503)
    expect(e503.error).toBe("server busy, please try again.  maximum pending requests exceeded")
    expect(await client.version()).toEqual({ version: "0.12.0" })
    // failed requests do not load the model
    expect((await client.ps()).models).toEqual([])
  })

  it("makes the streaming client throw on resetMidStream and on malformed streams", async () => {
    fake.setMode("resetMidStream")
    const seen: string[] = []
    const reset = await thrown(
      (async () => {
        for await (const p of await client.generate({ model: "gemma3:4b", prompt: "hi", stream: true })) seen.push(p.response ?? "")
      })()
    )
    expect(reset).toBeInstanceOf(Error)
    expect(seen.join("")).not.toContain("world")

    fake.setMode("malformed")
    const warn = vi.spyOn(console, "warn").mockImplementation(() => {})
    try {
      const parts: string[] = []
      const bad = await thrown(
        (async () => {
          for await (const p of await client.chat({
            model: "gemma3:4b",
            messages: [{ role: "user", content: "hi" }],
            stream: true
          })) parts.push(p.message.content)
        })()
      )
      expect(bad.message).toMatch(/Did not receive done/)
      expect(parts).toEqual(["[hostA] "])
    } finally {
      warn.mockRestore()
    }

    fake.setMode("resetBeforeFirst")
    await thrown(client.generate({ model: "gemma3:4b", prompt: "hi" }))
    await thrown(client.embed({ model: "bge-m3", input: "x" }))
  })

  it("slow delays the first byte; drip spaces the chunks", async () => {
    fake.setMode("slow", { delayMs: 60 })
    let t = performance.now()
    await client.generate({ model: "gemma3:4b", prompt: "hi" })
    expect(performance.now() - t).toBeGreaterThanOrEqual(55)

    fake.setMode("drip", { delayMs: 30, chunks: 3 })
    t = performance.now()
    const at: number[] = []
    for await (const _ of await client.generate({ model: "gemma3:4b", prompt: "hi", stream: true })) at.push(performance.now() - t)
    expect(at).toHaveLength(4)
    expect(at[3]! - at[0]!).toBeGreaterThanOrEqual(80) // 3 gaps of 30ms
  })

  it("finishDelayed answers the requests a slow host holds now, not at the end of their delay", async () => {
    fake.setMode("slow", { delayMs: 10_000 })
    const t = performance.now()
    const held = Array.from({ length: 2 }, () => client.generate({ model: "gemma3:4b", prompt: "hi" }))
    await vi.waitFor(() => expect(fake.inFlight()).toBe(2))
    fake.finishDelayed()
    const answers = await Promise.all(held)
    expect(answers.map((a) => a.done)).toEqual([true, true])
    expect(performance.now() - t).toBeLessThan(5_000)
    await vi.waitFor(() => expect(fake.inFlight()).toBe(0))
  })

  it("counts in-flight requests and their high-water mark", async () => {
    fake.setMode("slow", { delayMs: 80 })
    const calls = Array.from({ length: 3 }, () => client.generate({ model: "gemma3:4b", prompt: "hi" }))
    await vi.waitFor(() => expect(fake.inFlight()).toBe(3))
    await Promise.all(calls)
    await vi.waitFor(() => expect(fake.inFlight()).toBe(0))
    expect(fake.maxInFlight()).toBe(3)
    fake.reset()
    expect(fake.maxInFlight()).toBe(0)
    expect(fake.requests).toEqual([])
  })
})

describe("FakeOllama lifecycle", () => {
  it("stop() kills hanging requests and releases the port; start() comes back on the same port", async () => {
    const fake = await startFakeOllama({ mode: "hang", name: "B" })
    const client = new Ollama({ host: fake.url })
    const port = fake.port
    const pending = thrown(client.generate({ model: "gemma3:4b", prompt: "hi" }))
    await vi.waitFor(() => expect(fake.inFlight()).toBe(1))
    await fake.stop()
    expect(await pending).toBeInstanceOf(Error)
    await expect(fetch(fake.url + "/api/version")).rejects.toThrow()

    await fake.start()
    expect(fake.port).toBe(port)
    fake.setMode("ok")
    const r = await client.generate({ model: "gemma3:4b", prompt: "hi" })
    expect(r.response).toBe("[B] hello world")
    await fake.stop()
  })

  it("FakeOllamaScoped stops the host when the scope closes", async () => {
    const url = await Effect.runPromise(
      Effect.scoped(
        Effect.gen(function* () {
          const fake = yield* FakeOllamaScoped({ name: "scoped" })
          const v = yield* Effect.promise(() => new Ollama({ host: fake.url }).version())
          expect(v.version).toBe("0.12.0")
          return fake.url
        })
      )
    )
    await expect(fetch(url + "/")).rejects.toThrow()
  })
})
