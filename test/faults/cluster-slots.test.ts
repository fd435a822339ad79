/**
 * A host's slots and breaker across three replicas on one Postgres (issue 13; `npm run test:faults`):
 * each replica is dist/main.js with its own AWOOOP_RUNNER_PORT; the hosts' entities
 * (src/cluster/HostEntity.ts) count the slots and keep the breakers for all of them.
 *
 *   slots    round-robin load on two lanes over the replicas: the fake host never has more requests
 *            in flight than its slots, and the lane without a reservation never more than the shared
 *            pool — also while the replica whose runner owns the host's entity is SIGKILLed (the new
 *            owner rebuilds from renewals and grants nothing beyond them), and after it comes back.
 *   breaker  two timeouts on two different replicas open the breaker on every replica; while it is
 *            open nothing reaches the host; after the cooldown, three replicas asking at once send
 *            exactly one probe.
 *
 * Also printed: the c=1 latency through the replica that owns the host's entity and through one
 * that does not (the difference is a grant's remote round trip), and the grant gap after the SIGKILL.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type FakeOllama, startFakeOllama } from "../support/FakeOllama.ts"
import { auditAllRuns, type Child, exited, type ProxiedDatabase, spawnGateway, startProxiedDatabase, waitFor } from "../support/FaultKit.ts"
import { freePort } from "../support/FreePort.ts"

const ALERT_MODEL = "gemma3:4b"
const BULK_MODEL = "qwen2.5-coder:7b"
const SLOTS = 3
const RESERVED = 1

interface Health {
  readonly hosts: Record<string, { readonly breaker: { readonly status: string } }>
  readonly cluster?: { readonly runner: string; readonly runners: ReadonlyArray<unknown>; readonly hosts?: Record<string, string | null> }
}

const healthOf = async (url: string): Promise<Health | null> => {
  try {
    return (await (await fetch(`${url}/awooop/health`, { signal: AbortSignal.timeout(2_000) })).json()) as Health
  } catch {
    return null
  }
}

const chat = async (url: string, lane: string, model: string, stream = false): Promise<number> => {
  try {
    const r = await fetch(`${url}/api/chat`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-awooop-lane": lane, "x-awooop-project-id": "faults" },
      body: JSON.stringify({ model, messages: [{ role: "user", content: "hi" }], stream })
    })
    await r.arrayBuffer()
    return r.status
  } catch {
    return 0
  }
}

const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

describe("three replicas share each host's slots and breaker", () => {
  let db: ProxiedDatabase
  let gpu1: FakeOllama
  let gpu2: FakeOllama
  let dir: string
  const replicas: Array<Child | null> = []
  const runnerOf: Array<string> = []

  const start = async (i: number) => {
    const port = await freePort()
    runnerOf[i] = `127.0.0.1:${port}`
    return spawnGateway({
      DATABASE_URL: db.directUrl,
      AWOOOP_CONFIG: path.join(dir, "gateway.yaml"),
      AWOOOP_SPILL_DIR: path.join(dir, `spill-${i}`),
      AWOOOP_RUNNER_HOST: "127.0.0.1",
      AWOOOP_RUNNER_PORT: String(port)
    }, 240_000)
  }
  const alive = () => replicas.flatMap((r, i) => (r === null ? [] : [i]))
  const url = (i: number) => replicas[i]!.url

  /** Every live replica names the same owner for `host`; that owner (a runner address). */
  const agreedOwner = async (host: string): Promise<string | null> => {
    const owners = await Promise.all(alive().map(async (i) => (await healthOf(url(i)))?.cluster?.hosts?.[host] ?? null))
    return owners.every((o) => o !== null && o === owners[0]) ? owners[0]! : null
  }

  /** `n` requests round-robin over the live replicas, `concurrency` at once; 2 of 3 on the bulk lane. */
  const load = async (n: number, concurrency: number) => {
    const statuses: Array<number> = []
    let next = 0
    await Promise.all(Array.from({ length: concurrency }, async () => {
      while (next < n) {
        const k = next++
        const live = alive()
        const bulk = k % 3 !== 0
        statuses.push(await chat(url(live[k % live.length]!), bulk ? "bulk" : "alert", bulk ? BULK_MODEL : ALERT_MODEL, k % 4 === 0))
      }
    }))
    return statuses
  }

  beforeAll(async () => {
    db = await startProxiedDatabase({ gatewayPool: false })
    gpu1 = await startFakeOllama({ name: "gpu-1" })
    gpu2 = await startFakeOllama({ name: "gpu-2" })
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "awooop-cluster-slots-"))
    fs.writeFileSync(path.join(dir, "gateway.yaml"), `
hosts:
  gpu-1: { url: "${gpu1.url}", slots: ${SLOTS} }
  gpu-2: { url: "${gpu2.url}", slots: 4 }
legacy: { projectId: awoooi, lanes: {} }
breaker: { consecutiveTimeouts: 2, cooldown: "4s" }
lanes:
  alert:
    model: ${ALERT_MODEL}
    reserved: { gpu-1: ${RESERVED} }
    route: [ { host: gpu-1, timeout: "30s" } ]
    queue: { capacity: 200, maxWait: "60s" }
  bulk:
    model: ${BULK_MODEL}
    route: [ { host: gpu-1, timeout: "30s" } ]
    queue: { capacity: 200, maxWait: "60s" }
  probe:
    model: ${ALERT_MODEL}
    route: [ { host: gpu-2, timeout: "1s" } ]
server: { pollInterval: "3s", probeTimeout: "3s", drainTimeout: "1s" }
`)
    replicas.push(...await Promise.all([0, 1, 2].map(start)))
    await waitFor("three runners; every replica names the same owner of each host", async () => {
      const h = await healthOf(url(0))
      return h?.cluster?.runners.length === 3 && (await agreedOwner("gpu-1")) !== null && (await agreedOwner("gpu-2")) !== null
    }, 90_000, 250)
  }, 300_000)

  afterAll(async () => {
    for (const r of replicas) r?.process.kill("SIGKILL")
    await Promise.all(replicas.map((r) => (r === null ? undefined : exited(r.process))))
    await gpu1?.stop()
    await gpu2?.stop()
    await db?.close()
  })

  it("max in flight ≤ the host's slots and the reservation held, also across a SIGKILL of the owner's replica", async () => {
    // Latency at c=1 (the host answers at once): through the owner's replica and through another.
    const owner = (await agreedOwner("gpu-1"))!
    const metrics = await (await fetch(`${url(0)}/metrics`)).text()
    expect(metrics).toContain(`awooop_cluster_host_owner{host="gpu-1",runner="${owner}"} 1`)
    const ownerIndex = runnerOf.indexOf(owner)
    const other = [0, 1, 2].find((i) => i !== ownerIndex)!
    const timed = async (i: number) => {
      const times: Array<number> = []
      for (let k = 0; k < 30; k++) {
        const t0 = performance.now()
        expect(await chat(url(i), "bulk", BULK_MODEL)).toBe(200)
        times.push(performance.now() - t0)
      }
      return median(times.slice(5))
    }
    const local = await timed(ownerIndex)
    const remote = await timed(other)
    // Only an idle machine makes the difference mean anything (test/host-entity-runners.test.ts times the message alone).
    console.log(`cluster slots: c=1 p50 through the owner's replica ${local.toFixed(2)} ms, through another ${remote.toFixed(2)} ms (difference ${(remote - local).toFixed(2)} ms)`)

    gpu1.setMode("slow", { delayMs: 400 })
    gpu1.reset()
    const first = await load(60, 12)
    expect(first.filter((s) => s !== 200)).toEqual([])
    console.log(`cluster slots: max in flight ${gpu1.maxInFlight()} (bulk ${gpu1.maxInFlightOf(BULK_MODEL)}, alert ${gpu1.maxInFlightOf(ALERT_MODEL)})`)
    expect(gpu1.maxInFlight()).toBeLessThanOrEqual(SLOTS)
    expect(gpu1.maxInFlightOf(BULK_MODEL)).toBeLessThanOrEqual(SLOTS - RESERVED)
    // The load did fill the host (the bound is not met by accident).
    expect(gpu1.maxInFlight()).toBe(SLOTS)

    // SIGKILL the replica whose runner owns gpu-1's entity, while the load runs.
    gpu1.reset()
    const during = load(90, 12)
    await waitFor("the host is full", () => gpu1.inFlight() >= SLOTS, 20_000, 20)
    const killedAt = Date.now()
    replicas[ownerIndex]!.process.kill("SIGKILL")
    await exited(replicas[ownerIndex]!.process)
    replicas[ownerIndex] = null
    const posts = () => gpu1.requests.filter((r) => r.method === "POST").length
    const servedBefore = posts()
    await waitFor("a survivor's request reaches the host again", () => posts() > servedBefore, 60_000, 50)
    console.log(`cluster slots: grants resumed ${Date.now() - killedAt} ms after the SIGKILL of the owner's replica`)
    const statuses = await during
    // Requests the killed replica held fail (the connection drops); none of the survivors' do.
    expect(statuses.filter((s) => s !== 200 && s !== 0)).toEqual([])
    console.log(`cluster slots: across the SIGKILL max in flight ${gpu1.maxInFlight()} (bulk ${gpu1.maxInFlightOf(BULK_MODEL)})`)
    expect(gpu1.maxInFlight()).toBeLessThanOrEqual(SLOTS)
    expect(gpu1.maxInFlightOf(BULK_MODEL)).toBeLessThanOrEqual(SLOTS - RESERVED)

    // The replica comes back (a new process, a new runner): still one count for the host.
    replicas[ownerIndex] = await start(ownerIndex)
    await waitFor("the replicas agree on the owners again", async () => (await agreedOwner("gpu-1")) !== null, 60_000, 250)
    gpu1.reset()
    const after = await load(60, 12)
    expect(after.filter((s) => s !== 200)).toEqual([])
    expect(gpu1.maxInFlight()).toBeLessThanOrEqual(SLOTS)
    expect(gpu1.maxInFlightOf(BULK_MODEL)).toBeLessThanOrEqual(SLOTS - RESERVED)
    gpu1.setMode("ok")
  }, 300_000)

  it("timeouts on two replicas open the breaker everywhere; exactly one probe", async () => {
    const [a, b, c] = alive() as [number, number, number]
    gpu2.setMode("hang")
    expect(await chat(url(a), "probe", ALERT_MODEL)).toBe(504)
    expect(await chat(url(b), "probe", ALERT_MODEL)).toBe(504)
    await waitFor("every replica sees gpu-2's breaker open", async () =>
      (await Promise.all(alive().map((i) => healthOf(url(i))))).every((h) => h?.hosts["gpu-2"]?.breaker.status === "open"), 5_000, 100)
    // While open, nothing reaches the host from any replica.
    gpu2.reset()
    const refused = await Promise.all([a, b, c].map((i) => chat(url(i), "probe", ALERT_MODEL)))
    expect(refused.every((s) => s === 503)).toBe(true)
    expect(gpu2.requests.filter((r) => r.method === "POST")).toHaveLength(0)

    // After the cooldown, every replica asks at once: one probe reaches the host.
    await waitFor("the cooldown passes", async () =>
      (await Promise.all(alive().map((i) => healthOf(url(i))))).every((h) => h?.hosts["gpu-2"]?.breaker.status === "half-open"), 10_000, 100)
    const probes = await Promise.all([a, b, c].map((i) => chat(url(i), "probe", ALERT_MODEL)))
    const reached = gpu2.requests.filter((r) => r.method === "POST").length
    console.log(`cluster breaker: after the cooldown, answers ${probes.join(", ")}; ${reached} request(s) reached the host`)
    expect(reached).toBe(1)
    expect(probes.filter((s) => s === 504)).toHaveLength(1)
    gpu2.setMode("ok")

    // The killed replica's runs end orphaned once the orphan-release singleton sees its heartbeat stop.
    let problems: ReadonlyArray<string> = []
    await waitFor("the journal audit holds", async () => (problems = (await auditAllRuns(db.query)).problems).length === 0, 60_000, 2_000)
      .catch(() => undefined)
    expect(problems).toEqual([])
  }, 120_000)
})
