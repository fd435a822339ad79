/**
 * The paid-provider parts of the config (providers, prices in both formats, budget, `paid` lanes and
 * their checks), the Ollama → provider translation, and the fallback rule, without a server.
 */
import { Effect, Either } from "effect"
import { describe, expect, it } from "vitest"
import { parseConfig, priceOf } from "../src/config/GatewayConfig.ts"
import { periodStart } from "../src/budget/Budget.ts"
import { estimateInputTokens, toPaidRequest } from "../src/providers/Translate.ts"
import { worstCaseUsd } from "../src/routing/PaidRoute.ts"
import { costOf } from "../src/run/Cost.ts"
import { fallbackReason } from "../src/run/Miss.ts"

const base = `
hosts:
  gcp-a: { url: "http://127.0.0.1:11435", slots: 4 }
  "111": { url: "http://127.0.0.1:11434", slots: 2 }
`

const parse = (text: string) => Effect.runSync(Effect.either(parseConfig(text, "t.yaml")))
const ok = (text: string) => {
  const result = parse(text)
  if (Either.isLeft(result)) throw new Error(result.left.message)
  return result.right
}
const errorOf = (text: string) => {
  const result = parse(text)
  if (Either.isRight(result)) throw new Error("expected the config to be refused")
  return result.left.message
}

const paidConfig = `${base}
lanes:
  alert-fast: { model: gemma3:4b, route: [ { host: gcp-a, timeout: "45s" } ], paidFallback: [gemini, claude] }
  paid-emergency: { paid: [gemini, claude] }
providers:
  gemini: { kind: gemini,    model: gemini-2.5-flash, apiKeyEnv: GEMINI_API_KEY, baseUrl: "http://127.0.0.1:9999" }
  claude: { kind: anthropic, model: claude-haiku-4-5, apiKeyEnv: ANTHROPIC_API_KEY }
prices:
  gemini-2.5-flash: { input: 0.30, output: 2.50 }
  anthropic/claude-haiku-4-5: { input_cost_per_token: 0.000001, output_cost_per_token: 0.000005, litellm_provider: anthropic, max_input_tokens: 200000, supports_vision: true }
budget: { hardKillUsd: 5.00 }
`

describe("config: providers, prices, budget", () => {
  it("decodes the issue's example; prices per million and LiteLLM's per token come out the same way", () => {
    const config = ok(paidConfig)
    expect(config.providers.gemini).toEqual({
      kind: "gemini", model: "gemini-2.5-flash", apiKeyEnv: "GEMINI_API_KEY", baseUrl: "http://127.0.0.1:9999", timeout: 60_000, maxOutputTokens: 1024
    })
    expect(config.providers.claude!.baseUrl).toBeUndefined()
    expect(config.budget).toEqual({ hardKillUsd: 5, period: "day" })
    const gemini = priceOf(config.prices, "gemini-2.5-flash", "gemini")!
    expect(gemini.inputPerToken * 1e6).toBeCloseTo(0.30, 12)
    expect(gemini.outputPerToken * 1e6).toBeCloseTo(2.50, 12)
    // LiteLLM keys models by provider: "anthropic/claude-haiku-4-5" prices provider kind anthropic's model.
    expect(priceOf(config.prices, "claude-haiku-4-5", "anthropic")).toEqual({ inputPerToken: 0.000001, outputPerToken: 0.000005 })
    expect(config.lanes["paid-emergency"]).toMatchObject({ paid: ["gemini", "claude"], route: [], model: "" })
    expect(config.lanes["alert-fast"]!.paid).toEqual([])
  })

  it("refuses unknown providers, unpriced models, a paid lane without budget, a paid lane with a route, and keys in the file", () => {
    expect(errorOf(paidConfig.replace("paidFallback: [gemini, claude]", "paidFallback: [gemini, openai]")))
      .toContain(`at lanes.alert-fast.paidFallback.1: unknown provider "openai" (providers: gemini, claude)`)
    expect(errorOf(paidConfig.replace("  gemini-2.5-flash: { input: 0.30, output: 2.50 }\n", "")))
      .toContain(`no price for "gemini-2.5-flash" (provider gemini)`)
    expect(errorOf(paidConfig.replace("budget: { hardKillUsd: 5.00 }\n", "")))
      .toContain("paid providers need a `budget` with hardKillUsd")
    expect(errorOf(paidConfig.replace("paid-emergency: { paid: [gemini, claude] }", `paid-emergency: { paid: [gemini], route: [ { host: gcp-a, timeout: "1s" } ] }`)))
      .toContain("a `paid` lane calls its providers directly: it takes no `route` or `paidFallback`")
    expect(errorOf(paidConfig.replace("apiKeyEnv: GEMINI_API_KEY", `apiKeyEnv: "AIzaSy-not-a-name!"`)))
      .toContain("expected the NAME of an environment variable")
    expect(errorOf(paidConfig.replace("{ input: 0.30, output: 2.50 }", "{ input: -1, output: 2.50 }"))).toContain("prices")
    expect(errorOf(paidConfig.replace("budget: { hardKillUsd: 5.00 }", "budget: { hardKillUsd: 5.00, period: week }"))).toContain("budget.period")
  })

  it("keeps the old lanes' meaning: a route lane still needs a model and a route", () => {
    expect(errorOf(`${base}\nlanes:\n  x: { route: [ { host: gcp-a, timeout: "1s" } ] }`)).toContain("a lane with an Ollama route needs a model")
    expect(errorOf(`${base}\nlanes:\n  x: { model: m }`)).toContain("a lane needs at least one route step")
    expect(ok(`${base}\nlanes:\n  x: { model: m, route: [ { host: gcp-a, timeout: "1s" } ] }`).providers).toEqual({})
  })
})

describe("Ollama → paid request", () => {
  it("generate: system, prompt, images, temperature, num_predict (capped), stop, format", () => {
    const r = toPaidRequest("generate", {
      model: "gemma3:4b",
      system: "sys",
      prompt: "why?",
      images: ["/9j/4AAQ"],
      format: "json",
      options: { temperature: 0.5, num_predict: 5000, stop: ["\n\n", ""], top_p: 0.9, seed: 7 }
    }, 1024)
    expect(r).toEqual({
      operation: "generate",
      system: "sys",
      messages: [{ role: "user", text: "why?", images: ["/9j/4AAQ"] }],
      temperature: 0.5,
      topP: 0.9,
      topK: null,
      seed: 7,
      maxOutputTokens: 1024,
      stop: ["\n\n"],
      format: { _tag: "json" }
    })
  })

  it("chat: system messages become the system prompt; num_predict -1 means the provider's cap", () => {
    const r = toPaidRequest("chat", {
      messages: [{ role: "system", content: "a" }, { role: "user", content: "q" }, { role: "system", content: "b" }, { role: "assistant", content: "r" }],
      format: { type: "object" },
      options: { num_predict: -1 }
    }, 300)
    expect(r).toMatchObject({ system: "a\n\nb", maxOutputTokens: 300, format: { _tag: "schema", schema: { type: "object" } } })
    expect("messages" in r && r.messages.map((m) => m.role)).toEqual(["user", "assistant"])
  })

  it("what cannot go to a paid provider says why", () => {
    expect(toPaidRequest("embed", { input: "x" }, 10)).toEqual({ unsupported: "paid providers serve generate and chat, not embed" })
    expect(toPaidRequest("generate", { model: "m" }, 10)).toMatchObject({ load: true })
    expect(toPaidRequest("chat", { messages: [{ role: "user", content: "x" }], tools: [{ type: "function" }] }, 10)).toMatchObject({ unsupported: "tool calls are not translated to paid providers" })
  })

  it("the worst case bounds the prompt by its UTF-8 bytes and the output by max tokens; unknown usage has no cost", () => {
    const request = toPaidRequest("generate", { prompt: "日本語" }, 100) as Exclude<ReturnType<typeof toPaidRequest>, { unsupported: string }>
    expect(estimateInputTokens(request)).toBe(9 + 8 + 16) // 3 characters, 9 bytes
    const price = { inputPerToken: 1e-6, outputPerToken: 5e-6 }
    expect(worstCaseUsd(request, price).amountUsd).toBeCloseTo(33e-6 + 100 * 5e-6, 15)
    expect(costOf({ inputTokens: 10, outputTokens: null }, price)).toBeNull()
    expect(costOf(null, price)).toBeNull()
    expect(costOf({ inputTokens: 10, outputTokens: 2 }, price)).toBeCloseTo(20e-6, 15)
  })
})

describe("the fallback rule", () => {
  it("every endpoint failed or circuit-open → the reason, in route order", () => {
    expect(fallbackReason([
      { host: "111", kind: "refused" },
      { host: "gcp-b", kind: "circuit-open" },
      { host: "gcp-a", kind: "timeout" }
    ], ["gcp-a", "gcp-b", "111"])).toBe("all Ollama endpoints failed: gcp-a timeout, gcp-b circuit open, 111 refused")
  })

  it("a rule's refusal (heavy model on a protected host) never falls back to paying", () => {
    expect(fallbackReason([{ host: "gcp-a", kind: "heavy-model-denied" }, { host: "111", kind: "timeout" }])).toBeNull()
  })

  it("budget periods start at UTC boundaries", () => {
    const t = Date.UTC(2026, 4, 5, 13, 47, 12)
    expect(periodStart(t, "hour").toISOString()).toBe("2026-05-05T13:00:00.000Z")
    expect(periodStart(t, "day").toISOString()).toBe("2026-05-05T00:00:00.000Z")
    expect(periodStart(t, "month").toISOString()).toBe("2026-05-01T00:00:00.000Z")
  })
})
