/**
 * The byte scan behind server.maxJsonDepth and server.maxMessages (src/http/RequestLimits.ts), against
 * what JSON.parse makes of the same text: the same depth, the same number of messages, for any JSON.
 */
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { scanJson } from "../src/http/RequestLimits.ts"

const depthOf = (v: unknown): number =>
  v !== null && typeof v === "object" ? 1 + Math.max(0, ...Object.values(v as object).map(depthOf)) : 0

const bytes = (text: string) => new TextEncoder().encode(text)

describe("scanJson", () => {
  it("finds the depth JSON.parse finds, for any JSON text", () => {
    fc.assert(fc.property(fc.jsonValue({ maxDepth: 8 }), (value) => {
      const text = JSON.stringify(value)
      const depth = depthOf(JSON.parse(text))
      expect(scanJson(bytes(text), { maxJsonDepth: depth, maxMessages: 1e9 })._tag).toBe("Ok")
      if (depth > 0) expect(scanJson(bytes(text), { maxJsonDepth: depth - 1, maxMessages: 1e9 })._tag).toBe("TooDeep")
    }), { numRuns: 500 })
  })

  it("counts the root object's messages as JSON.parse does, whatever the messages hold", () => {
    const message = fc.record({ role: fc.constantFrom("user", "assistant"), content: fc.string({ unit: "binary" }), extra: fc.jsonValue({ maxDepth: 3 }) })
    fc.assert(fc.property(fc.array(fc.oneof(message, fc.jsonValue({ maxDepth: 2 })), { maxLength: 30 }), fc.jsonValue({ maxDepth: 3 }), (messages, other) => {
      const text = JSON.stringify({ other, messages, tail: { messages: [1, 2, 3] } })
      const n = messages.length
      expect(scanJson(bytes(text), { maxJsonDepth: 100, maxMessages: n })._tag).toBe("Ok")
      if (n > 0) expect(scanJson(bytes(text), { maxJsonDepth: 100, maxMessages: n - 1 })._tag).toBe("TooManyMessages")
    }), { numRuns: 500 })
  })

  it("100,000 levels are found without recursion", () => {
    expect(scanJson(bytes(`{"format":${"[".repeat(100_000)}1${"]".repeat(100_000)}}`), { maxJsonDepth: 64, maxMessages: 10 })._tag).toBe("TooDeep")
  })
})
