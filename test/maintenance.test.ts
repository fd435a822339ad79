/**
 * Maintenance windows: a protected host denies heavy models before, serves them during and denies
 * them again after an operator's window; opening and closing are journaled with the reason.
 *
 * - the host actor under TestClock: the window closes by itself at `until`, journaled then;
 * - the admin route end to end: bearer token (401), unknown host (404), bad body (400), and the
 *   heavy-model lane refused (403), served, refused again as the window passes in real time.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, TestClock } from "effect"
import { afterAll, beforeAll, expect, it as vit } from "vitest"
import { Journal } from "../src/journal/Journal.ts"
import * as Host from "../src/routing/Host.ts"
import { plan } from "../src/routing/Plan.ts"
import { OllamaUpstream } from "../src/upstream/OllamaUpstream.ts"
import { FakeOllamaScoped } from "./support/FakeOllama.ts"
import { TestDatabaseLive } from "./support/TestDatabase.ts"
import { newTraceId, startTestGateway, type TestGateway, typesOf } from "./support/TestGateway.ts"

const HEAVY = "qwen2.5:14b"
const TOKEN = "test-admin-token-5"

describe("host actor: maintenance window under TestClock", () => {
  const services = Layer.mergeAll(Journal.Default, OllamaUpstream.Default).pipe(Layer.provideMerge(TestDatabaseLive))

  const heavyPlan = (host: Host.HostActor) =>
    Effect.gen(function*() {
      return plan({
        lane: "heavy",
        model: HEAVY,
        route: [{ host: "gcp-a", timeoutMs: 1_000, when: "always" }],
        hosts: { "gcp-a": yield* host.view("heavy") },
        policy: { heavyModelMinParamsB: 14 },
        now: 0
      })
    })

  it.scoped("denied before, served during, denied after; the close at `until` is journaled by itself", () =>
    Effect.gen(function*() {
      const fake = yield* FakeOllamaScoped({ name: "gcp-a" })
      const journal = yield* Journal
      const host = yield* Host.make("gcp-a", { url: fake.url, slots: 2, protected: true }, {}, {
        journal,
        upstream: yield* OllamaUpstream,
        breaker: { consecutiveTimeouts: 2, cooldownMs: 30_000 },
        pollIntervalMs: 3_600_000,
        probeTimeoutMs: 5_000
      })
      yield* host.poll

      assert.deepStrictEqual((yield* heavyPlan(host)).skipped.map((s) => s.reason.kind), ["heavy-model-denied"])

      const now = yield* TestClock.currentTimeMillis
      yield* host.openMaintenance("upgrade the GPU driver", now + 60_000)
      assert.deepStrictEqual((yield* heavyPlan(host)).attempts.map((a) => a.host), ["gcp-a"])

      yield* TestClock.adjust("59999 millis")
      assert.isTrue((yield* host.maintenance).open)
      assert.deepStrictEqual((yield* heavyPlan(host)).attempts.map((a) => a.host), ["gcp-a"])

      yield* TestClock.adjust("1 millis")
      assert.isFalse((yield* host.maintenance).open)
      assert.deepStrictEqual((yield* heavyPlan(host)).skipped.map((s) => s.reason.kind), ["heavy-model-denied"])

      yield* journal.flush
      const events = (yield* journal.readStream("host-gcp-a")).filter((e) => e.type.startsWith("Maintenance"))
      assert.deepStrictEqual(events.map((e) => e.type), ["MaintenanceOpened", "MaintenanceClosed"])
      assert.deepInclude(events[0]!.data as object, { reason: "upgrade the GPU driver", until: now + 60_000 })
      assert.deepInclude(events[1]!.data as object, { expired: true, openReason: "upgrade the GPU driver" })
      // Journaled when the window ended (by the Clock), not when someone next looked.
      assert.strictEqual(events[1]!.occurredAt, now + 60_000)
    }).pipe(Effect.provide(services)))

  it.scoped("closing early is journaled with its reason, and the expired timer then closes nothing", () =>
    Effect.gen(function*() {
      const fake = yield* FakeOllamaScoped({ name: "gcp-a" })
      const journal = yield* Journal
      const host = yield* Host.make("gcp-a", { url: fake.url, slots: 2, protected: true }, {}, {
        journal,
        upstream: yield* OllamaUpstream,
        breaker: { consecutiveTimeouts: 2, cooldownMs: 30_000 },
        pollIntervalMs: 3_600_000,
        probeTimeoutMs: 5_000
      })
      const now = yield* TestClock.currentTimeMillis
      yield* host.openMaintenance("reindex", now + 60_000)
      yield* TestClock.adjust("10 seconds")
      assert.isTrue(yield* host.closeMaintenance("done early"))
      assert.isFalse(yield* host.closeMaintenance("again"))
      // A second window replaces nothing of the first: the first's timer must not close it.
      yield* host.openMaintenance("second", now + 120_000)
      yield* TestClock.adjust("60 seconds")
      assert.isTrue((yield* host.maintenance).open)
      yield* TestClock.adjust("50 seconds")
      assert.isFalse((yield* host.maintenance).open)

      yield* journal.flush
      const events = (yield* journal.readStream("host-gcp-a")).filter((e) => e.type.startsWith("Maintenance"))
      assert.deepStrictEqual(events.map((e) => [e.type, (e.data as { reason: string }).reason]), [
        ["MaintenanceOpened", "reindex"],
        ["MaintenanceClosed", "done early"],
        ["MaintenanceOpened", "second"],
        ["MaintenanceClosed", `the window ended at ${new Date(now + 120_000).toISOString()}`]
      ])
    }).pipe(Effect.provide(services)))
})

describe("POST /awooop/admin/hosts/:host/maintenance", () => {
  let gw: TestGateway
  const previousToken = process.env.AWOOOP_ADMIN_TOKEN
  beforeAll(async () => {
    process.env.AWOOOP_ADMIN_TOKEN = TOKEN
    gw = await startTestGateway({
      lanes: { heavy: { model: HEAVY, route: [{ host: "gcp-a", timeout: "2s" }] } }
    })
  })
  afterAll(async () => {
    await gw?.close()
    if (previousToken === undefined) delete process.env.AWOOOP_ADMIN_TOKEN
    else process.env.AWOOOP_ADMIN_TOKEN = previousToken
  })

  const admin = (host: string, body: unknown, token: string | null = TOKEN) =>
    fetch(`${gw.url}/awooop/admin/hosts/${host}/maintenance`, {
      method: "POST",
      headers: { "content-type": "application/json", ...(token === null ? {} : { authorization: `Bearer ${token}` }) },
      body: typeof body === "string" ? body : JSON.stringify(body)
    })

  const heavy = () =>
    gw.post("/api/generate", { model: HEAVY, prompt: "summarise the incident", stream: false }, { "x-awooop-lane": "heavy", "x-awooop-trace-id": newTraceId() })

  const inFuture = (ms: number) => new Date(Date.now() + ms).toISOString()

  vit("401 without the token or with a wrong one; 404 for an unknown host; 400 for a bad body", async () => {
    const open = { open: true, reason: "driver upgrade", until: inFuture(60_000) }
    const none = await admin("gcp-a", open, null)
    expect(none.status).toBe(401)
    expect(none.headers.get("www-authenticate")).toMatch(/^Bearer/)
    expect(Object.keys(await none.json() as object)).toEqual(["error"])
    expect((await admin("gcp-a", open, "wrong")).status).toBe(401)
    // The host's existence is not revealed without the token.
    expect((await admin("nope", open, null)).status).toBe(401)

    const unknown = await admin("nope", open)
    expect(unknown.status).toBe(404)
    expect(((await unknown.json()) as { error: string }).error).toContain("unknown host \"nope\"")

    for (const bad of [
      "{",
      { reason: "x", until: inFuture(1000) },
      { open: true, until: inFuture(60_000) },
      { open: true, reason: "x" },
      { open: true, reason: "x", until: "tomorrow" },
      { open: true, reason: "x", until: new Date(Date.now() - 1000).toISOString() },
      { open: true, reason: "x", until: inFuture(40 * 86_400_000) }
    ]) {
      const res = await admin("gcp-a", bad)
      expect(res.status, JSON.stringify(bad)).toBe(400)
    }
    // None of that opened anything.
    expect((await gw.streamEvents("host-gcp-a")).filter((e) => e.type === "MaintenanceOpened")).toHaveLength(0)
  })

  vit("a heavy model is denied on the protected host before, served during, and denied after the window", async () => {
    const before = await heavy()
    expect(before.status).toBe(403)
    expect(((await before.json()) as { error: string }).error).toContain("denied on gcp-a")

    const until = Date.now() + 1_500
    const opened = await admin("gcp-a", { open: true, reason: "load the 14B model for an RCA", until: new Date(until).toISOString() })
    expect(opened.status).toBe(200)
    expect(await opened.json()).toMatchObject({ host: "gcp-a", changed: true, maintenance: { open: true, reason: "load the 14B model for an RCA" } })
    const health = await (await fetch(`${gw.url}/awooop/health`)).json() as { hosts: Record<string, { maintenance: { open: boolean; until: string } }> }
    expect(health.hosts["gcp-a"]!.maintenance).toMatchObject({ open: true, until: new Date(until).toISOString() })

    const during = await heavy()
    expect(during.status).toBe(200)
    expect(during.headers.get("x-awooop-endpoint")).toBe("gcp-a")

    await new Promise((r) => setTimeout(r, Math.max(0, until - Date.now()) + 100))
    const after = await heavy()
    expect(after.status).toBe(403)

    const events = (await gw.streamEvents("host-gcp-a")).filter((e) => e.type.startsWith("Maintenance"))
    expect(typesOf(events)).toEqual(["MaintenanceOpened", "MaintenanceClosed"])
    expect(events[0]!.data).toMatchObject({ reason: "load the 14B model for an RCA", until })
    expect(events[1]!.data).toMatchObject({ expired: true, openReason: "load the 14B model for an RCA" })
  })

  vit("an operator closes a window early, with a reason", async () => {
    expect((await admin("gcp-a", { open: true, reason: "second window", until: inFuture(60_000) })).status).toBe(200)
    expect((await heavy()).status).toBe(200)
    const closed = await admin("gcp-a", { open: false, reason: "RCA done" })
    expect(closed.status).toBe(200)
    expect(await closed.json()).toMatchObject({ changed: true, maintenance: { open: false } })
    expect((await heavy()).status).toBe(403)
    const again = await admin("gcp-a", { open: false })
    expect(await again.json()).toMatchObject({ changed: false })
    const last = (await gw.streamEvents("host-gcp-a")).filter((e) => e.type === "MaintenanceClosed").at(-1)!
    expect(last.data).toMatchObject({ reason: "RCA done", expired: false, openReason: "second window" })
  })
})
