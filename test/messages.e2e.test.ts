/**
 * POST /v1/messages end to end: the official `@anthropic-ai/sdk` client's `messages.create` and
 * `messages.stream` pointed at the real gateway (fast path, lanes, journal on PostgreSQL) with fake
 * Ollama hosts behind it.
 */
import Anthropic from "@anthropic-ai/sdk"
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import { explain, renderText, toJson } from "../src/replay/Explain.ts"
import { fakeText } from "./support/FakeOllama.ts"
import { lastChat, sharedGateway, sseEvents } from "./support/SharedGateway.ts"
import { newTraceId, TEST_TIMEOUT, type TestGateway, thrown, typesOf } from "./support/TestGateway.ts"

let gw: TestGateway

const client = (headers: Record<string, string> = {}) =>
  new Anthropic({ baseURL: gw.url, apiKey: "unused-by-the-gateway", maxRetries: 0, defaultHeaders: headers })

const lane = { "x-awooop-lane": "alert-fast" }

const weather: Anthropic.Tool = {
  name: "get_weather",
  description: "the weather in a city",
  input_schema: { type: "object", properties: { city: { type: "string" } }, required: ["city"] }
}

const rejection = async (p: Promise<unknown>) => (await thrown(p)) as unknown as InstanceType<typeof Anthropic.APIError>

// A lane whose model no host has: ModelNotFound (404).
sharedGateway({ lanes: { ghost: { model: "missing-model:1b", route: [{ host: "gcp-a", timeout: TEST_TIMEOUT }] } } }, (started) => {
  gw = started
})

describe("messages.create", () => {
  it("answers with text, stop_reason, usage and the run's headers; system, max_tokens and sampling reach the host", async () => {
    const traceId = newTraceId()
    const { data: message, response } = await client({ ...lane, "x-awooop-trace-id": traceId }).messages.create({
      model: "whatever-the-caller-says",
      max_tokens: 64,
      system: "be brief",
      messages: [{ role: "user", content: "why is the alert firing?" }],
      stop_sequences: ["\n\nHuman:"],
      // Sampling settings this SDK version no longer types (the API and older models still take them).
      ...({ temperature: 0.2, top_p: 0.9, top_k: 40 } as object)
    }).withResponse()
    expect(message.type).toBe("message")
    expect(message.id).toMatch(/^msg_[0-9a-f]{32}$/)
    expect(message.role).toBe("assistant")
    expect(message.model).toBe("gemma3:4b")
    expect(message.content).toEqual([{ type: "text", text: "[gcp-a] hello world" }])
    expect(message.stop_reason).toBe("end_turn")
    expect(message.stop_sequence).toBeNull()
    expect(message.usage.input_tokens).toBeGreaterThan(0)
    expect(message.usage.output_tokens).toBeGreaterThan(0)
    expect(response.headers.get("x-awooop-trace-id")).toBe(traceId)
    expect(response.headers.get("x-awooop-endpoint")).toBe("gcp-a")

    const sent = lastChat(gw)
    expect(sent.model).toBe("gemma3:4b")
    expect(sent.stream).toBe(false)
    expect(sent.messages).toEqual([{ role: "system", content: "be brief" }, { role: "user", content: "why is the alert firing?" }])
    expect(sent.options).toEqual({ num_predict: 64, temperature: 0.2, top_p: 0.9, top_k: 40, stop: ["\n\nHuman:"] })
  })

  it("takes system blocks and text and base64 image blocks", async () => {
    await client(lane).messages.create({
      model: "gemma3:4b",
      max_tokens: 32,
      system: [{ type: "text", text: "you read graphs" }, { type: "text", text: "be brief" }],
      messages: [
        { role: "user", content: [{ type: "text", text: "what is this?" }, { type: "image", source: { type: "base64", media_type: "image/png", data: "iVBORw0KGgo=" } }] },
        { role: "assistant", content: [{ type: "text", text: "a graph" }] },
        { role: "user", content: "and why?" }
      ]
    })
    expect(lastChat(gw).messages).toEqual([
      { role: "system", content: "you read graphs\n\nbe brief" },
      { role: "user", content: "what is this?", images: ["iVBORw0KGgo="] },
      { role: "assistant", content: "a graph" },
      { role: "user", content: "and why?" }
    ])
  })

  it("says max_tokens when the answer was cut at max_tokens", async () => {
    const message = await client(lane).messages.create({ model: "gemma3:4b", max_tokens: 2, messages: [{ role: "user", content: "hi" }] })
    expect(message.stop_reason).toBe("max_tokens")
    expect(message.content).toEqual([{ type: "text", text: fakeText("gcp-a", 2) }])
  })

  it("puts a legacy caller (no lane header) on a lane by its model", async () => {
    const message = await client().messages.create({ model: "qwen2.5-coder:7b", max_tokens: 16, messages: [{ role: "user", content: "review" }] })
    expect(message.content).toEqual([{ type: "text", text: "[111] hello world" }])
  })

  it("passes tools through and returns the model's call as a tool_use block; the tool_result goes back as a tool message", async () => {
    const c = client(lane)
    const first = await c.messages.create({ model: "gemma3:4b", max_tokens: 64, tools: [weather], messages: [{ role: "user", content: "weather in Paris?" }] })
    expect(lastChat(gw).tools).toEqual([{ type: "function", function: { name: "get_weather", description: "the weather in a city", parameters: weather.input_schema } }])
    expect(first.stop_reason).toBe("tool_use")
    const use = first.content.find((b): b is Anthropic.ToolUseBlock => b.type === "tool_use")!
    expect(use).toMatchObject({ type: "tool_use", name: "get_weather", input: { city: "fake-city" } })
    expect(use.id).toMatch(/^toolu_/)

    // The conversation so far, then the user's turn with the tool's result.
    const answer = (turn: Array<Anthropic.ContentBlockParam>) =>
      c.messages.create({
        model: "gemma3:4b",
        max_tokens: 64,
        tools: [weather],
        messages: [{ role: "user", content: "weather in Paris?" }, { role: "assistant", content: first.content }, { role: "user", content: turn }]
      })
    const second = await answer([{ type: "tool_result", tool_use_id: use.id, content: "21 °C" }, { type: "text", text: "so?" }])
    expect(second.stop_reason).toBe("tool_use") // the fake calls its tool on every user turn
    expect(lastChat(gw).messages).toEqual([
      { role: "user", content: "weather in Paris?" },
      { role: "assistant", content: "", tool_calls: [{ function: { name: "get_weather", arguments: { city: "fake-city" } } }] },
      { role: "tool", content: "21 °C", tool_name: "get_weather" },
      { role: "user", content: "so?" }
    ])

    const answered = await answer([{ type: "tool_result", tool_use_id: use.id, content: [{ type: "text", text: "no such city" }], is_error: true }])
    expect(answered.content).toEqual([{ type: "text", text: "[gcp-a] hello world" }])
    expect((lastChat(gw).messages as Array<unknown>).at(-1)).toEqual({ role: "tool", content: "Error: no such city", tool_name: "get_weather" })
  })
})

describe("messages.stream", () => {
  it("streams message_start, ping, the text block's deltas, message_delta with usage and message_stop; the SDK's final message matches", async () => {
    const stream = client(lane).messages.stream({ model: "gemma3:4b", max_tokens: 64, messages: [{ role: "user", content: "hi" }] })
    const seen: Array<Anthropic.MessageStreamEvent> = []
    for await (const event of stream) seen.push(event)
    const final = await stream.finalMessage()
    expect(final.content).toEqual([expect.objectContaining({ type: "text", text: fakeText("gcp-a", 3) })])
    expect(final.stop_reason).toBe("end_turn")
    expect(final.usage.input_tokens).toBeGreaterThan(0)
    expect(final.usage.output_tokens).toBeGreaterThan(0)
    const types = seen.map((e) => e.type)
    expect(types).toEqual(["message_start", "content_block_start", "content_block_delta", "content_block_delta", "content_block_delta", "content_block_stop", "message_delta", "message_stop"])
    expect(await stream.finalText()).toBe(fakeText("gcp-a", 3))

    // ping is on the wire (the SDK skips it).
    const res = await gw.post("/v1/messages", { model: "gemma3:4b", max_tokens: 64, stream: true, messages: [{ role: "user", content: "hi" }] }, lane)
    expect(res.headers.get("content-type")).toContain("text/event-stream")
    expect(sseEvents(await res.text()).map(([name]) => name).slice(0, 2)).toEqual(["message_start", "ping"])
  })

  it("streams a tool call as a tool_use block with its input", async () => {
    const stream = client(lane).messages.stream({ model: "gemma3:4b", max_tokens: 64, tools: [weather], messages: [{ role: "user", content: "weather in Oslo?" }] })
    const final = await stream.finalMessage()
    expect(final.stop_reason).toBe("tool_use")
    expect(final.content).toEqual([expect.objectContaining({ type: "tool_use", name: "get_weather", input: { city: "fake-city" } })])
  })

  it("throws when the upstream resets mid-stream: an error event, no message_stop", async () => {
    for (const name of ["gcp-a", "gcp-b", "111"]) gw.fakes[name]!.setMode("resetMidStream")
    const stream = client(lane).messages.stream({ model: "gemma3:4b", max_tokens: 64, messages: [{ role: "user", content: "hi" }] })
    const texts: Array<string> = []
    stream.on("text", (t) => texts.push(t))
    const error = await rejection(stream.finalMessage())
    expect(error).toBeInstanceOf(Anthropic.APIError)
    expect(error.message).toMatch(/failed mid-stream/)
    expect(texts.join("")).toBe("[gcp-a] ")

    const res = await gw.post("/v1/messages", { model: "gemma3:4b", max_tokens: 64, stream: true, messages: [{ role: "user", content: "hi" }] }, lane)
    const all = sseEvents(await res.text())
    expect(all.map(([name]) => name)).not.toContain("message_stop")
    expect(all.at(-1)).toEqual(["error", { type: "error", error: { type: "api_error", message: expect.stringMatching(/mid-stream/) } }])
  })
})

describe("refusals", () => {
  it("answers each gateway refusal as the SDK's typed error, in Anthropic's error shape", async () => {
    const unknownLane = await rejection(client({ "x-awooop-lane": "no-such-lane" }).messages.create({ model: "gemma3:4b", max_tokens: 8, messages: [{ role: "user", content: "hi" }] }))
    expect(unknownLane).toBeInstanceOf(Anthropic.BadRequestError)
    expect(unknownLane.error).toEqual({ type: "error", error: { type: "invalid_request_error", message: expect.stringContaining("unknown lane \"no-such-lane\"") } })

    const notFound = await rejection(client({ "x-awooop-lane": "ghost" }).messages.create({ model: "x", max_tokens: 8, messages: [{ role: "user", content: "hi" }] }))
    expect(notFound).toBeInstanceOf(Anthropic.NotFoundError)
    expect(notFound.error).toMatchObject({ type: "error", error: { type: "not_found_error" } })

    const asyncOnly = await rejection(client({ "x-awooop-lane": "deep-rca" }).messages.create({ model: "qwen2.5:14b", max_tokens: 8, messages: [{ role: "user", content: "rca" }] }))
    expect(asyncOnly).toBeInstanceOf(Anthropic.ConflictError)

    const forced = await rejection(client(lane).messages.create({ model: "gemma3:4b", max_tokens: 8, tools: [weather], tool_choice: { type: "any" }, messages: [{ role: "user", content: "hi" }] }))
    expect(forced).toBeInstanceOf(Anthropic.BadRequestError)
    expect(forced.message).toMatch(/tool_choice "any" is not supported/)

    for (const name of ["gcp-a", "gcp-b", "111"]) gw.fakes[name]!.setMode("busy503")
    const down = await rejection(client(lane).messages.create({ model: "gemma3:4b", max_tokens: 8, messages: [{ role: "user", content: "hi" }] }))
    expect(down).toBeInstanceOf(Anthropic.InternalServerError)
    expect(down.status).toBe(503)
    expect(down.error).toMatchObject({ type: "error", error: { type: "overloaded_error" } })
    expect(down.headers?.get("retry-after")).not.toBeNull()

    for (const name of ["gcp-a", "gcp-b", "111"]) gw.fakes[name]!.setMode("hang")
    const timedOut = await rejection(client(lane).messages.create({ model: "gemma3:4b", max_tokens: 8, messages: [{ role: "user", content: "hi" }] }))
    expect(timedOut.status).toBe(504)
    expect(timedOut.error).toMatchObject({ type: "error", error: { type: "timeout_error" } })
  })

  it("names the field at fault for bad bodies", async () => {
    const user = [{ role: "user", content: "hi" }]
    const cases: Array<[unknown, RegExp]> = [
      ["{not json", /not valid JSON/],
      [{ max_tokens: 8, messages: user }, /model is required/],
      [{ model: "gemma3:4b", messages: user }, /max_tokens: is missing/],
      [{ model: "gemma3:4b", max_tokens: 0, messages: user }, /max_tokens must be a positive integer/],
      [{ model: "gemma3:4b", max_tokens: "8", messages: user }, /max_tokens/],
      [{ model: "gemma3:4b", max_tokens: 8, messages: [] }, /messages must not be empty/],
      [{ model: "gemma3:4b", max_tokens: 8, messages: [{ role: "system", content: "hi" }] }, /messages\.0\.role/],
      [{ model: "gemma3:4b", max_tokens: 8, messages: [{ role: "user", content: [{ type: "video" }] }] }, /messages\.0\.content\.0\.type: "video" is not supported/],
      [{ model: "gemma3:4b", max_tokens: 8, messages: [{ role: "user", content: [{ type: "text" }] }] }, /messages\.0\.content\.0\.text: is missing/],
      [{ model: "gemma3:4b", max_tokens: 8, messages: [{ role: "user", content: [{ type: "image", source: { type: "url", url: "https://example.com/a.png" } }] }] }, /messages\.0\.content\.0\.source\.type: only base64 image sources/],
      [{ model: "gemma3:4b", max_tokens: 8, messages: [{ role: "user", content: [{ type: "tool_use", id: "t", name: "f", input: {} }] }] }, /messages\.0\.content\.0: tool_use blocks belong in assistant messages/],
      [{ model: "gemma3:4b", max_tokens: 8, messages: user, temperature: 3 }, /temperature/],
      [{ model: "gemma3:4b", max_tokens: 8, messages: user, stop_sequences: "stop" }, /stop_sequences/],
      [{ model: "gemma3:4b", max_tokens: 8, messages: user, tools: [{ type: "web_search_20250305", name: "web_search" }] }, /tools\.0\.type: only custom tools/]
    ]
    for (const [body, message] of cases) {
      const res = await gw.post("/v1/messages", body, lane)
      expect(res.status, JSON.stringify(body)).toBe(400)
      expect(await res.json(), JSON.stringify(body)).toEqual({ type: "error", error: { type: "invalid_request_error", message: expect.stringMatching(message) } })
    }
  })
})

describe("metrics", () => {
  /** One sample of `awooop_requests_total` (0 when absent). */
  const requests = async (labels: string) => {
    const text = await (await fetch(`${gw.url}/metrics`)).text()
    const line = text.split("\n").find((l) => l.startsWith(`awooop_requests_total{${labels}} `))
    return line === undefined ? 0 : Number(line.split(" ").at(-1))
  }

  it("counts answers and refusals like the other routes", async () => {
    const success = `lane="alert-fast",endpoint="gcp-a",outcome="success"`
    const unknown = `lane="none",endpoint="none",outcome="UnknownLane"`
    const [successBefore, unknownBefore] = [await requests(success), await requests(unknown)]
    await client(lane).messages.create({ model: "gemma3:4b", max_tokens: 8, messages: [{ role: "user", content: "hi" }] })
    await rejection(client({ "x-awooop-lane": "no-such-lane" }).messages.create({ model: "gemma3:4b", max_tokens: 8, messages: [{ role: "user", content: "hi" }] }))
    expect(await requests(success)).toBe(successBefore + 1)
    expect(await requests(unknown)).toBe(unknownBefore + 1)
  })
})

describe("the journal", () => {
  it("records the protocol, and a streaming run fails over before its first chunk like /api/chat", async () => {
    gw.fakes["gcp-a"]!.setMode("resetBeforeFirst")
    const traceId = newTraceId()
    const final = await client({ ...lane, "x-awooop-trace-id": traceId }).messages.stream({ model: "gemma3:4b", max_tokens: 64, messages: [{ role: "user", content: "hi" }] }).finalMessage()
    expect(final.content).toEqual([expect.objectContaining({ type: "text", text: fakeText("gcp-b", 3) })])
    const events = await gw.runEvents(traceId)
    expect(typesOf(events)).toEqual(["RunStarted", "RouteDecided", "AttemptStarted", "AttemptFailed", "AttemptStarted", "AttemptSucceeded", "RunCompleted"])
    expect(events[0]!.data).toMatchObject({ protocol: "anthropic-messages", operation: "chat", stream: true })
    expect(events.find((e) => e.type === "AttemptFailed")!.data).toMatchObject({ host: "gcp-a", afterFirstChunk: false })
    expect(events.find((e) => e.type === "RunCompleted")!.data).toMatchObject({ endpoint: "gcp-b", inputTokens: final.usage.input_tokens, outputTokens: final.usage.output_tokens })
    const explained = await gw.run(Effect.flatMap(SqlClient.SqlClient, (sql) => explain(sql, traceId)))
    expect(renderText(explained)).toContain("request: chat (streaming) via anthropic-messages on lane alert-fast")
    expect(toJson(explained).runs[0]).toMatchObject({ protocol: "anthropic-messages", endpoint: "gcp-b" })

    const ollamaTrace = newTraceId()
    for await (const _ of await gw.ollama({ ...lane, "x-awooop-trace-id": ollamaTrace }).chat({ model: "gemma3:4b", messages: [{ role: "user", content: "hi" }], stream: true })) { /* drain */ }
    const ollamaEvents = await gw.runEvents(ollamaTrace)
    expect(typesOf(ollamaEvents)).toEqual(typesOf(events))
    expect(ollamaEvents[0]!.data).toMatchObject({ protocol: "ollama" })
  })

  it("journals a mid-stream failure as AttemptFailed after the first chunk and RunFailed", async () => {
    for (const name of ["gcp-a", "gcp-b", "111"]) gw.fakes[name]!.setMode("resetMidStream")
    const traceId = newTraceId()
    await rejection(client({ ...lane, "x-awooop-trace-id": traceId }).messages.stream({ model: "gemma3:4b", max_tokens: 64, messages: [{ role: "user", content: "hi" }] }).finalMessage())
    const events = await gw.runEvents(traceId)
    expect(typesOf(events).slice(-2)).toEqual(["AttemptFailed", "RunFailed"])
    expect(events.at(-2)!.data).toMatchObject({ afterFirstChunk: true })
  })
})
