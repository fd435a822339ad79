/**
 * POST /v1/responses end to end: the official `openai` client's `responses.create` and
 * `responses.stream` pointed at the real gateway (fast path, lanes, journal on PostgreSQL) with fake
 * Ollama hosts behind it.
 */
import OpenAI from "openai"
import { describe, expect, it } from "vitest"
import { fakeText } from "./support/FakeOllama.ts"
import { lastChat, sharedGateway, sseEvents } from "./support/SharedGateway.ts"
import { newTraceId, TEST_TIMEOUT, type TestGateway, thrown, typesOf } from "./support/TestGateway.ts"

let gw: TestGateway

const client = (headers: Record<string, string> = {}) =>
  new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: "unused-by-the-gateway", maxRetries: 0, defaultHeaders: headers })

const lane = { "x-awooop-lane": "alert-fast" }

const weather: OpenAI.Responses.FunctionTool = {
  type: "function",
  name: "get_weather",
  description: "the weather in a city",
  parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  strict: true
}

const rejection = async (p: Promise<unknown>) => (await thrown(p)) as unknown as InstanceType<typeof OpenAI.APIError>

// A lane whose model no host has: ModelNotFound (404); the projector, for run_state.
sharedGateway({ lanes: { ghost: { model: "missing-model:1b", route: [{ host: "gcp-a", timeout: TEST_TIMEOUT }] } }, projections: {} }, (started) => {
  gw = started
})

describe("responses.create", () => {
  it("answers a string input with instructions, settings, usage and the run's headers", async () => {
    const traceId = newTraceId()
    const { data: response, response: http } = await client({ ...lane, "x-awooop-trace-id": traceId }).responses.create({
      model: "whatever-the-caller-says",
      instructions: "be brief",
      input: "why is the alert firing?",
      temperature: 0.2,
      top_p: 0.9,
      max_output_tokens: 64
    }).withResponse()
    expect(response.object).toBe("response")
    expect(response.id).toMatch(/^resp_[0-9a-f]{32}$/)
    expect(response.status).toBe("completed")
    expect(response.model).toBe("gemma3:4b")
    expect(response.output_text).toBe("[gcp-a] hello world")
    expect(response.output).toHaveLength(1)
    expect(response.output[0]).toMatchObject({ type: "message", role: "assistant", status: "completed" })
    expect(response.instructions).toBe("be brief")
    expect(response.max_output_tokens).toBe(64)
    expect(response.usage!.input_tokens).toBeGreaterThan(0)
    expect(response.usage!.output_tokens).toBeGreaterThan(0)
    expect(response.usage!.total_tokens).toBe(response.usage!.input_tokens + response.usage!.output_tokens)
    expect(http.headers.get("x-awooop-trace-id")).toBe(traceId)
    expect(http.headers.get("x-awooop-endpoint")).toBe("gcp-a")

    const sent = lastChat(gw)
    expect(sent.model).toBe("gemma3:4b")
    expect(sent.stream).toBe(false)
    expect(sent.messages).toEqual([{ role: "system", content: "be brief" }, { role: "user", content: "why is the alert firing?" }])
    expect(sent.options).toEqual({ temperature: 0.2, top_p: 0.9, num_predict: 64 })
  })

  it("takes message items with text and a base64 image, and text.format json_schema as Ollama's format", async () => {
    const schema = { type: "object", properties: { cause: { type: "string" } }, required: ["cause"], additionalProperties: false }
    const response = await client(lane).responses.create({
      model: "gemma3:4b",
      input: [
        { role: "developer", content: "answer in JSON" },
        { type: "message", role: "user", content: [{ type: "input_text", text: "what is on " }, { type: "input_image", image_url: "data:image/png;base64,iVBORw0KGgo=", detail: "auto" }] },
        { type: "message", role: "assistant", content: [{ type: "output_text", text: "a graph", annotations: [] }] } as unknown as OpenAI.Responses.ResponseInputItem,
        { role: "user", content: "and why?" }
      ],
      text: { format: { type: "json_schema", name: "diagnosis", schema, strict: true } }
    })
    expect(response.status).toBe("completed")
    expect(response.text?.format).toMatchObject({ type: "json_schema", name: "diagnosis" })
    const sent = lastChat(gw)
    expect(sent.messages).toEqual([
      { role: "system", content: "answer in JSON" },
      { role: "user", content: "what is on ", images: ["iVBORw0KGgo="] },
      { role: "assistant", content: "a graph" },
      { role: "user", content: "and why?" }
    ])
    expect(sent.format).toEqual(schema)
  })

  it("puts a legacy caller (no lane header) on a lane by its model", async () => {
    const response = await client().responses.create({ model: "qwen2.5-coder:7b", input: "review" })
    expect(response.output_text).toBe("[111] hello world")
  })

  it("passes function tools through and returns the model's call as a function_call item; the output goes back as a tool message", async () => {
    const c = client(lane)
    const first = await c.responses.create({ model: "gemma3:4b", input: "weather in Paris?", tools: [weather] })
    expect(lastChat(gw).tools).toEqual([{ type: "function", function: { name: "get_weather", description: "the weather in a city", parameters: weather.parameters } }])
    const call = first.output.find((o): o is OpenAI.Responses.ResponseFunctionToolCall => o.type === "function_call")!
    expect(call).toMatchObject({ type: "function_call", name: "get_weather", status: "completed" })
    expect(JSON.parse(call.arguments)).toEqual({ city: "fake-city" })
    expect(call.call_id).toMatch(/^call_/)

    const second = await c.responses.create({
      model: "gemma3:4b",
      tools: [weather],
      input: [
        { role: "user", content: "weather in Paris?" },
        { type: "function_call", call_id: call.call_id, name: call.name, arguments: call.arguments },
        { type: "function_call_output", call_id: call.call_id, output: "{\"celsius\":21}" }
      ]
    })
    expect(second.output_text).toBe("[gcp-a] hello world")
    expect(lastChat(gw).messages).toEqual([
      { role: "user", content: "weather in Paris?" },
      { role: "assistant", content: "", tool_calls: [{ function: { name: "get_weather", arguments: { city: "fake-city" } } }] },
      { role: "tool", content: "{\"celsius\":21}", tool_name: "get_weather" }
    ])
  })
})

describe("responses.stream", () => {
  it("streams the typed events in order, sequence numbers rising, and the SDK's final response matches", async () => {
    const stream = client(lane).responses.stream({ model: "gemma3:4b", input: "hi" })
    const seen: Array<OpenAI.Responses.ResponseStreamEvent> = []
    for await (const event of stream) seen.push(event)
    const final = await stream.finalResponse()
    expect(final.status).toBe("completed")
    expect(final.output_text).toBe(fakeText("gcp-a", 3))
    expect(final.usage!.output_tokens).toBeGreaterThan(0)
    const types = seen.map((e) => e.type)
    expect(types.slice(0, 4)).toEqual(["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"])
    expect(types.filter((t) => t === "response.output_text.delta")).toHaveLength(3)
    expect(types.slice(-4)).toEqual(["response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"])
    expect(seen.map((e) => e.sequence_number)).toEqual(seen.map((_, i) => i))
    const deltas = seen.flatMap((e) => (e.type === "response.output_text.delta" ? [e.delta] : []))
    expect(deltas.join("")).toBe(fakeText("gcp-a", 3))
    expect(new Set(seen.flatMap((e) => ("response" in e ? [e.response.id] : []))).size).toBe(1)
  })

  it("streams a tool call as a function_call item with its arguments", async () => {
    const stream = client(lane).responses.stream({ model: "gemma3:4b", input: "weather in Oslo?", tools: [weather] })
    const types: Array<string> = []
    for await (const event of stream) types.push(event.type)
    const final = await stream.finalResponse()
    const call = final.output.find((o) => o.type === "function_call") as OpenAI.Responses.ResponseFunctionToolCall
    expect(JSON.parse(call.arguments)).toEqual({ city: "fake-city" })
    expect(types).toEqual(expect.arrayContaining(["response.function_call_arguments.delta", "response.function_call_arguments.done", "response.completed"]))
  })

  it("says incomplete (max_output_tokens) when the answer was cut at max_output_tokens, streaming and not", async () => {
    const c = client(lane)
    const cut = await c.responses.create({ model: "gemma3:4b", input: "hi", max_output_tokens: 2 })
    expect(cut.status).toBe("incomplete")
    expect(cut.incomplete_details).toEqual({ reason: "max_output_tokens" })
    expect(cut.output_text).toBe(fakeText("gcp-a", 2))

    const stream = c.responses.stream({ model: "gemma3:4b", input: "hi", max_output_tokens: 2 })
    const types: Array<string> = []
    for await (const event of stream) types.push(event.type)
    expect(types.at(-1)).toBe("response.incomplete")
    expect(types).not.toContain("response.completed")
    const final = await stream.finalResponse()
    expect(final.status).toBe("incomplete")
    expect(final.output_text).toBe(fakeText("gcp-a", 2))
  })

  it("throws when the upstream resets mid-stream: response.failed and an error event, no response.completed", async () => {
    for (const name of ["gcp-a", "gcp-b", "111"]) gw.fakes[name]!.setMode("resetMidStream")
    const stream = client(lane).responses.stream({ model: "gemma3:4b", input: "hi" })
    const deltas: Array<string> = []
    const error = await rejection((async () => {
      for await (const event of stream) if (event.type === "response.output_text.delta") deltas.push(event.delta)
    })())
    expect(error).toBeInstanceOf(OpenAI.APIError)
    expect(error.message).toMatch(/failed mid-stream/)
    expect(deltas.join("")).toBe("[gcp-a] ")

    const res = await gw.post("/v1/responses", { model: "gemma3:4b", input: "hi", stream: true }, lane)
    const all = sseEvents(await res.text())
    const names = all.map(([name]) => name)
    expect(names).not.toContain("response.completed")
    expect(names.slice(-2)).toEqual(["response.failed", "error"])
    const failed = all.at(-2)![1].response as Record<string, unknown>
    expect(failed.status).toBe("failed")
    expect(failed.error).toEqual({ code: "server_error", message: expect.stringMatching(/mid-stream/) })
    expect(all.at(-1)![1]).toMatchObject({ type: "error", code: "server_error", message: expect.stringMatching(/mid-stream/), param: null })
  })
})

describe("refusals", () => {
  it("refuses state the gateway does not keep: store, previous_response_id", async () => {
    const store = await rejection(client(lane).responses.create({ model: "gemma3:4b", input: "hi", store: true }))
    expect(store).toBeInstanceOf(OpenAI.BadRequestError)
    expect(store.error).toEqual({ message: expect.stringContaining("store: true is not supported"), type: "invalid_request_error", param: null, code: null })
    const previous = await rejection(client(lane).responses.create({ model: "gemma3:4b", input: "hi", previous_response_id: "resp_123" }))
    expect(previous).toBeInstanceOf(OpenAI.BadRequestError)
    expect(previous.message).toMatch(/previous_response_id is not supported: the gateway keeps no conversation state/)
  })

  it("answers each gateway refusal as the SDK's typed error", async () => {
    const unknownLane = await rejection(client({ "x-awooop-lane": "no-such-lane" }).responses.create({ model: "gemma3:4b", input: "hi" }))
    expect(unknownLane).toBeInstanceOf(OpenAI.BadRequestError)
    expect(unknownLane.message).toMatch(/unknown lane "no-such-lane"/)

    const noLane = await rejection(client().responses.create({ model: "no-such-model", input: "hi" }))
    expect(noLane).toBeInstanceOf(OpenAI.BadRequestError)
    expect(noLane.message).toMatch(/no lane for model "no-such-model"/)

    const notFound = await rejection(client({ "x-awooop-lane": "ghost" }).responses.create({ model: "x", input: "hi" }))
    expect(notFound).toBeInstanceOf(OpenAI.NotFoundError)

    const asyncOnly = await rejection(client({ "x-awooop-lane": "deep-rca" }).responses.create({ model: "qwen2.5:14b", input: "rca" }))
    expect(asyncOnly).toBeInstanceOf(OpenAI.ConflictError)

    const forced = await rejection(client(lane).responses.create({ model: "gemma3:4b", input: "hi", tools: [weather], tool_choice: "required" }))
    expect(forced).toBeInstanceOf(OpenAI.BadRequestError)
    expect(forced.message).toMatch(/tool_choice "required" is not supported/)

    for (const name of ["gcp-a", "gcp-b", "111"]) gw.fakes[name]!.setMode("busy503")
    const down = await rejection(client(lane).responses.create({ model: "gemma3:4b", input: "hi" }))
    expect(down).toBeInstanceOf(OpenAI.InternalServerError)
    expect(down.status).toBe(503)
    expect(down.error).toMatchObject({ type: "api_error", param: null, code: null })
  })

  it("names the field at fault for bad bodies, in OpenAI's error shape", async () => {
    const cases: Array<[unknown, RegExp]> = [
      ["{not json", /not valid JSON/],
      [{ input: "hi" }, /model is required/],
      [{ model: "gemma3:4b" }, /input: is missing/],
      [{ model: "gemma3:4b", input: 5 }, /input must be a string or a list of input items/],
      [{ model: "gemma3:4b", input: [] }, /input must not be empty/],
      [{ model: "gemma3:4b", input: [{ type: "item_reference", id: "x" }] }, /input\.0\.type: "item_reference" is not supported/],
      [{ model: "gemma3:4b", input: [{ type: "function_call", name: "f", arguments: "{}" }] }, /input\.0\.call_id: is missing/],
      [{ model: "gemma3:4b", input: [{ type: "function_call", call_id: "c", name: "f", arguments: "{oops" }] }, /input\.0\.arguments is not valid JSON/],
      [{ model: "gemma3:4b", input: [{ role: "user", content: [{ type: "input_image", image_url: "https://example.com/a.png" }] }] }, /input\.0\.content\.0\.image_url/],
      [{ model: "gemma3:4b", input: [{ role: "robot", content: "hi" }] }, /input\.0\.role/],
      [{ model: "gemma3:4b", input: "hi", tools: [{ type: "web_search" }] }, /tools\.0\.type: only function tools/],
      [{ model: "gemma3:4b", input: "hi", max_output_tokens: "many" }, /max_output_tokens/],
      [{ model: "gemma3:4b", input: "hi", temperature: "hot" }, /temperature/]
    ]
    for (const [body, message] of cases) {
      const res = await gw.post("/v1/responses", body, lane)
      expect(res.status, JSON.stringify(body)).toBe(400)
      const payload = await res.json() as { error: Record<string, unknown> }
      expect(payload.error, JSON.stringify(body)).toEqual({ message: expect.stringMatching(message), type: "invalid_request_error", param: null, code: null })
    }
  })
})

describe("the journal", () => {
  it("records the protocol, and the run fails over like /api/chat", async () => {
    gw.fakes["gcp-a"]!.setMode("error500")
    const traceId = newTraceId()
    const { data: response, response: http } = await client({ ...lane, "x-awooop-trace-id": traceId }).responses.create({ model: "gemma3:4b", input: "hi" }).withResponse()
    expect(response.output_text).toBe("[gcp-b] hello world")
    const events = await gw.runEvents(traceId)
    expect(typesOf(events)).toEqual(["RunStarted", "RouteDecided", "AttemptStarted", "AttemptFailed", "AttemptStarted", "AttemptSucceeded", "RunCompleted"])
    expect(events[0]!.data).toMatchObject({ protocol: "openai-responses", operation: "chat", stream: false })
    expect(events.find((e) => e.type === "AttemptFailed")!.data).toMatchObject({ host: "gcp-a", status: 500 })
    expect(events.find((e) => e.type === "RunCompleted")!.data).toMatchObject({ endpoint: "gcp-b" })

    // run_state has it too, and the run API shows it.
    const runId = http.headers.get("x-awooop-run-id")!
    // The projector may have applied the run's first events but not yet its last (a projected row
    // still "running"): wait for the row to be past them.
    const caughtUp = (r: Record<string, unknown>) => r.projected === true && r.status !== "running"
    let run: Record<string, unknown> = {}
    for (let i = 0; i < 100 && !caughtUp(run); i++) {
      run = await (await fetch(`${gw.url}/awooop/runs/${runId}`)).json() as Record<string, unknown>
      if (!caughtUp(run)) await new Promise((r) => setTimeout(r, 50))
    }
    expect(run).toMatchObject({ projected: true, status: "completed", protocol: "openai-responses", endpoint: "gcp-b", attempts: 2 })
    expect(await gw.query(`SELECT protocol FROM run_state WHERE run_id = $1`, [runId])).toEqual([{ protocol: "openai-responses" }])

    // The same request on /api/chat takes the same path and is journaled as Ollama's.
    const ollamaTrace = newTraceId()
    await gw.ollama({ ...lane, "x-awooop-trace-id": ollamaTrace }).chat({ model: "gemma3:4b", messages: [{ role: "user", content: "hi" }] })
    const ollamaEvents = await gw.runEvents(ollamaTrace)
    expect(typesOf(ollamaEvents)).toEqual(typesOf(events))
    expect(ollamaEvents[0]!.data).toMatchObject({ protocol: "ollama" })
  })
})
