/**
 * One replica vs three (issue 13): the compiled gateway (`node dist/main.js`) as a single runner, then
 * as three replicas of one @effect/cluster cluster on the same Postgres (each with its own
 * AWOOOP_RUNNER_PORT), called round robin as any HTTP load balancer would. Measured on the same fake
 * host (in this process, so it can count what reaches it):
 *
 * - added latency at concurrency 1 (p50/p99), through the replica whose runner owns the host's entity
 *   and through the others (a grant is then a remote round trip);
 * - throughput at concurrency 32;
 * - over-admission: the most requests the fake host had in flight, against the host's slots;
 * - the failover gap: the owner's replica is SIGKILLed under load; the longest time without a
 *   completed request, and the time from the kill until a request sent after it is answered.
 *
 *   npm run bench -- replicas
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import pg from "pg"
import { Agent, request } from "undici"
import { type Child, exited, spawnGateway } from "../test/support/FaultKit.ts"
import { startFakeOllama } from "../test/support/FakeOllama.ts"
import { freePort } from "../test/support/FreePort.ts"
import { createScratchDatabase, dropped, stopWithUs } from "./Processes.ts"

const adminUrl = process.env.BENCH_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres"
const SLOTS = 8
const LOCK_EXPIRATION = "9 seconds"

const agent = new Agent({ connections: 128, keepAliveTimeout: 30_000 })
const headers = { "content-type": "application/json", "x-awooop-lane": "alert-fast", "x-awooop-project-id": "bench" }
const body = JSON.stringify({ model: "gemma3:4b", prompt: "why is the alert firing?", stream: false })

const generate = async (base: string): Promise<{ ms: number; status: number }> => {
  const t0 = performance.now()
  try {
    const res = await request(`${base}/api/generate`, { method: "POST", dispatcher: agent, headers, body })
    await res.body.dump()
    return { ms: performance.now() - t0, status: res.statusCode }
  } catch {
    return { ms: performance.now() - t0, status: 0 }
  }
}

const percentile = (sorted: ReadonlyArray<number>, p: number) => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? NaN
const fmt = (ms: number) => ms.toFixed(3)

/** `n` requests, `concurrency` at once, the i-th to `urls()[i % length]`. */
const run = async (urls: () => ReadonlyArray<string>, n: number, concurrency: number) => {
  const latencies: Array<number> = []
  let failed = 0
  let next = 0
  const t0 = performance.now()
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < n) {
      const i = next++
      const live = urls()
      const r = await generate(live[i % live.length]!)
      if (r.status === 200) latencies.push(r.ms)
      else failed++
    }
  }))
  const seconds = (performance.now() - t0) / 1000
  latencies.sort((a, b) => a - b)
  return { rps: n / seconds, p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99), failed }
}

interface Health {
  readonly cluster?: { readonly runner: string; readonly runners: ReadonlyArray<unknown>; readonly hosts?: Record<string, string | null> }
}
const health = async (url: string): Promise<Health | null> => {
  try {
    const res = await request(`${url}/awooop/health`, { dispatcher: agent })
    return (await res.body.json()) as Health
  } catch {
    return null
  }
}

const until = async (what: string, check: () => Promise<boolean>, timeoutMs = 120_000) => {
  const t0 = Date.now()
  while (!(await check())) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`never happened: ${what}`)
    await new Promise((r) => setTimeout(r, 200))
  }
}

const t0 = Date.now()
/** Progress on stderr (the result goes to stdout). */
const step = (what: string) => process.stderr.write(`[replicas +${((Date.now() - t0) / 1000).toFixed(0)}s] ${what}\n`)

const freshDatabase = async (admin: pg.Client, tag: string) => {
  const name = `awooop_bench_${tag}_${Date.now()}`
  await createScratchDatabase(admin, adminUrl, name)
  return { name, url: adminUrl.replace(/\/[^/]*$/, `/${name}`) }
}

/** Requests held 20 ms at the host, c=32 for `n` requests: the most in flight at once against its slots. */
const saturate = async (fake: Awaited<ReturnType<typeof startFakeOllama>>, urls: () => ReadonlyArray<string>, n: number) => {
  fake.setMode("slow", { delayMs: 20 })
  fake.reset()
  const r = await run(urls, n, 32)
  const most = fake.maxInFlight()
  fake.setMode("ok")
  return { most, failed: r.failed }
}

export const benchReplicas = async (): Promise<string> => {
  const admin = new pg.Client({ connectionString: adminUrl })
  await admin.connect()
  const fake = await startFakeOllama({ name: "bench", record: false })
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "awooop-bench-replicas-"))
  const config = path.join(dir, "gateway.yaml")
  fs.writeFileSync(config, `
hosts:
  gcp-a: { url: "${fake.url}", slots: ${SLOTS}, protected: true }
lanes:
  alert-fast:
    model: gemma3:4b
    reserved: { gcp-a: 2 }
    route: [ { host: gcp-a, timeout: "45s" } ]
    queue: { capacity: 1024, maxWait: "60s" }
server: { pollInterval: "60s", drainTimeout: "1s" }
`)
  const databases: Array<string> = []
  const children: Array<Child> = []
  const lines: Array<string> = []
  const rows: Array<string> = []
  try {
    // --- one replica: the single runner, exactly as `npm start` without AWOOOP_RUNNER_PORT
    const db1 = await freshDatabase(admin, "single")
    databases.push(db1.name)
    const single = await spawnGateway({ DATABASE_URL: db1.url, AWOOOP_CONFIG: config, AWOOOP_SPILL_DIR: path.join(dir, "spill-single") }, 120_000)
    children.push(single)
    stopWithUs(single.process)
    const direct = () => [fake.url]
    const one = () => [single.url]
    await run(one, 500, 8)
    step("one replica up")
    const directC1 = await run(direct, 2000, 1)
    const singleC1 = await run(one, 2000, 1)
    fake.reset()
    const singleC32 = await run(one, 8000, 32)
    step("one replica measured")
    const singleSat = await saturate(fake, one, 1500)
    single.process.kill("SIGTERM")
    await exited(single.process)

    // --- three replicas of one cluster, round robin
    const db3 = await freshDatabase(admin, "cluster")
    databases.push(db3.name)
    const runnerOf = new Map<string, Child>()
    const start = async (i: number) => {
      const port = await freePort()
      const child = await spawnGateway({
        DATABASE_URL: db3.url,
        AWOOOP_CONFIG: config,
        AWOOOP_SPILL_DIR: path.join(dir, `spill-${i}`),
        AWOOOP_RUNNER_HOST: "127.0.0.1",
        AWOOOP_RUNNER_PORT: String(port),
        AWOOOP_CLUSTER_LOCK_EXPIRATION: LOCK_EXPIRATION
      }, 240_000)
      runnerOf.set(`127.0.0.1:${port}`, child)
      return child
    }
    const replicas = await Promise.all([0, 1, 2].map(start))
    children.push(...replicas)
    for (const r of replicas) stopWithUs(r.process)
    let live = [...replicas]
    const owner = async (): Promise<Child | null> => {
      const owners = await Promise.all(live.map(async (r) => (await health(r.url))?.cluster?.hosts?.["gcp-a"] ?? null))
      const o = owners[0]
      return o !== null && o !== undefined && owners.every((x) => x === o) ? runnerOf.get(o) ?? null : null
    }
    step("three replicas up")
    await until("three runners agree on the owner of gcp-a", async () => (await health(replicas[0]!.url))?.cluster?.runners.length === 3 && (await owner()) !== null)
    step("owner agreed")
    const ownerChild = (await owner())!
    const others = replicas.filter((r) => r !== ownerChild)
    const all = () => live.map((r) => r.url)
    await run(all, 900, 8)
    const clusterC1 = await run(all, 3000, 1)
    const ownerC1 = await run(() => [ownerChild.url], 1000, 1)
    const otherC1 = await run(() => others.map((r) => r.url), 1000, 1)
    fake.reset()
    const clusterC32 = await run(all, 12000, 32)
    const clusterSat = await saturate(fake, all, 1500)

    step("three replicas measured")
    // --- failover: SIGKILL the owner's replica under load (c=16 round robin over the live replicas,
    // the host holding each request 20 ms so its slots are full when the owner dies)
    fake.setMode("slow", { delayMs: 20 })
    fake.reset()
    const completions: Array<number> = []
    let stopLoad = false
    let killedAt = 0
    let firstAfterKill = 0
    const loaders = Array.from({ length: 16 }, async (_, k) => {
      for (let i = k; !stopLoad; i += 16) {
        const urls = all()
        const sentAt = performance.now()
        const r = await generate(urls[i % urls.length]!)
        if (r.status !== 200) continue
        const at = performance.now()
        completions.push(at)
        if (killedAt > 0 && sentAt > killedAt && firstAfterKill === 0) firstAfterKill = at
      }
    })
    await new Promise((r) => setTimeout(r, 3_000))
    killedAt = performance.now()
    ownerChild.process.kill("SIGKILL")
    live = others
    await until("a request sent after the kill is answered", async () => firstAfterKill > 0, 120_000)
    await new Promise((r) => setTimeout(r, 3_000))
    stopLoad = true
    await Promise.all(loaders)
    step("failover measured")
    const failoverMax = fake.maxInFlight()
    completions.sort((a, b) => a - b)
    let gap = 0
    for (let i = 1; i < completions.length; i++) if (completions[i - 1]! >= killedAt - 1_000) gap = Math.max(gap, completions[i]! - completions[i - 1]!)

    const added = (r: { p50: number }) => r.p50 - directC1.p50
    rows.push(
      "| | one replica | three replicas (round robin) |",
      "|---|---|---|",
      `| c=1 p50 / p99 ms (direct ${fmt(directC1.p50)} / ${fmt(directC1.p99)}) | ${fmt(singleC1.p50)} / ${fmt(singleC1.p99)} | ${fmt(clusterC1.p50)} / ${fmt(clusterC1.p99)} |`,
      `| c=1 added p50 over direct | ${fmt(added(singleC1))} ms | ${fmt(added(clusterC1))} ms (through the host's owner ${fmt(added(ownerC1))}, through the others ${fmt(added(otherC1))}) |`,
      `| c=1, three replicas over one | | +${fmt(clusterC1.p50 - singleC1.p50)} ms p50 (target ≤ 2 ms) |`,
      `| c=32 throughput | ${singleC32.rps.toFixed(0)} req/s | ${clusterC32.rps.toFixed(0)} req/s |`,
      `| most in flight at the host (slots ${SLOTS}; the host holds each request 20 ms, c=32) | ${singleSat.most} | ${clusterSat.most} (over-admission: ${Math.max(0, clusterSat.most - SLOTS)}) |`,
      `| failed requests (c=1, c=32) | ${singleC1.failed}, ${singleC32.failed} | ${clusterC1.failed}, ${clusterC32.failed} |`
    )
    lines.push(
      "",
      `Failover (lock expiration ${LOCK_EXPIRATION}): the replica whose runner owned gcp-a's entity was SIGKILLed under c=16 round-robin load (the host holding each request 20 ms).`,
      `Longest time without a completed request: ${(gap / 1000).toFixed(1)} s; from the kill until a request sent after it was answered: ${((firstAfterKill - killedAt) / 1000).toFixed(1)} s (target ≤ 15 s).`,
      `Most in flight at the host meanwhile: ${failoverMax} (slots ${SLOTS}; over-admission ${Math.max(0, failoverMax - SLOTS)}).`
    )
  } finally {
    for (const c of children) if (c.process.exitCode === null && c.process.signalCode === null) c.process.kill("SIGKILL")
    await Promise.all(children.map((c) => exited(c.process)))
    await fake.stop()
    for (const name of databases) {
      await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
      dropped(name)
    }
    await admin.end()
    fs.rmSync(dir, { recursive: true, force: true })
    await agent.close()
  }
  return [
    `\`npm run bench -- replicas\`: the compiled gateway, one replica and then three of one cluster on one Postgres,`,
    `on the same fake host (in the benchmark's process), non-streaming generate on a lane routed to one host.`,
    "",
    ...rows,
    ...lines
  ].join("\n")
}
