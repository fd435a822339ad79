/**
 * One gateway for a whole test file (starting one per test would dominate the suite's time), with
 * every fake host back to mode "ok" and its request log cleared before each test. The SDK suites
 * (OpenAI chat, Responses, Anthropic Messages) use it, and the helpers they read answers with.
 */
import { afterAll, beforeAll, beforeEach } from "vitest"
import { startTestGateway, type TestGateway, type TestGatewayOptions } from "./TestGateway.ts"

/** Registers the file's hooks; `started` receives the gateway once it is up. */
export const sharedGateway = (options: TestGatewayOptions, started: (gw: TestGateway) => void): void => {
  let gw: TestGateway | undefined
  beforeAll(async () => {
    gw = await startTestGateway(options)
    started(gw)
  }, 30_000)
  afterAll(async () => {
    await gw?.close()
  })
  beforeEach(() => {
    for (const fake of Object.values(gw!.fakes)) {
      fake.setMode("ok")
      fake.reset()
    }
  })
}

/** The Ollama chat body a host received last. */
export const lastChat = (gw: TestGateway, host = "gcp-a"): Record<string, unknown> =>
  gw.fakes[host]!.requests.filter((r) => r.path === "/api/chat").at(-1)!.body as Record<string, unknown>

/** The server-sent events of a response body, as [event name or null, data]. */
export const sseEvents = (body: string): Array<readonly [string | null, Record<string, unknown>]> =>
  body.split("\n\n").filter((e) => e !== "").map((e) => {
    const name = /^event: (.*)$/m.exec(e)?.[1] ?? null
    return [name, JSON.parse(/^data: (.*)$/m.exec(e)![1]!) as Record<string, unknown>] as const
  })
