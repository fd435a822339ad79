/**
 * The Responses and Messages APIs take the lane's paid fallback like /api/chat does: every Ollama
 * host fails, the budget admits the call, a fake Claude (Anthropic's wire format on loopback)
 * answers, and the caller's SDK gets that answer in its own protocol — streamed and not — with the
 * run journaled as paid and as the protocol the caller spoke.
 */
import Anthropic from "@anthropic-ai/sdk"
import OpenAI from "openai"
import { randomUUID } from "node:crypto"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type FakeAnthropic, startFakeAnthropic } from "./support/FakeAnthropic.ts"
import { newTraceId, startTestGateway, TEST_TIMEOUT, type TestGateway, typesOf } from "./support/TestGateway.ts"

const CLAUDE_KEY = `sk-ant-test-key-${randomUUID()}`
process.env.AWOOOP_TEST_PROTOCOLS_CLAUDE_KEY = CLAUDE_KEY

let claude: FakeAnthropic
let gw: TestGateway

beforeAll(async () => {
  claude = await startFakeAnthropic({ apiKey: CLAUDE_KEY })
  gw = await startTestGateway({
    hosts: {
      "gcp-a": { slots: 4, protected: true, fake: { mode: "error500" } },
      "gcp-b": { slots: 4, protected: true, fake: { mode: "error500" } },
      "111": { slots: 2, fake: { mode: "error500" } }
    },
    lanes: {
      "alert-fast": {
        model: "gemma3:4b",
        route: [{ host: "gcp-a", timeout: TEST_TIMEOUT }, { host: "gcp-b", timeout: TEST_TIMEOUT }],
        paidFallback: ["claude"]
      }
    },
    breaker: { consecutiveTimeouts: 1000 },
    extra: {
      providers: {
        claude: { kind: "anthropic", model: "claude-haiku-4-5", apiKeyEnv: "AWOOOP_TEST_PROTOCOLS_CLAUDE_KEY", baseUrl: claude.url, timeout: "2s", maxOutputTokens: 256 }
      },
      prices: { "claude-haiku-4-5": { input: 1, output: 5 } },
      budget: { hardKillUsd: 5, period: "day" }
    }
  })
}, 30_000)

afterAll(async () => {
  await gw?.close()
  await claude?.stop()
})

const headers = (traceId: string) => ({ "x-awooop-lane": "alert-fast", "x-awooop-trace-id": traceId })

/** The run fell over from both hosts to Claude, and says which protocol its caller spoke. */
const expectPaidRun = async (traceId: string, protocol: string) => {
  const events = await gw.runEvents(traceId)
  expect(events[0]!.data).toMatchObject({ protocol })
  expect(typesOf(events).filter((t) => t === "AttemptFailed")).toHaveLength(2)
  expect(events.find((e) => e.type === "RunCompleted")!.data).toMatchObject({ providerTier: "paid", endpoint: "claude", model: "claude-haiku-4-5" })
}

describe("paid fallback through the translated protocols", () => {
  it("messages.create and messages.stream get Claude's answer when every Ollama host fails", async () => {
    const anthropic = (traceId: string) => new Anthropic({ baseURL: gw.url, apiKey: "unused", maxRetries: 0, defaultHeaders: headers(traceId) })
    const unary = newTraceId()
    const message = await anthropic(unary).messages.create({ model: "gemma3:4b", max_tokens: 64, messages: [{ role: "user", content: "why?" }] })
    expect(message.content).toEqual([{ type: "text", text: "[claude] hello from claude" }])
    expect(message.model).toBe("claude-haiku-4-5")
    expect(message.usage.output_tokens).toBeGreaterThan(0)
    await expectPaidRun(unary, "anthropic-messages")

    const streamed = newTraceId()
    const stream = anthropic(streamed).messages.stream({ model: "gemma3:4b", max_tokens: 64, messages: [{ role: "user", content: "why?" }] })
    expect(await stream.finalText()).toBe("[claude] hello from claude")
    expect((await stream.finalMessage()).stop_reason).toBe("end_turn")
    await expectPaidRun(streamed, "anthropic-messages")
  })

  it("responses.create and responses.stream get Claude's answer when every Ollama host fails", async () => {
    const openai = (traceId: string) => new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: "unused", maxRetries: 0, defaultHeaders: headers(traceId) })
    const unary = newTraceId()
    const response = await openai(unary).responses.create({ model: "gemma3:4b", input: "why?" })
    expect(response.output_text).toBe("[claude] hello from claude")
    expect(response.status).toBe("completed")
    await expectPaidRun(unary, "openai-responses")

    const streamed = newTraceId()
    const final = await openai(streamed).responses.stream({ model: "gemma3:4b", input: "why?" }).finalResponse()
    expect(final.output_text).toBe("[claude] hello from claude")
    await expectPaidRun(streamed, "openai-responses")
  })
})
