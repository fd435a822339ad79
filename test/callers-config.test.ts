/**
 * The `callers:` / `anonymous:` config contract (src/config/Callers.ts): keys from the environment
 * become digests (the key itself is never kept), several keys per caller for a rotation, and every
 * mistake stops the gateway at start-up naming the field.
 */
import { Effect, Either } from "effect"
import { createHash } from "node:crypto"
import { describe, expect, it } from "vitest"
import { defaultConfigPath, parseConfig } from "../src/config/GatewayConfig.ts"
import * as fs from "node:fs"

const example = fs.readFileSync(defaultConfigPath, "utf8")
const sha = (s: string) => createHash("sha256").update(s).digest("hex")
const withCallers = (yaml: string) => `${example}\n${yaml}\n`
const parse = (text: string, env: Record<string, string> = {}) => Effect.runSync(Effect.either(parseConfig(text, "gateway.yaml", env)))

describe("callers config", () => {
  it("keyEnv keys become digests beside keySha256 ones; anonymous defaults to no paid fallback", () => {
    const r = parse(withCallers(`
callers:
  alerts-service:
    keyEnv: [AWOOOP_KEY_ALERTS, AWOOOP_KEY_ALERTS_NEXT]
    keySha256: "${sha("third")}"
    project: awoooi
    lanes: [alert-fast, paid-emergency]
    budget: { hardKillUsd: 2 }
anonymous: { project: awoooi, lanes: [alert-fast] }`), { AWOOOP_KEY_ALERTS: "k1", AWOOOP_KEY_ALERTS_NEXT: "k2" })
    if (Either.isLeft(r)) throw new Error(r.left.message)
    const caller = r.right.callers!["alerts-service"]!
    expect([...caller.keySha256].sort()).toEqual([sha("k1"), sha("k2"), sha("third")].sort())
    expect(caller.budget).toEqual({ hardKillUsd: 2, period: "day" })
    expect(caller.paidFallback).toBe(true)
    expect(r.right.anonymous).toEqual({ project: "awoooi", lanes: ["alert-fast"], paidFallback: false })
    expect(JSON.stringify(r.right)).not.toContain("k1")
  })

  it("refuses, naming each: an unset keyEnv, a bad digest", () => {
    const r = parse(withCallers(`
callers:
  a: { keyEnv: AWOOOP_KEY_MISSING, project: p, lanes: [alert-fast] }
  b: { keySha256: "not-hex", project: p, lanes: [alert-fast] }`))
    const message = Either.isLeft(r) ? r.left.message : ""
    expect(message).toContain("at callers.a.keySha256.0: keyEnv AWOOOP_KEY_MISSING: the environment variable is not set or empty")
    expect(message).toContain("at callers.b.keySha256.0: expected the key's sha256 as 64 lowercase hex digits")
    expect(message.split("\n")).toHaveLength(3)
  })

  it("refuses, naming each: an unknown lane, a shared key, a caller budget without a global one", () => {
    const noBudget = example.replace(/^budget:.*$/m, "").replace(/ *paidFallback: \[gemini, claude\].*\n/, "").replace(/ *paid-emergency:\n *paid: \[gemini, claude\].*\n/, "")
    const r = parse(`${noBudget}
callers:
  b: { keySha256: "${sha("b")}", project: p, lanes: [nope] }
  c: { keySha256: "${sha("same")}", project: p, lanes: [alert-fast], budget: { hardKillUsd: 1 } }
  d: { keySha256: "${sha("same")}", project: p, lanes: [alert-fast] }
anonymous: { project: p, lanes: [missing-lane] }`)
    const message = Either.isLeft(r) ? r.left.message : ""
    expect(message).toContain(`at callers.b.lanes.0: unknown lane "nope"`)
    expect(message).toContain("at callers.d.keySha256: the same key is also caller c's")
    expect(message).toContain("at callers.c.budget: a caller's budget lies inside the global one")
    expect(message).toContain(`at anonymous.lanes.0: unknown lane "missing-lane"`)
  })

  it("a caller without any key is refused", () => {
    const r = parse(withCallers(`callers:\n  a: { project: p, lanes: [alert-fast] }`))
    expect(Either.isLeft(r) && r.left.message).toContain("at callers.a: a caller needs a key: keyEnv (an environment variable) or keySha256")
  })
})
