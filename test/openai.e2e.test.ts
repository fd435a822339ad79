/**
 * The OpenAI-compatible surface, end to end: the official `openai` npm client pointed at the real
 * gateway (fast path, lanes, journal on PostgreSQL) with fake Ollama hosts behind it.
 */
import OpenAI from "openai"
import { describe, expect, it } from "vitest"
import { fakeEmbedding, fakeText } from "./support/FakeOllama.ts"
import { sharedGateway } from "./support/SharedGateway.ts"
import { newTraceId, type TestGateway, typesOf } from "./support/TestGateway.ts"

let gw: TestGateway

const client = (headers: Record<string, string> = {}) =>
  new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: "unused-by-the-gateway", maxRetries: 0, defaultHeaders: headers })

sharedGateway({}, (started) => {
  gw = started
})

describe("chat completions", () => {
  it("answers a non-streaming chat on the lane named by X-AwoooP-Lane, with usage and the run's trace", async () => {
    const traceId = newTraceId()
    const { data: completion, response } = await client({ "x-awooop-lane": "alert-fast", "x-awooop-trace-id": traceId }).chat.completions.create({
      model: "whatever-the-caller-says",
      messages: [{ role: "system", content: "be brief" }, { role: "user", content: "why is the alert firing?" }],
      temperature: 0.2,
      max_tokens: 64
    }).withResponse()
    expect(completion.object).toBe("chat.completion")
    expect(completion.model).toBe("gemma3:4b")
    expect(completion.choices).toHaveLength(1)
    expect(completion.choices[0]!.message.role).toBe("assistant")
    expect(completion.choices[0]!.message.content).toBe(`[gcp-a] hello world`)
    expect(completion.choices[0]!.finish_reason).toBe("stop")
    expect(completion.usage!.prompt_tokens).toBeGreaterThan(0)
    expect(completion.usage!.completion_tokens).toBeGreaterThan(0)
    expect(completion.usage!.total_tokens).toBe(completion.usage!.prompt_tokens + completion.usage!.completion_tokens)
    expect(response.headers.get("x-awooop-trace-id")).toBe(traceId)
    expect(response.headers.get("x-awooop-endpoint")).toBe("gcp-a")

    // The host got an Ollama chat with the lane's model and the sampling settings as options.
    const sent = gw.fakes["gcp-a"]!.requests.find((r) => r.path === "/api/chat")!.body as Record<string, unknown>
    expect(sent.model).toBe("gemma3:4b")
    expect(sent.stream).toBe(false)
    expect(sent.messages).toEqual([{ role: "system", content: "be brief" }, { role: "user", content: "why is the alert firing?" }])
    expect(sent.options).toEqual({ temperature: 0.2, num_predict: 64 })

    const events = await gw.runEvents(traceId)
    expect(typesOf(events)).toContain("RunCompleted")
  })

  it("streams SSE chunks, a finish chunk, the usage chunk when asked for, then [DONE]", async () => {
    const stream = await client({ "x-awooop-lane": "alert-fast" }).chat.completions.create({
      model: "gemma3:4b",
      messages: [{ role: "user", content: "hi" }],
      stream: true,
      stream_options: { include_usage: true }
    })
    const chunks: Array<OpenAI.Chat.Completions.ChatCompletionChunk> = []
    for await (const chunk of stream) chunks.push(chunk)
    expect(chunks.every((c) => c.object === "chat.completion.chunk")).toBe(true)
    expect(new Set(chunks.map((c) => c.id)).size).toBe(1)
    const text = chunks.flatMap((c) => c.choices.map((ch) => ch.delta.content ?? "")).join("")
    expect(text).toBe(fakeText("gcp-a", 3))
    expect(chunks[0]!.choices[0]!.delta.role).toBe("assistant")
    const finish = chunks.filter((c) => c.choices[0]?.finish_reason != null)
    expect(finish).toHaveLength(1)
    expect(finish[0]!.choices[0]!.finish_reason).toBe("stop")
    const last = chunks[chunks.length - 1]!
    expect(last.choices).toEqual([])
    expect(last.usage!.completion_tokens).toBeGreaterThan(0)
    expect(last.usage!.total_tokens).toBe(last.usage!.prompt_tokens + last.usage!.completion_tokens)
  })

  it("sends no usage chunk unless stream_options.include_usage, and ends with [DONE] on the wire", async () => {
    const res = await gw.post("/v1/chat/completions", { model: "gemma3:4b", messages: [{ role: "user", content: "hi" }], stream: true }, { "x-awooop-lane": "alert-fast" })
    expect(res.status).toBe(200)
    expect(res.headers.get("content-type")).toContain("text/event-stream")
    const body = await res.text()
    const events = body.split("\n\n").filter((e) => e !== "")
    expect(events[events.length - 1]).toBe("data: [DONE]")
    const payloads = events.slice(0, -1).map((e) => JSON.parse(e.slice("data: ".length)) as Record<string, unknown>)
    expect(payloads.every((p) => !("usage" in p))).toBe(true)
    expect(payloads.every((p) => (p.choices as Array<unknown>).length === 1)).toBe(true)
  })

  it("puts a legacy caller (no lane header) on a lane by its model", async () => {
    const completion = await client().chat.completions.create({ model: "qwen2.5-coder:7b", messages: [{ role: "user", content: "review" }] })
    expect(completion.model).toBe("qwen2.5-coder:7b")
    expect(completion.choices[0]!.message.content).toBe("[111] hello world")
  })

  it("throws when the upstream resets mid-stream: an error event and no [DONE]", async () => {
    for (const name of ["gcp-a", "gcp-b", "111"]) gw.fakes[name]!.setMode("resetMidStream")
    const stream = await client({ "x-awooop-lane": "alert-fast" }).chat.completions.create({
      model: "gemma3:4b",
      messages: [{ role: "user", content: "hi" }],
      stream: true
    })
    const seen: Array<string> = []
    const error = await (async () => {
      try {
        for await (const chunk of stream) seen.push(chunk.choices[0]?.delta.content ?? "")
      } catch (e) {
        return e as Error
      }
      throw new Error("expected the stream to throw")
    })()
    expect(error).toBeInstanceOf(OpenAI.APIError)
    expect(error.message).toMatch(/failed mid-stream/)
    expect(seen.join("")).toBe("[gcp-a] ")

    // On the wire: the chunk that made it, then the error event, and nothing after it.
    const res = await gw.post("/v1/chat/completions", { model: "gemma3:4b", messages: [{ role: "user", content: "hi" }], stream: true }, { "x-awooop-lane": "alert-fast" })
    const body = await res.text()
    expect(body).not.toContain("[DONE]")
    const events = body.split("\n\n").filter((e) => e !== "")
    const last = events[events.length - 1]!
    expect(last.startsWith("event: error\ndata: ")).toBe(true)
    const payload = JSON.parse(last.split("\ndata: ")[1]!) as { error: Record<string, unknown> }
    expect(payload.error).toEqual({ message: expect.stringMatching(/mid-stream/), type: "api_error", param: null, code: null })
  })

  it("refuses in OpenAI's error shape with the gateway's status codes", async () => {
    const unknownLane = await client({ "x-awooop-lane": "no-such-lane" }).chat.completions.create({ model: "gemma3:4b", messages: [{ role: "user", content: "hi" }] }).catch((e: unknown) => e)
    expect(unknownLane).toBeInstanceOf(OpenAI.BadRequestError)
    expect((unknownLane as InstanceType<typeof OpenAI.BadRequestError>).error).toEqual({
      message: expect.stringContaining("unknown lane \"no-such-lane\""),
      type: "invalid_request_error",
      param: null,
      code: null
    })

    const asyncOnly = await client({ "x-awooop-lane": "deep-rca" }).chat.completions.create({ model: "qwen2.5:14b", messages: [{ role: "user", content: "rca" }] }).catch((e: unknown) => e)
    expect(asyncOnly).toBeInstanceOf(OpenAI.APIError)
    expect((asyncOnly as InstanceType<typeof OpenAI.APIError>).status).toBe(409)

    for (const name of ["gcp-a", "gcp-b", "111"]) gw.fakes[name]!.setMode("busy503")
    const down = await client({ "x-awooop-lane": "alert-fast" }).chat.completions.create({ model: "gemma3:4b", messages: [{ role: "user", content: "hi" }] }).catch((e: unknown) => e)
    expect(down).toBeInstanceOf(OpenAI.InternalServerError)
    expect((down as InstanceType<typeof OpenAI.APIError>).status).toBe(503)
    expect((down as InstanceType<typeof OpenAI.APIError>).error).toMatchObject({ type: "api_error", param: null, code: null })

    const bad = await gw.post("/v1/chat/completions", { model: "gemma3:4b", messages: [] }, { "x-awooop-lane": "alert-fast" })
    expect(bad.status).toBe(400)
    expect(await bad.json()).toEqual({ error: { message: expect.stringContaining("messages must not be empty"), type: "invalid_request_error", param: null, code: null } })
  })
})

describe("completions and embeddings", () => {
  it("answers a legacy completion, streaming and not", async () => {
    const c = client({ "x-awooop-lane": "alert-fast" })
    const completion = await c.completions.create({ model: "gemma3:4b", prompt: "Once upon a time", max_tokens: 16 })
    expect(completion.object).toBe("text_completion")
    expect(completion.choices[0]!.text).toBe("[gcp-a] hello world")
    expect(completion.choices[0]!.finish_reason).toBe("stop")
    expect(completion.usage!.completion_tokens).toBeGreaterThan(0)

    const parts: Array<string> = []
    let finish: string | null = null
    for await (const chunk of await c.completions.create({ model: "gemma3:4b", prompt: "Once", stream: true })) {
      parts.push(chunk.choices[0]!.text)
      finish = chunk.choices[0]!.finish_reason ?? finish
    }
    expect(parts.join("").startsWith("[gcp-a] hello world")).toBe(true)
    expect(finish).toBe("stop")
  })

  it("embeds with the SDK's default (base64) and with floats", async () => {
    const c = client({ "x-awooop-lane": "embedding" })
    const viaBase64 = await c.embeddings.create({ model: "bge-m3", input: ["alpha", "beta"] })
    expect(viaBase64.object).toBe("list")
    expect(viaBase64.data.map((d) => d.index)).toEqual([0, 1])
    const expected = fakeEmbedding("bge-m3", "alpha")
    viaBase64.data[0]!.embedding.forEach((x, i) => expect(x).toBeCloseTo(expected[i]!, 5))
    expect(viaBase64.usage.prompt_tokens).toBeGreaterThan(0)

    const floats = await c.embeddings.create({ model: "bge-m3", input: "beta", encoding_format: "float" })
    expect(floats.data).toHaveLength(1)
    expect(floats.data[0]!.embedding).toEqual(fakeEmbedding("bge-m3", "beta"))
  })
})

describe("models", () => {
  it("lists the models the synchronous lanes serve", async () => {
    const models = await client().models.list()
    const ids = models.data.map((m) => m.id).sort()
    expect(ids).toEqual(["bge-m3", "gemma3:4b", "qwen2.5-coder:7b"])
    const gemma = models.data.find((m) => m.id === "gemma3:4b") as unknown as Record<string, unknown>
    expect(gemma).toMatchObject({ object: "model", owned_by: "awooop", awooop_lanes: ["alert-fast"], awooop_default_lane: "alert-fast" })
    const one = await client().models.retrieve("bge-m3")
    expect(one.id).toBe("bge-m3")
    const missing = await client().models.retrieve("qwen2.5:14b").catch((e: unknown) => e)
    expect(missing).toBeInstanceOf(OpenAI.NotFoundError)
  })
})
