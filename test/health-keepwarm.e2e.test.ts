/**
 * Stage 1 (health and residency view) and keep-warm, end to end: the real gateway, real journal on
 * PostgreSQL, fake Ollama hosts on loopback that we stop, start and evict models on.
 */
import { Effect, Option } from "effect"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type { StoredEvent } from "../src/journal/Journal.ts"
import { Gateway } from "../src/routing/Gateway.ts"
import type { Permit } from "../src/routing/Slots.ts"
import {
  defaultLanes,
  startTestDatabase,
  startTestGateway,
  type TestDatabaseHandle,
  type TestGateway,
  type TestGatewayOptions,
  typesOf
} from "./support/TestGateway.ts"

/** The runbook's alert-fast lane, keeping gemma3:4b warm on gcp-a and gcp-b. */
const warmOptions: TestGatewayOptions = {
  lanes: { "alert-fast": { ...defaultLanes["alert-fast"], keepWarm: ["gcp-a", "gcp-b"] } }
}

let db: TestDatabaseHandle
beforeAll(async () => {
  db = await startTestDatabase()
})
afterAll(() => db?.close())

const until = async <T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 5_000): Promise<T> => {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await probe()
    if (value !== undefined && value !== false) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

interface HealthBody {
  readonly summary: ReadonlyArray<string>
  readonly hosts: Record<string, {
    status: string
    lastLatencyMs: number | null
    breaker: { status: string }
    slots: { total: number; inUse: number; reserved: Record<string, { total: number; inUse: number }> }
    resident: Array<{ name: string }> | null
    installed: Array<{ name: string }> | null
    maintenance: { open: boolean }
  }>
  readonly lanes: Record<string, { safe: boolean; summary: string; mode: string; async: boolean }>
}

const health = async (gw: TestGateway): Promise<HealthBody> => {
  const res = await fetch(`${gw.url}/awooop/health`)
  expect(res.status).toBe(200)
  return (await res.json()) as HealthBody
}

const loads = (gw: TestGateway, host: string) =>
  gw.fakes[host]!.requests.filter((r) => r.path === "/api/generate" && typeof (r.body as { prompt?: unknown }).prompt !== "string")

/** A host that answers its polls until it goes mute: then it accepts connections and never answers. */
const startMuteableHost = async () => {
  let mute = false
  const server = http.createServer((req, res) => {
    if (mute) return
    const body = req.url === "/api/version" ? { version: "0.12.0" } : { models: [] }
    res.writeHead(200, { "content-type": "application/json" })
    res.end(JSON.stringify(body))
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    setMute: (m: boolean) => {
      mute = m
    },
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections()
      server.close(() => resolve())
    })
  }
}

describe("GET /awooop/health", () => {
  let gw: TestGateway
  let muteable: Awaited<ReturnType<typeof startMuteableHost>>
  beforeAll(async () => {
    muteable = await startMuteableHost()
    gw = await startTestGateway({ database: db, ...warmOptions, hosts: { quiet: { slots: 1, url: muteable.url } } })
  })
  afterAll(async () => {
    await gw?.close()
    await muteable?.close()
  })

  it("per host: up, latency, breaker, slots, resident and installed models, maintenance; per lane: safe and why", async () => {
    // Keep-warm loads gemma3:4b on gcp-a and gcp-b at start. The fake lists the model as resident
    // before its answer reaches the gateway, which frees the load's slot then: wait for both.
    const h = await until("alert-fast safe on both hosts, the loads' slots free again", async () => {
      const body = await health(gw)
      const atRest = Object.values(body.hosts).every((host) => host.slots.inUse === 0)
      return atRest && body.lanes["alert-fast"]!.summary === "alert-fast: safe — gemma3:4b resident on gcp-a and gcp-b" ? body : undefined
    })
    const a = h.hosts["gcp-a"]!
    expect(a.status).toBe("up")
    expect(a.lastLatencyMs).toEqual(expect.any(Number))
    expect(a.breaker.status).toBe("closed")
    expect(a.slots).toMatchObject({ total: 4, inUse: 0, reserved: { "alert-fast": { total: 2, inUse: 0 } } })
    expect(a.resident!.map((m) => m.name)).toContain("gemma3:4b")
    expect(a.installed!.map((m) => m.name)).toEqual(expect.arrayContaining(["gemma3:4b", "qwen2.5:14b"]))
    expect(a.maintenance.open).toBe(false)
    expect(h.lanes["alert-fast"]).toMatchObject({ safe: true, mode: "active", async: false })
    expect(h.lanes["deep-rca"]).toMatchObject({ safe: true, async: true })
    expect(h.summary).toContain("alert-fast: safe — gemma3:4b resident on gcp-a and gcp-b")
    expect(h.lanes["code-review"]!.summary).toMatch(/^code-review: safe — qwen2\.5-coder:7b installed on 111 \(not resident/)
  })

  it("a host that stops answering is down within two poll intervals, and back up when it answers again; lane safety follows", async () => {
    const pollMs = gw.config.server.pollInterval
    const gcpA = gw.fakes["gcp-a"]!
    const gcpB = gw.fakes["gcp-b"]!
    const host111 = gw.fakes["111"]!

    let stoppedAt = Date.now()
    await gcpA.stop()
    stoppedAt = Date.now()
    const downA = await until("gcp-a down", async () => {
      const body = await health(gw)
      return body.hosts["gcp-a"]!.status === "down" ? body : undefined
    })
    const downAfterMs = Date.now() - stoppedAt
    // Two intervals, with the slack of the mute test below (timers and this test's own polling on a
    // loaded machine: 1,122 ms once for the way back up, beside Chromium's start); three fail.
    expect(downAfterMs).toBeLessThan(2 * pollMs + 250)
    expect(downA.lanes["alert-fast"]!.summary).toBe("alert-fast: safe — gemma3:4b resident on gcp-b; gcp-a down")

    await gcpB.stop()
    await host111.stop()
    const allDown = await until("alert-fast unsafe", async () => {
      const body = await health(gw)
      return body.lanes["alert-fast"]!.safe === false && body.hosts["111"]!.status === "down" ? body : undefined
    })
    expect(allDown.lanes["alert-fast"]!.summary).toBe("alert-fast: unsafe — gcp-a down, gcp-b down, 111 down")
    expect(allDown.lanes["code-review"]!.summary).toBe("code-review: unsafe — 111 down, gcp-b down")

    const startedAt = Date.now()
    await Promise.all([gcpA.start(), gcpB.start(), host111.start()])
    const back = await until("all up again", async () => {
      const body = await health(gw)
      return ["gcp-a", "gcp-b", "111"].every((h) => body.hosts[h]!.status === "up") ? body : undefined
    })
    expect(Date.now() - startedAt).toBeLessThan(2 * pollMs + 250)
    expect(back.lanes["alert-fast"]!.summary).toBe("alert-fast: safe — gemma3:4b resident on gcp-a and gcp-b")
    expect(back.lanes["code-review"]!.safe).toBe(true)

    // The host stream says the same.
    const types = typesOf(await gw.streamEvents("host-gcp-a"))
    expect(types.lastIndexOf("HostDown")).toBeGreaterThan(-1)
    expect(types.lastIndexOf("HostUp")).toBeGreaterThan(types.lastIndexOf("HostDown"))
    console.log(`[measured] host marked down ${downAfterMs} ms after it stopped (poll interval ${pollMs} ms)`)
  })

  it("a host that accepts connections but stops answering is down within two poll intervals too", async () => {
    const pollMs = gw.config.server.pollInterval
    await until("quiet up", async () => (await health(gw)).hosts.quiet!.status === "up")
    muteable.setMute(true)
    const mutedAt = Date.now()
    const down = await until("quiet down", async () => {
      const body = await health(gw)
      return body.hosts.quiet!.status === "down" ? body : undefined
    })
    const downAfterMs = Date.now() - mutedAt
    // The design bound is exactly two intervals: the wait for the next poll (<= 1) plus a probe and
    // its confirmation (<= 1/2 each). The slack covers timers and this test's own HTTP polling on a
    // loaded machine; a design that waited another interval before confirming (3 intervals) fails.
    expect(downAfterMs).toBeLessThan(2 * pollMs + 250)
    expect((down.hosts.quiet as unknown as { lastError: string }).lastError).toMatch(/timeout|no answer|within/i)
    muteable.setMute(false)
    await until("quiet up again", async () => (await health(gw)).hosts.quiet!.status === "up")
    console.log(`[measured] silent host marked down ${downAfterMs} ms after it went mute (poll interval ${pollMs} ms)`)
  })
})

describe("keep-warm", () => {
  let gw: TestGateway
  beforeAll(async () => {
    gw = await startTestGateway({ database: db, ...warmOptions })
  })
  afterAll(() => gw?.close())

  const hostEvents = async (host: string, type: string): Promise<Array<StoredEvent>> =>
    (await gw.streamEvents(`host-${host}`)).filter((e) => e.type === type)

  it("loads the lane's model on its keepWarm hosts at start, with keep_alive", async () => {
    for (const host of ["gcp-a", "gcp-b"]) {
      const loaded = await until(`initial load on ${host}`, async () => (await hostEvents(host, "KeepWarmLoaded"))[0])
      expect(loaded.data).toMatchObject({ lane: "alert-fast", model: "gemma3:4b", reason: "initial", keepAliveSeconds: 600 })
    }
    expect(gw.fakes["gcp-a"]!.requests.some((r) =>
      r.path === "/api/generate" && (r.body as Record<string, unknown>).model === "gemma3:4b" &&
      (r.body as Record<string, unknown>).keep_alive === 600 && (r.body as Record<string, unknown>).prompt === undefined
    )).toBe(true)
    // Not a keepWarm host of any lane: nothing loaded there.
    expect(loads(gw, "111")).toHaveLength(0)
  })

  it("an eviction seen by the poller is journaled (with what replaced it) and the model is loaded again", async () => {
    const gcpA = gw.fakes["gcp-a"]!
    await until("gemma3:4b resident on gcp-a", async () => (await health(gw)).hosts["gcp-a"]!.resident?.some((m) => m.name === "gemma3:4b"))
    gcpA.reset()
    // A 14B model pushed gemma out.
    gcpA.setResident(["qwen2.5:14b"])
    const evicted = await until("ModelEvicted", async () => (await hostEvents("gcp-a", "ModelEvicted"))[0])
    expect(evicted.data).toMatchObject({ host: "gcp-a", lane: "alert-fast", model: "gemma3:4b", replacedBy: ["qwen2.5:14b"] })
    const reloaded = await until("reload", async () => (await hostEvents("gcp-a", "KeepWarmLoaded")).find((e) => (e.data as { reason: string }).reason === "evicted"))
    expect(reloaded.globalPosition).toBeGreaterThan(evicted.globalPosition)
    expect(loads(gw, "gcp-a").map((r) => (r.body as { model: string }).model)).toEqual(["gemma3:4b"])
    await until("resident again", async () => (await health(gw)).hosts["gcp-a"]!.resident?.some((m) => m.name === "gemma3:4b"))

    // Nothing visible replaced it this time.
    gcpA.reset()
    gcpA.setResident([])
    const second = await until("second eviction", async () => (await hostEvents("gcp-a", "ModelEvicted"))[1])
    expect(second.data).toMatchObject({ model: "gemma3:4b", replacedBy: [] })
    await until("reloaded again", async () => loads(gw, "gcp-a").length === 1)
  })

  it("a load takes the lane's own reserved slot: busy shared slots do not hold it up, and it never waits for a slot", async () => {
    const gcpA = gw.fakes["gcp-a"]!
    const take = (lane: string) =>
      gw.run(Effect.flatMap(Gateway, (g) => g.hosts.get("gcp-a")!.slots.tryAcquire(lane))).then(Option.getOrThrow)
    const release = (permits: Array<Permit>) => gw.run(Effect.forEach(permits, (p) => p.release, { discard: true }))

    // Other lanes' traffic holds every shared slot of gcp-a.
    const shared = [await take("code-review"), await take("code-review")]
    expect(shared.map((p) => p.pool)).toEqual(["shared", "shared"])
    gcpA.reset()
    gcpA.setResident([])
    await until("reloaded through the reserved slot", async () => loads(gw, "gcp-a").length === 1)
    // The fake has the load; its reserved slot is free again once the gateway has the answer.
    await until("the load's slot free again", async () => (await health(gw)).hosts["gcp-a"]!.slots.reserved["alert-fast"]!.inUse === 0)

    // Now the lane's own reserved slots are busy too: keep-warm does not queue, it sends nothing…
    const reserved = [await take("alert-fast"), await take("alert-fast")]
    expect(reserved.map((p) => p.pool)).toEqual(["reserved", "reserved"])
    await until("resident", async () => (await health(gw)).hosts["gcp-a"]!.resident?.some((m) => m.name === "gemma3:4b"))
    gcpA.reset()
    gcpA.setResident([])
    // The poller's view, which keep-warm acts on (the journal's eviction events are the test above's):
    // counting them here assumed the poller had seen the previous test's reload before this test
    // evicted the model again, and waited 15 s in vain when it had not.
    await until("eviction seen by the poller", async () =>
      !(await health(gw)).hosts["gcp-a"]!.resident?.some((m) => m.name === "gemma3:4b"), 15_000)
    await new Promise((r) => setTimeout(r, 3 * gw.config.server.pollInterval))
    expect(loads(gw, "gcp-a")).toHaveLength(0)

    // …and loads once a reserved slot is free again.
    await release(reserved)
    await until("loaded after the slot freed", async () => loads(gw, "gcp-a").length === 1, 3_000)
    await release(shared)
  })
})
