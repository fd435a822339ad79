/**
 * Bad input, property-based: random and truncated JSON, wrong types, huge strings, invalid UTF-8,
 * header injection attempts, absurd numbers in options, unknown fields — on every public route.
 * Each case gets a 4xx with an `{"error"}` body or a correct answer; never a 5xx, a crash or a hang,
 * and nothing unvalidated reaches the journal.
 */
import fc from "fast-check"
import * as http from "node:http"
import * as net from "node:net"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { startTestGateway, type TestGateway } from "./support/TestGateway.ts"

let gw: TestGateway

beforeAll(async () => {
  gw = await startTestGateway({ server: { maxBodyBytes: 65536, headersTimeout: "500ms", requestTimeout: "1s" } })
}, 60_000)
afterAll(async () => {
  await gw?.close()
})

interface Answer {
  readonly status: number
  readonly contentType: string
  readonly body: string
}

/** A raw HTTP request (fetch would refuse some of the headers and bodies we want to send). */
const raw = (method: string, path: string, body: Buffer | null, headers: Record<string, string> = {}): Promise<Answer> =>
  new Promise((resolve, reject) => {
    const url = new URL(gw.url)
    const req = http.request({
      host: url.hostname,
      port: url.port,
      method,
      path,
      headers: { ...(body !== null ? { "content-type": "application/json", "content-length": String(body.length) } : {}), ...headers },
      timeout: 10_000
    }, (res) => {
      const chunks: Array<Buffer> = []
      res.on("data", (c: Buffer) => chunks.push(c))
      res.on("end", () => resolve({ status: res.statusCode ?? 0, contentType: String(res.headers["content-type"] ?? ""), body: Buffer.concat(chunks).toString("utf8") }))
      res.on("error", reject)
    })
    req.on("timeout", () => req.destroy(new Error(`no answer to ${method} ${path} within 10s`)))
    req.on("error", reject)
    if (body !== null) req.write(body)
    req.end()
  })

/** The property every answer must have. */
const wellFormed = (answer: Answer) => {
  expect(answer.status, answer.body).toBeLessThan(500)
  if (answer.status >= 400) {
    const parsed = JSON.parse(answer.body) as { error?: unknown }
    expect(typeof parsed.error).toBe("string")
    expect((parsed.error as string).length).toBeGreaterThan(0)
  }
}

const postRoutes = ["/api/generate", "/api/chat", "/api/embed", "/api/embeddings", "/api/show"]

const jsonValue = fc.jsonValue({ maxDepth: 3 })
const absurdNumber = fc.oneof(
  fc.constantFrom(1e308, -1e308, 2 ** 53 + 1, -0, 0.1, 1e-320),
  fc.double({ noNaN: true }),
  fc.integer()
)
const models = fc.constantFrom("gemma3:4b", "qwen2.5-coder:7b", "bge-m3", "qwen2.5:14b", "nope:1b", "", "x".repeat(300))
const lanes = fc.constantFrom(undefined, "alert-fast", "code-review", "embedding", "deep-rca", "nope", "alert-fast\r\nX-Evil: 1")

const plausibleBody = fc.record({
  model: fc.oneof(models, jsonValue),
  prompt: fc.oneof(fc.string({ maxLength: 200 }), jsonValue),
  messages: fc.oneof(
    fc.array(fc.record({ role: fc.constantFrom("user", "system", "assistant", "tool", "evil"), content: fc.oneof(fc.string(), jsonValue) }), { maxLength: 4 }),
    jsonValue
  ),
  input: fc.oneof(fc.string(), fc.array(fc.string(), { maxLength: 4 }), jsonValue),
  stream: fc.oneof(fc.boolean(), jsonValue),
  options: fc.oneof(fc.dictionary(fc.constantFrom("temperature", "num_predict", "top_k", "stop", "seed", "weird"), fc.oneof(absurdNumber, fc.string(), jsonValue)), jsonValue),
  keep_alive: fc.oneof(absurdNumber, fc.string(), jsonValue),
  unknown_field: jsonValue
}, { requiredKeys: [] })

describe("fuzzed input on every public route", () => {
  it("random JSON values, plausible bodies with wrong types and absurd numbers: always 2xx or a 4xx {error}", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...postRoutes),
        fc.oneof(jsonValue, plausibleBody),
        lanes,
        async (route, body, lane) => {
          const headers: Record<string, string> = lane === undefined || /[\r\n]/.test(lane) ? {} : { "x-awooop-lane": lane }
          const text = JSON.stringify(body) ?? "null"
          wellFormed(await raw("POST", route, Buffer.from(text), headers))
        }
      ),
      // Always tried: a model named like an Object.prototype member once found the prototype's function as its lane (a 500).
      { numRuns: 150, examples: [["/api/generate", { model: "valueOf", prompt: "" }, undefined], ["/api/chat", { model: "constructor" }, undefined]] }
    )
  })

  it("truncated JSON, invalid UTF-8 and raw bytes are refused with 400", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...postRoutes),
        fc.oneof(
          fc.string({ minLength: 2, maxLength: 120 }).map((s) => Buffer.from(JSON.stringify({ model: "gemma3:4b", prompt: s }).slice(0, -1))),
          fc.uint8Array({ minLength: 1, maxLength: 200 }).map((b) => Buffer.from(b)),
          fc.constant(Buffer.from([0x7b, 0x22, 0x6d, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d]))
        ),
        async (route, bytes) => {
          const answer = await raw("POST", route, bytes)
          wellFormed(answer)
          if (answer.status !== 200) expect(answer.status).toBe(400)
        }
      ),
      { numRuns: 100 }
    )
  })

  it("malformed AwoooP headers get a 400 naming the header", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom("x-awooop-trace-id", "x-awooop-project-id", "x-awooop-intent"),
        fc.string({ minLength: 1, maxLength: 200 }).filter((s) => !/^[A-Za-z0-9._:-]{1,64}$/.test(s) && !/[\r\n\0]/.test(s) && /^[\x20-\x7e]+$/.test(s) && s.trim() === s),
        async (header, value) => {
          const answer = await raw("POST", "/api/generate", Buffer.from(JSON.stringify({ model: "gemma3:4b", prompt: "x", stream: false })), { "x-awooop-lane": "alert-fast", [header]: value })
          expect(answer.status).toBe(400)
          expect((JSON.parse(answer.body) as { error: string }).error.toLowerCase()).toContain(header.replace("x-awooop-", ""))
        }
      ),
      { numRuns: 60 }
    )
  })

  it("a huge body is refused with 413 without being buffered, and the gateway keeps serving", async () => {
    const huge = Buffer.from(JSON.stringify({ model: "gemma3:4b", prompt: "x".repeat(200_000) }))
    const answer = await raw("POST", "/api/generate", huge, { "x-awooop-lane": "alert-fast" })
    expect(answer.status).toBe(413)
    wellFormed(answer)
    const ok = await raw("POST", "/api/generate", Buffer.from(JSON.stringify({ model: "gemma3:4b", prompt: "hi", stream: false })), { "x-awooop-lane": "alert-fast" })
    expect(ok.status).toBe(200)
  })

  it("GET routes, unknown routes and wrong methods answer {error} or data, never 5xx", async () => {
    for (const [method, path] of [["GET", "/api/tags"], ["GET", "/api/ps"], ["GET", "/api/version"], ["GET", "/"], ["GET", "/api/generate"], ["DELETE", "/api/chat"], ["GET", "/nope"], ["POST", "/api/pull"], ["GET", "/api/tags?x=%ZZ"]] as const) {
      wellFormed(await raw(method, path, method === "POST" ? Buffer.from("{}") : null))
    }
  })

  it("slow-loris clients are cut off by the header and body timeouts", async () => {
    const url = new URL(gw.url)
    const cutOff = (send: (socket: net.Socket) => void) =>
      new Promise<{ ms: number; answer: string }>((resolve, reject) => {
        const started = Date.now()
        const socket = net.connect(Number(url.port), url.hostname, () => send(socket))
        let answer = ""
        socket.on("data", (d) => { answer += d.toString() })
        socket.on("close", () => resolve({ ms: Date.now() - started, answer }))
        socket.on("error", () => undefined)
        setTimeout(() => { socket.destroy(); reject(new Error("the slow client was never cut off")) }, 8_000)
      })
    // Side by side: headers that never finish, and a body that never finishes.
    const [headers, body] = await Promise.all([
      cutOff((s) => {
        s.write("POST /api/generate HTTP/1.1\r\nHost: x\r\n")
        const drip = setInterval(() => s.writable ? s.write("X-Slow: 1\r\n") : clearInterval(drip), 200)
        s.on("close", () => clearInterval(drip))
      }),
      cutOff((s) => {
        s.write("POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"model\"")
        const drip = setInterval(() => s.writable ? s.write(" ") : clearInterval(drip), 200)
        s.on("close", () => clearInterval(drip))
      })
    ])
    expect(headers.ms).toBeLessThan(4_000)
    expect(body.ms).toBeLessThan(4_000)
    // And the gateway still serves others.
    const ok = await raw("POST", "/api/generate", Buffer.from(JSON.stringify({ model: "gemma3:4b", prompt: "hi", stream: false })), { "x-awooop-lane": "alert-fast" })
    expect(ok.status).toBe(200)
  })

  it("nothing unvalidated reaches the journal: every RunStarted names a configured lane and model", async () => {
    const rows = await gw.query<{ lane: string | null; model: string | null }>(
      `SELECT lane, data->>'assignedModel' AS model FROM step_journal WHERE type = 'RunStarted'`
    )
    expect(rows.length).toBeGreaterThan(0)
    const lanes = new Set(Object.keys(gw.config.lanes))
    const laneModels = new Set(Object.values(gw.config.lanes).map((l) => l.model))
    for (const row of rows) {
      expect(lanes.has(row.lane ?? "")).toBe(true)
      expect(laneModels.has(row.model ?? "")).toBe(true)
    }
  })
})

/**
 * Like `wellFormed`, for routes in either error shape: Ollama's {"error": "…"} or OpenAI's
 * {"error": {"message": "…"}}. A 503 with such a body is a deliberate refusal (the test gateway has
 * no projections, so the run/trace/cost API says it is not available here), never a crash.
 */
const wellFormedAnyShape = (answer: Answer, what: string) => {
  if (answer.status !== 503) expect(answer.status, `${what}: ${answer.body.slice(0, 300)}`).toBeLessThan(500)
  if (answer.status >= 400) {
    const parsed = JSON.parse(answer.body) as { error?: unknown }
    const message = typeof parsed.error === "string" ? parsed.error : (parsed.error as { message?: unknown } | undefined)?.message
    expect(typeof message, `${what}: ${answer.body.slice(0, 300)}`).toBe("string")
    expect((message as string).length).toBeGreaterThan(0)
  }
}

const pathSegment = fc.oneof(
  fc.string({ maxLength: 80 }).map(encodeURIComponent),
  fc.constantFrom("0", "-1", "%00", "%25", "%E0%A4%A", "%ZZ", "..%2F..%2Fetc%2Fpasswd", "a".repeat(2_000), "00000000-0000-0000-0000-000000000000", "0".repeat(32))
)
const queryValue = fc.oneof(fc.string({ maxLength: 60 }).map(encodeURIComponent), fc.constantFrom("", "2026-13-45", "9999-12-31", "-1", "%ZZ", "project", "lane", "provider"))

describe("fuzzed input on the /v1 and /awooop routes", () => {
  it("OpenAI routes: random and plausible bodies get an answer or a 4xx in OpenAI's error shape, never a 5xx", async () => {
    const openAiBody = fc.record({
      model: fc.oneof(models, jsonValue),
      messages: fc.oneof(fc.array(fc.record({ role: fc.constantFrom("user", "system", "assistant", "tool", "evil"), content: fc.oneof(fc.string(), jsonValue) }), { maxLength: 4 }), jsonValue),
      prompt: fc.oneof(fc.string({ maxLength: 100 }), jsonValue),
      input: fc.oneof(fc.string(), fc.array(fc.string(), { maxLength: 3 }), jsonValue),
      stream: fc.oneof(fc.boolean(), jsonValue),
      stream_options: jsonValue,
      max_tokens: absurdNumber,
      temperature: absurdNumber,
      n: absurdNumber,
      stop: jsonValue,
      unknown_field: jsonValue
    }, { requiredKeys: [] })
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom("/v1/chat/completions", "/v1/completions", "/v1/embeddings"),
        fc.oneof(jsonValue, openAiBody),
        lanes,
        async (route, body, lane) => {
          const headers: Record<string, string> = lane === undefined || /[\r\n]/.test(lane) ? {} : { "x-awooop-lane": lane }
          wellFormedAnyShape(await raw("POST", route, Buffer.from(JSON.stringify(body) ?? "null"), headers), `POST ${route}`)
        }
      ),
      // The counterexample fast-check found in session 12 (a 500), always tried.
      { numRuns: 100, examples: [["/v1/embeddings", { model: "valueOf", input: "" }, undefined], ["/v1/chat/completions", { model: "__proto__", messages: [] }, undefined]] }
    )
  })

  it("Responses and Messages routes: random and plausible items and blocks get an answer or a 4xx in the route's error shape, never a 5xx", async () => {
    const part = fc.record({
      type: fc.oneof(fc.constantFrom("input_text", "output_text", "input_image", "refusal", "text", "image", "tool_use", "tool_result", "thinking", "document"), jsonValue),
      text: fc.oneof(fc.string({ maxLength: 40 }), jsonValue),
      image_url: fc.oneof(fc.constantFrom("data:image/png;base64,iVBORw0KGgo=", "https://example.com/a.png", "data:,x"), jsonValue),
      source: fc.oneof(fc.record({ type: fc.constantFrom("base64", "url"), media_type: fc.string({ maxLength: 10 }), data: fc.string({ maxLength: 20 }) }), jsonValue),
      id: fc.oneof(fc.string({ maxLength: 10 }), jsonValue),
      name: fc.oneof(fc.string({ maxLength: 10 }), jsonValue),
      input: jsonValue,
      tool_use_id: fc.oneof(fc.string({ maxLength: 10 }), jsonValue),
      content: jsonValue,
      is_error: jsonValue
    }, { requiredKeys: [] })
    const item = fc.record({
      type: fc.oneof(fc.constantFrom("message", "function_call", "function_call_output", "reasoning", "item_reference"), jsonValue),
      role: fc.constantFrom("user", "assistant", "system", "developer", "tool", "evil"),
      content: fc.oneof(fc.string({ maxLength: 40 }), fc.array(part, { maxLength: 3 }), jsonValue),
      call_id: fc.oneof(fc.string({ maxLength: 10 }), jsonValue),
      name: fc.oneof(fc.string({ maxLength: 10 }), jsonValue),
      arguments: fc.oneof(fc.constantFrom("{}", "{\"a\":1}", "[1]", "{oops"), jsonValue),
      output: fc.oneof(fc.string({ maxLength: 20 }), fc.array(part, { maxLength: 2 }), jsonValue)
    }, { requiredKeys: [] })
    const tool = fc.record({
      type: fc.oneof(fc.constantFrom("function", "custom", "web_search"), jsonValue),
      name: fc.oneof(fc.constantFrom("get_weather", ""), jsonValue),
      parameters: jsonValue,
      input_schema: fc.oneof(fc.constant({ type: "object", properties: { city: { type: "string" } } }), jsonValue)
    }, { requiredKeys: [] })
    const body = fc.record({
      model: fc.oneof(models, jsonValue),
      input: fc.oneof(fc.string({ maxLength: 40 }), fc.array(item, { maxLength: 4 }), jsonValue),
      messages: fc.oneof(fc.array(item, { maxLength: 4 }), jsonValue),
      instructions: fc.oneof(fc.string({ maxLength: 40 }), jsonValue),
      system: fc.oneof(fc.string({ maxLength: 40 }), fc.array(part, { maxLength: 2 }), jsonValue),
      max_tokens: absurdNumber,
      max_output_tokens: absurdNumber,
      temperature: absurdNumber,
      top_k: absurdNumber,
      stop_sequences: jsonValue,
      tools: fc.oneof(fc.array(tool, { maxLength: 2 }), jsonValue),
      tool_choice: fc.oneof(fc.constantFrom("auto", "none", "required"), fc.record({ type: fc.constantFrom("auto", "any", "tool", "none", "function") }), jsonValue),
      text: fc.oneof(fc.record({ format: fc.oneof(fc.record({ type: fc.constantFrom("text", "json_object", "json_schema"), schema: jsonValue }), jsonValue) }), jsonValue),
      stream: fc.oneof(fc.boolean(), jsonValue),
      store: jsonValue,
      previous_response_id: jsonValue
    }, { requiredKeys: [] })
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom("/v1/responses", "/v1/messages"),
        fc.oneof(jsonValue, body),
        lanes,
        async (route, body, lane) => {
          const headers: Record<string, string> = lane === undefined || /[\r\n]/.test(lane) ? {} : { "x-awooop-lane": lane }
          const answer = await raw("POST", route, Buffer.from(JSON.stringify(body) ?? "null"), headers)
          wellFormedAnyShape(answer, `POST ${route}`)
          if (route === "/v1/messages" && answer.status >= 400) expect((JSON.parse(answer.body) as { type?: unknown }).type).toBe("error")
        }
      ),
      { numRuns: 150 }
    )
  })

  it("AwoooP POST routes (async runs, admin) with random bodies: a 4xx {error} or an answer, never a 5xx", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom("/awooop/runs", "/awooop/admin/budget/hard-kill", "/awooop/admin/hosts/gcp-a/maintenance", "/awooop/admin/hosts/nope/maintenance"),
        fc.oneof(jsonValue, plausibleBody, fc.record({ tripped: jsonValue, open: jsonValue, reason: jsonValue, until: jsonValue, operation: jsonValue }, { requiredKeys: [] })),
        fc.constantFrom(undefined, "Bearer wrong", "Bearer ", "Basic x"),
        async (route, body, auth) => {
          const headers: Record<string, string> = auth === undefined ? {} : { authorization: auth }
          wellFormedAnyShape(await raw("POST", route, Buffer.from(JSON.stringify(body) ?? "null"), headers), `POST ${route}`)
        }
      ),
      { numRuns: 80 }
    )
  })

  it("AwoooP and /v1 GET routes with random ids and query strings: data or a 4xx {error}, never a 5xx", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          pathSegment.map((s) => `/awooop/runs/${s}`),
          pathSegment.map((s) => `/awooop/traces/${s}`),
          pathSegment.map((s) => `/v1/models/${s}`),
          fc.tuple(queryValue, queryValue, queryValue).map(([from, to, groupBy]) => `/awooop/cost?from=${from}&to=${to}&groupBy=${groupBy}`),
          fc.tuple(queryValue, queryValue).map(([lane, since]) => `/awooop/shadow/report?lane=${lane}&since=${since}`),
          fc.constantFrom("/awooop/health", "/awooop/admin/budget", "/v1/models", "/metrics")
        ),
        fc.constantFrom("GET", "DELETE"),
        async (path, method) => wellFormedAnyShape(await raw(method, path, null), `${method} ${path}`)
      ),
      { numRuns: 120 }
    )
  })
})
