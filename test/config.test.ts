import { describe, expect, it } from "@effect/vitest"
import { Effect, Either } from "effect"
import * as fs from "node:fs"
import { defaultConfigPath, hostUrlEnvName, loadConfigFile, parseConfig } from "../src/config/GatewayConfig.ts"
import { formatDurationMs, parseDurationMs } from "../src/config/Duration.ts"

const example = fs.readFileSync(defaultConfigPath, "utf8")

/** The config error message for `text`, or fails when it parses. */
const errorOf = (text: string, env: Record<string, string> = {}) =>
  Effect.runSync(parseConfig(text, "gateway.yaml", env).pipe(Effect.either, Effect.map((e) => {
    if (Either.isRight(e)) throw new Error("expected the config to be refused")
    return e.left.message
  })))

const parse = (text: string, env: Record<string, string> = {}) => Effect.runSync(parseConfig(text, "gateway.yaml", env))

/** The example with one substring replaced (asserting it was there). */
const exampleWith = (from: string, to: string) => {
  expect(example).toContain(from)
  return example.replace(from, to)
}

describe("the shipped example config", () => {
  it("parses into the runbook's topology with loopback URLs", () => {
    const config = Effect.runSync(loadConfigFile(defaultConfigPath, {}))
    // (A JS record lists the integer-like key "111" first; route order lives in the route arrays.)
    expect(Object.keys(config.hosts).sort()).toEqual(["111", "gcp-a", "gcp-b", "gpu-node"])
    for (const host of Object.values(config.hosts)) expect(new URL(host.url).hostname).toBe("127.0.0.1")
    expect(config.hosts["gcp-a"]).toEqual({ url: "http://127.0.0.1:11435", slots: 4, protected: true })
    expect(config.hosts["111"]!.protected).toBe(false)
    expect(config.breaker).toEqual({ consecutiveTimeouts: 2, cooldown: 30_000 })
    expect(config.policy).toEqual({ heavyModelMinParamsB: 14 })
    expect(config.legacy).toEqual({ projectId: "awoooi", lanes: { "gemma3:4b": "alert-fast", "qwen2.5-coder:7b": "code-review", "bge-m3": "embedding" } })
    expect(config.lanes["alert-fast"]!.route).toEqual([
      { host: "gcp-a", timeout: 45_000, when: "always" },
      { host: "gcp-b", timeout: 45_000, when: "always" },
      { host: "111", timeout: 60_000, when: "always" }
    ])
    expect(config.lanes["alert-fast"]!.reserved).toEqual({ "gcp-a": 2, "gcp-b": 2 })
    expect(config.lanes["code-review"]!.route[1]).toEqual({ host: "gcp-b", timeout: 90_000, when: "unavailable" })
    expect(config.lanes["deep-rca"]!.async).toBe(true)
    expect(config.lanes["code-review"]!.async).toBe(false)
  })

  it("never carries the runbook's private addresses", () => {
    expect(example).not.toMatch(/192\.168\./)
  })
})

describe("environment overrides", () => {
  const small = [
    "hosts:",
    '  gcp-a: { url: "http://127.0.0.1:11435", slots: 4, protected: true }',
    '  gcp-b: { url: "http://127.0.0.1:11436", slots: 4, protected: true }',
    '  "111": { url: "http://127.0.0.1:11434", slots: 2 }',
    "lanes:",
    '  alert-fast: { model: gemma3:4b, route: [ { host: gcp-a, timeout: "45s" }, { host: "111", timeout: "60s" } ] }'
  ].join("\n")

  it("AWOOOP_HOST_GCP_A_URL and AWOOOP_HOST_111_URL replace those hosts' URLs", () => {
    expect(hostUrlEnvName("gcp-a")).toBe("AWOOOP_HOST_GCP_A_URL")
    expect(hostUrlEnvName("111")).toBe("AWOOOP_HOST_111_URL")
    expect(hostUrlEnvName("gpu-node")).toBe("AWOOOP_HOST_GPU_NODE_URL")
    const config = parse(small, { AWOOOP_HOST_GCP_A_URL: "http://gcp-a.internal:11435", AWOOOP_HOST_111_URL: "http://host-111.internal:11434" })
    expect(config.hosts["gcp-a"]!.url).toBe("http://gcp-a.internal:11435")
    expect(config.hosts["111"]!.url).toBe("http://host-111.internal:11434")
    expect(config.hosts["gcp-b"]!.url).toBe("http://127.0.0.1:11436")
    expect(config.hosts["gcp-a"]!.slots).toBe(4) // only the URL is replaced
  })

  it("an override is validated like the file", () => {
    expect(errorOf(small, { AWOOOP_HOST_GCP_A_URL: "ftp://nope" })).toMatch(/at hosts\.gcp-a\.url: expected an http\(s\) URL/)
  })
})

describe("a bad file stops start-up with a message naming the field path", () => {
  it("a bad duration", () => {
    const message = errorOf(exampleWith(`{ host: gcp-a, timeout: "45s" }`, `{ host: gcp-a, timeout: "45 seconds" }`))
    expect(message).toContain("gateway.yaml: invalid gateway config")
    expect(message).toMatch(/at lanes\.alert-fast\.route\.0\.timeout: expected a duration like "500ms"/)
  })

  it("a route naming an unknown host", () => {
    expect(errorOf(exampleWith(`{ host: gpu-node, timeout: "600s" }`, `{ host: gpu-nod, timeout: "600s" }`)))
      .toMatch(/at lanes\.deep-rca\.route\.1\.host: unknown host "gpu-nod"/)
  })

  it("reservations larger than the host", () => {
    expect(errorOf(exampleWith(`reserved: { gcp-a: 2, gcp-b: 2 }`, `reserved: { gcp-a: 5, gcp-b: 2 }`)))
      .toMatch(/at hosts\.gcp-a\.slots: lanes reserve 5 slots but the host has 4/)
  })

  it("a misspelt key", () => {
    expect(errorOf(exampleWith(`keepWarm: [gcp-a, gcp-b]`, `keepwarm: [gcp-a, gcp-b]`))).toContain("lanes.alert-fast.keepwarm")
  })

  it("a wrong type, a missing field, a conditional first step, a legacy rule to no lane", () => {
    expect(errorOf(exampleWith(`slots: 4, protected: true }`, `slots: "four", protected: true }`))).toContain("at hosts.gcp-a.slots")
    expect(errorOf(exampleWith(`model: gemma3:4b\n`, `\n`))).toContain("at lanes.alert-fast.model")
    expect(errorOf(exampleWith(`- { host: "111", timeout: "120s" }`, `- { host: "111", timeout: "120s", when: unavailable }`)))
      .toContain("at lanes.code-review.route.0.when: the first step cannot be conditional")
    expect(errorOf(exampleWith(`"bge-m3": embedding`, `"bge-m3": embeddings`))).toContain("at legacy.lanes.bge-m3: unknown lane \"embeddings\"")
  })

  it("every problem is listed, not just the first", () => {
    const text = exampleWith(`{ host: gcp-a, timeout: "45s" }`, `{ host: gcp-a, timeout: "soon" }`)
      .replace(`gcp-b:    { url: "http://127.0.0.1:11436", slots: 4`, `gcp-b:    { url: "http://127.0.0.1:11436", slots: -4`)
    const message = errorOf(text)
    expect(message).toContain("at lanes.alert-fast.route.0.timeout")
    expect(message).toContain("at hosts.gcp-b.slots")
    // The union member `undefined` of an optional key is not reported as a problem of its own.
    expect(message).not.toContain("Expected undefined")
  })

  it("not YAML at all / no hosts", () => {
    expect(errorOf("hosts: [unclosed")).toContain("not valid YAML/JSON")
    expect(errorOf("lanes: {}")).toContain("at hosts")
  })

  it("JSON works as well as YAML", () => {
    const config = parse(JSON.stringify({
      hosts: { h: { url: "http://127.0.0.1:1", slots: 1 } },
      lanes: { l: { model: "m:1b", route: [{ host: "h", timeout: "500ms" }] } }
    }))
    expect(config.lanes.l!.route[0]!.timeout).toBe(500)
    expect(config.lanes.l!.queue).toEqual({ capacity: 256, maxWait: 10_000 })
    expect(config.server.pollInterval).toBe(5_000)
  })

  it("a missing file names the path", () => {
    const result = Effect.runSync(Effect.either(loadConfigFile("/nonexistent/gateway.yaml", {})))
    expect(Either.isLeft(result) && result.left.message).toContain("/nonexistent/gateway.yaml")
  })
})

describe("durations", () => {
  it("parse and format", () => {
    expect(parseDurationMs("500ms")).toBe(500)
    expect(parseDurationMs("45s")).toBe(45_000)
    expect(parseDurationMs("2m")).toBe(120_000)
    expect(parseDurationMs("1.5s")).toBe(1_500)
    expect(parseDurationMs("1h")).toBe(3_600_000)
    expect(parseDurationMs("45")).toBeUndefined()
    expect(parseDurationMs("-1s")).toBeUndefined()
    expect(formatDurationMs(45_000)).toBe("45s")
    expect(formatDurationMs(120_000)).toBe("2m")
    expect(formatDurationMs(250)).toBe("250ms")
  })

  it("zero is refused", () => {
    expect(errorOf(exampleWith(`cooldown: "30s"`, `cooldown: "0s"`))).toContain("at breaker.cooldown")
  })
})
