/**
 * Lane modes at runtime (routing/LaneMode.ts, http/LaneModeRoutes.ts): the runbook's per-lane
 * activation and rollback as one operator call, end to end — real gateways, real Postgres, real HTTP.
 *
 *   - alert-fast rolled back to shadow: every protocol (Ollama, OpenAI, Responses, Messages) answers
 *     202 with the decision, no host is called; LaneModeChanged is journaled on "lane-alert-fast";
 *     health shows the mode and where it comes from;
 *   - the gateway restarted on the same database keeps it; back to active runs requests again; the
 *     pin removed, the config's mode applies;
 *   - bad calls are refused with a clear `{"error"}`: 401, 404, 400;
 *   - an async lane in shadow refuses POST /awooop/runs (409);
 *   - two replicas of a cluster (each `node dist/main.js` with its own AWOOOP_RUNNER_PORT) on one
 *     database: a switch on one is seen by the other within 2 s, both ways.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { randomUUID } from "node:crypto"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type FakeOllama, startFakeOllama } from "./support/FakeOllama.ts"
import { type Child, exited, type ProxiedDatabase, spawnGateway, startProxiedDatabase, waitFor } from "./support/FaultKit.ts"
import { freePort } from "./support/FreePort.ts"
import { newTraceId, startTestDatabase, startTestGateway, type TestDatabaseHandle, type TestGateway } from "./support/TestGateway.ts"

const TOKEN = `admin-${randomUUID()}`
const previousToken = process.env.AWOOOP_ADMIN_TOKEN

const admin = (baseUrl: string, method: "PUT" | "DELETE", lane: string, body?: unknown, token: string | null = TOKEN) =>
  fetch(`${baseUrl}/awooop/admin/lanes/${lane}/mode`, {
    method,
    headers: { "content-type": "application/json", ...(token === null ? {} : { authorization: `Bearer ${token}` }) },
    ...(body === undefined ? {} : { body: typeof body === "string" ? body : JSON.stringify(body) })
  })

interface ModeAnswer {
  readonly lane: string
  readonly changed: boolean
  readonly mode: string
  readonly previous: string
  readonly configMode: string
  readonly modeSource: string
  readonly modeChange: { readonly reason: string; readonly by: string; readonly at: string } | null
}

interface LaneHealth {
  readonly mode: string
  readonly modeSource: string
  readonly modeChange: { readonly reason: string } | null
  readonly summary: string
}

const laneHealth = async (baseUrl: string, lane: string): Promise<LaneHealth | null> => {
  try {
    const h = (await (await fetch(`${baseUrl}/awooop/health`, { signal: AbortSignal.timeout(3_000) })).json()) as { lanes: Record<string, LaneHealth> }
    return h.lanes[lane] ?? null
  } catch {
    return null
  }
}

describe("lane modes switched at runtime, one gateway restarted", () => {
  let db: TestDatabaseHandle
  let gw: TestGateway

  // alert-fast with step timeouts a loaded machine does not run into (a failover would call a second host).
  const options = {
    lanes: {
      "alert-fast": {
        model: "gemma3:4b",
        reserved: { "gcp-a": 2, "gcp-b": 2 },
        route: [{ host: "gcp-a", timeout: "10s" }, { host: "gcp-b", timeout: "10s" }, { host: "111", timeout: "10s" }]
      }
    }
  }

  beforeAll(async () => {
    process.env.AWOOOP_ADMIN_TOKEN = TOKEN
    db = await startTestDatabase()
    gw = await startTestGateway({ database: db, ...options })
  }, 60_000)

  afterAll(async () => {
    await gw?.close()
    await db?.close()
    if (previousToken === undefined) delete process.env.AWOOOP_ADMIN_TOKEN
    else process.env.AWOOOP_ADMIN_TOKEN = previousToken
  })

  const inferencePosts = () => Object.values(gw.fakes).reduce((n, f) => n + f.requests.filter((r) => r.method === "POST").length, 0)
  const lane = { "x-awooop-lane": "alert-fast" }

  /** One request of each protocol on alert-fast: their statuses and bodies. */
  const everyProtocol = async () => {
    const calls: Array<[string, unknown]> = [
      ["/api/generate", { model: "gemma3:4b", prompt: "why is the alert firing?", stream: false }],
      ["/api/chat", { model: "gemma3:4b", messages: [{ role: "user", content: "hi" }], stream: true }],
      ["/v1/chat/completions", { model: "gemma3:4b", messages: [{ role: "user", content: "hi" }] }],
      ["/v1/responses", { model: "gemma3:4b", input: "hi" }],
      ["/v1/messages", { model: "gemma3:4b", max_tokens: 64, messages: [{ role: "user", content: "hi" }] }]
    ]
    return Promise.all(calls.map(async ([path, body]) => {
      const res = await gw.post(path, body, { ...lane, "x-awooop-trace-id": newTraceId() })
      return { path, status: res.status, body: (await res.json().catch(() => null)) as Record<string, unknown> | null }
    }))
  }

  it("rolled back to shadow: every protocol answers 202 with the decision, no host is called; journaled; on health", async () => {
    const before = inferencePosts()
    const res = await admin(gw.url, "PUT", "alert-fast", { mode: "shadow", reason: "rollback: p95 over budget" })
    expect(res.status).toBe(200)
    expect(await res.json()).toMatchObject({
      lane: "alert-fast", changed: true, mode: "shadow", previous: "active", configMode: "active", modeSource: "operator",
      modeChange: { reason: "rollback: p95 over budget", by: "admin API" }
    })

    for (const answer of await everyProtocol()) {
      expect(answer.status, `${answer.path}: ${JSON.stringify(answer.body)}`).toBe(202)
      expect(answer.body, answer.path).toMatchObject({ shadow: true, via: "lane", lane: "alert-fast" })
    }
    expect(inferencePosts()).toBe(before)

    // Already in shadow: nothing changes, nothing more is journaled.
    const again = (await (await admin(gw.url, "PUT", "alert-fast", { mode: "shadow", reason: "twice" })).json()) as ModeAnswer
    expect(again).toMatchObject({ changed: false, mode: "shadow", modeChange: { reason: "rollback: p95 over budget" } })

    const events = await gw.streamEvents("lane-alert-fast")
    expect(events.map((e) => [e.type, e.data])).toEqual([
      ["LaneModeChanged", { lane: "alert-fast", mode: "shadow", previous: "active", source: "operator", reason: "rollback: p95 over budget", by: "admin API" }]
    ])
    const health = await laneHealth(gw.url, "alert-fast")
    expect(health).toMatchObject({ mode: "shadow", modeSource: "operator", modeChange: { reason: "rollback: p95 over budget" } })
    expect(health?.summary).toContain("shadow mode")
    expect(await laneHealth(gw.url, "code-review")).toMatchObject({ mode: "active", modeSource: "config", modeChange: null })
    // The console's board marks the operator's mode, with the reason on hover.
    const board = await (await fetch(`${gw.url}/console/board/fragment`)).text()
    expect(board).toMatch(/<tr data-lane="alert-fast">[\s\S]*?shadow <span class="tag" title="set by the operator \(admin API, [^)]*\): rollback: p95 over budget">operator<\/span>/)
  })

  it("a restart keeps the mode; back to active runs requests again; removing the pin returns to the config's mode", async () => {
    await gw.close()
    gw = await startTestGateway({ database: db, ...options })
    expect(await laneHealth(gw.url, "alert-fast")).toMatchObject({ mode: "shadow", modeSource: "operator" })
    const shadowed = await gw.post("/api/generate", { model: "gemma3:4b", prompt: "after the restart", stream: false }, lane)
    expect(shadowed.status).toBe(202)
    expect(inferencePosts()).toBe(0)

    const activated = (await (await admin(gw.url, "PUT", "alert-fast", { mode: "active", reason: "stage 3 again" })).json()) as ModeAnswer
    expect(activated).toMatchObject({ changed: true, mode: "active", previous: "shadow", modeSource: "operator" })
    for (const answer of await everyProtocol()) expect(answer.status, `${answer.path}: ${JSON.stringify(answer.body)}`).toBe(200)
    // Each ran on a host (one call each, unless a loaded machine made one fail over).
    expect(inferencePosts()).toBeGreaterThanOrEqual(5)

    const reset = (await (await admin(gw.url, "DELETE", "alert-fast")).json()) as ModeAnswer
    expect(reset).toMatchObject({ changed: true, mode: "active", previous: "active", modeSource: "config", modeChange: null })
    const resetAgain = (await (await admin(gw.url, "DELETE", "alert-fast", { reason: "again" })).json()) as ModeAnswer
    expect(resetAgain).toMatchObject({ changed: false, mode: "active", modeSource: "config" })
    expect(await gw.query("SELECT lane FROM lane_modes")).toEqual([])

    // The restarted gateway continued the lane's stream: one position each, in order.
    const events = await gw.streamEvents("lane-alert-fast")
    expect(events.map((e) => [e.streamPosition, (e.data as { mode: string }).mode, (e.data as { source: string }).source])).toEqual([
      [0, "shadow", "operator"],
      [1, "active", "operator"],
      [2, "active", "config"]
    ])
    expect((events[2]!.data as { reason: string }).reason).toBe("back to the config's mode (active)")
  }, 60_000)

  it("refuses bad calls with a clear error", async () => {
    const error = async (res: Response) => ({ status: res.status, error: ((await res.json()) as { error: string }).error })
    expect(await error(await admin(gw.url, "PUT", "alert-fast", { mode: "shadow", reason: "x" }, null))).toMatchObject({ status: 401, error: expect.stringContaining("bearer token") })
    expect(await error(await admin(gw.url, "PUT", "alert-fast", { mode: "shadow", reason: "x" }, "wrong"))).toMatchObject({ status: 401, error: expect.stringContaining("wrong bearer token") })
    expect(await error(await admin(gw.url, "PUT", "no-such-lane", { mode: "shadow", reason: "x" }))).toMatchObject({
      status: 404,
      error: expect.stringMatching(/^unknown lane "no-such-lane" \(lanes: .*alert-fast/)
    })
    expect(await error(await admin(gw.url, "DELETE", "no-such-lane"))).toMatchObject({ status: 404 })
    expect(await error(await admin(gw.url, "PUT", "alert-fast", { mode: "paused", reason: "x" }))).toEqual({ status: 400, error: `mode must be "active" or "shadow", got "paused"` })
    expect(await error(await admin(gw.url, "PUT", "alert-fast", { reason: "x" }))).toMatchObject({ status: 400, error: expect.stringContaining("mode is required") })
    expect(await error(await admin(gw.url, "PUT", "alert-fast", { mode: "shadow" }))).toEqual({ status: 400, error: "reason is required when switching lane alert-fast to shadow" })
    expect(await error(await admin(gw.url, "PUT", "alert-fast", "{not json"))).toMatchObject({ status: 400 })
    expect(await error(await admin(gw.url, "PUT", "alert-fast", { mode: "shadow", reason: 7 }))).toMatchObject({ status: 400, error: expect.stringContaining("reason") })
    // Nothing of it changed the lane.
    expect(await laneHealth(gw.url, "alert-fast")).toMatchObject({ mode: "active", modeSource: "config" })
  })

  it("an async lane in shadow answers inference requests with decisions and refuses POST /awooop/runs (409)", async () => {
    expect((await admin(gw.url, "PUT", "deep-rca", { mode: "shadow", reason: "deep RCA back on the legacy path" })).status).toBe(200)
    const run = await gw.post("/awooop/runs", { model: "qwen2.5:14b", prompt: "x" }, { "x-awooop-lane": "deep-rca" })
    expect(run.status).toBe(409)
    expect(((await run.json()) as { error: string }).error).toContain("deep RCA back on the legacy path")
    const decided = await gw.post("/api/generate", { model: "qwen2.5:14b", prompt: "x" }, { "x-awooop-lane": "deep-rca" })
    expect(decided.status).toBe(202)
    expect(await decided.json()).toMatchObject({ shadow: true, via: "lane" })
    // The reason may come in the query string too (a DELETE without a body).
    const reset = await fetch(`${gw.url}/awooop/admin/lanes/deep-rca/mode?reason=${encodeURIComponent("RCA back on the gateway")}`, {
      method: "DELETE",
      headers: { authorization: `Bearer ${TOKEN}` }
    })
    expect(reset.status).toBe(200)
    const events = await gw.streamEvents("lane-deep-rca")
    expect(events.map((e) => (e.data as { reason: string }).reason)).toEqual(["deep RCA back on the legacy path", "RCA back on the gateway"])
    expect((await gw.post("/awooop/runs", { model: "qwen2.5:14b", prompt: "x" }, { "x-awooop-lane": "deep-rca" })).status).toBe(202)
  })
})

describe("lane modes on two replicas of a cluster", () => {
  let db: ProxiedDatabase
  let fake: FakeOllama
  let dir: string
  const replicas: Array<Child> = []

  beforeAll(async () => {
    db = await startProxiedDatabase({ gatewayPool: false })
    fake = await startFakeOllama({ name: "gpu-1" })
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "awooop-lane-mode-"))
    fs.writeFileSync(path.join(dir, "gateway.yaml"), `
hosts:
  gpu-1: { url: "${fake.url}", slots: 4 }
legacy: { projectId: awoooi, lanes: {} }
lanes:
  chat:
    model: gemma3:4b
    route: [ { host: gpu-1, timeout: "30s" } ]
server: { pollInterval: "3s", probeTimeout: "3s", drainTimeout: "1s" }
`)
    const start = async (i: number) =>
      spawnGateway({
        DATABASE_URL: db.directUrl,
        AWOOOP_CONFIG: path.join(dir, "gateway.yaml"),
        AWOOOP_SPILL_DIR: path.join(dir, `spill-${i}`),
        AWOOOP_ADMIN_TOKEN: TOKEN,
        AWOOOP_RUNNER_HOST: "127.0.0.1",
        AWOOOP_RUNNER_PORT: String(await freePort()),
        // A host entity grants nothing for one lease period after it starts on its owner (leases are
        // renewed to it first): the default 5 s held this test's first request ~7 s; lane modes do
        // not depend on lease timings.
        AWOOOP_CLUSTER_SLOT_LEASE: "1 second"
      }, 120_000)
    replicas.push(...await Promise.all([0, 1].map(start)))
  }, 180_000)

  afterAll(async () => {
    for (const r of replicas) r.process.kill("SIGKILL")
    await Promise.all(replicas.map((r) => exited(r.process)))
    await fake?.stop()
    await db?.close()
    if (dir !== undefined) fs.rmSync(dir, { recursive: true, force: true })
  })

  const chat = (baseUrl: string) =>
    fetch(`${baseUrl}/api/chat`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-awooop-lane": "chat" },
      body: JSON.stringify({ model: "gemma3:4b", messages: [{ role: "user", content: "hi" }], stream: false })
    }).then(async (r) => { await r.arrayBuffer(); return r.status })

  /** Milliseconds until `check` holds on the replica, polled every 50 ms; fails after 2 s. */
  const within2s = async (what: string, check: () => Promise<boolean>) => {
    const started = Date.now()
    await waitFor(what, check, 2_000, 50)
    return Date.now() - started
  }

  it("a switch on one replica is seen by the other within 2 s, both ways; journaled once each", async () => {
    const [a, b] = replicas as [Child, Child]
    expect(await chat(b.url)).toBe(200)

    expect((await admin(a.url, "PUT", "chat", { mode: "shadow", reason: "cluster rollback" })).status).toBe(200)
    const seen = await within2s("replica b in shadow", async () => (await laneHealth(b.url, "chat"))?.mode === "shadow")
    const posts = fake.requests.filter((r) => r.method === "POST").length
    expect(await chat(b.url)).toBe(202)
    expect(await chat(a.url)).toBe(202)
    expect(fake.requests.filter((r) => r.method === "POST").length).toBe(posts)

    expect((await admin(b.url, "DELETE", "chat", { reason: "cluster activation" })).status).toBe(200)
    const back = await within2s("replica a active", async () => (await laneHealth(a.url, "chat"))?.mode === "active")
    expect(await chat(a.url)).toBe(200)
    console.log(`lane mode seen by the other replica after ${seen} ms (shadow) and ${back} ms (active)`)

    await waitFor("both changes journaled", async () =>
      (await db.query(`SELECT 1 FROM step_journal WHERE stream_id = 'lane-chat'`)).length >= 2, 5_000)
    const all = await db.query<{ stream_position: string; type: string; data: { mode: string; source: string } }>(
      `SELECT stream_position, type, data FROM step_journal WHERE stream_id = 'lane-chat' ORDER BY stream_position`)
    expect(all.map((r) => [Number(r.stream_position), r.type, r.data.mode, r.data.source])).toEqual([
      [0, "LaneModeChanged", "shadow", "operator"],
      [1, "LaneModeChanged", "active", "config"]
    ])
  }, 60_000)
})

describe("a lane mode switch while Postgres is away", () => {
  let db: ProxiedDatabase
  let gw: TestGateway

  beforeAll(async () => {
    process.env.AWOOOP_ADMIN_TOKEN = TOKEN
    db = await startProxiedDatabase()
    gw = await startTestGateway({ database: db.handle })
  }, 60_000)

  afterAll(async () => {
    await gw?.close()
    await db?.close()
    if (previousToken === undefined) delete process.env.AWOOOP_ADMIN_TOKEN
    else process.env.AWOOOP_ADMIN_TOKEN = previousToken
  })

  it("is refused with 503 and changes nothing; once Postgres is back it goes through", async () => {
    await db.proxy.stop()
    const res = await admin(gw.url, "PUT", "alert-fast", { mode: "shadow", reason: "rollback while Postgres is down" })
    expect(res.status).toBe(503)
    expect(((await res.json()) as { error: string }).error).toMatch(/^the lane mode was not stored: Postgres did not answer .*; the lane's mode is unchanged, try again$/s)
    expect(await laneHealth(gw.url, "alert-fast")).toMatchObject({ mode: "active", modeSource: "config" })
    expect((await gw.post("/api/generate", { model: "gemma3:4b", prompt: "still active", stream: false }, { "x-awooop-lane": "alert-fast" })).status).toBe(200)

    await db.proxy.start()
    await waitFor("the switch goes through once Postgres is back", async () =>
      (await admin(gw.url, "PUT", "alert-fast", { mode: "shadow", reason: "rollback, Postgres back" })).status === 200, 20_000, 250)
    expect(await laneHealth(gw.url, "alert-fast")).toMatchObject({ mode: "shadow", modeSource: "operator" })
  }, 60_000)
})
