/**
 * The architecture's floor (issue 14): what a proxy built the way the gateway must be built costs,
 * before any of the gateway's own logic. Four servers (bench/floor-server.ts) take the same load, in the same run, on one
 * fake host, against the bare proxy (node:http → undici, nothing else) and the gateway itself:
 *
 *   effect     the bare proxy, but each request is one Effect fiber (Runtime.runFork) that reads
 *              the body, parses it, calls the host and parses its answer (what usage/cost needs)
 *   journal    + the run's five events (real ones, captured from a gateway run) through the
 *              gateway's own Journal service (src/journal: queue, group commit, step_journal_append)
 *   projector  + the gateway's own Projector following that journal (the default 250 ms interval)
 *   run-row    "journal", but the five events go in as ONE row at the run's end (its data the five
 *              events): not what the gateway does; what a row per run instead of a row per step
 *              would save, for the decision issue 14's targets need (BENCHMARKS.md)
 *
 * Whatever "projector" costs per request is what the mandated shape (Effect fibers, every step in
 * Postgres, projections folded from the log) costs before lanes, hosts, breakers, budget, callers,
 * spans, metrics or logs. The gateway's distance to it is the part its own code can still win.
 *
 *   npm run bench -- floor
 *   npx tsx bench/floor.ts [requests per round=10000] [concurrency=32] [rounds=5]
 *
 * Rounds interleave the servers (each takes its share of the load in turn) and every figure is the
 * median over rounds. FLOOR_NODE_FLAGS gives the floor servers node flags (`--cpu-prof
 * --cpu-prof-dir=DIR` profiles each). Traffic goes to loopback only.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import fs from "node:fs"
import os from "node:os"
import path from "node:path"
import pg from "pg"
import { Agent, request } from "undici"
import { gatewayBenchConfig } from "./BenchConfig.ts"
import { cpuOfPid, createScratchDatabase, dropped, healthy, postgresPids, postgresSince, stopWithUs, waitLine } from "./Processes.ts"

export const benchFloor = async (perRound = 10000, concurrency = 32, rounds = 5): Promise<string> => {
  const root = path.join(import.meta.dirname, "..")
  const adminUrl = process.env.BENCH_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres"
  const admin = new pg.Client({ connectionString: adminUrl })
  await admin.connect()
  const stamp = Date.now()
  /** Each server's database (by server name): its name and URL. */
  const databases = new Map<string, { readonly name: string; readonly url: string }>()
  const database = async (server: string) => {
    const name = `awooop_floor_${server.replace("-", "_")}_${stamp}`
    await createScratchDatabase(admin, adminUrl, name)
    const url = adminUrl.replace(/\/[^/]*$/, `/${name}`)
    databases.set(server, { name, url })
    return url
  }
  const node = (args: Array<string>, env: Record<string, string> = {}) =>
    stopWithUs(spawn(process.execPath, args, { cwd: root, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "inherit"] }))
  const ready = async (child: ChildProcess) => `http://127.0.0.1:${(await waitLine(child, /READY (\d+)/))[1]}`

  const fake = node(["--import", "tsx", "bench/fake-host.ts", "0"])
  const fakeUrl = await ready(fake)
  if (spawnSync(process.execPath, ["scripts/build.mjs"], { cwd: root, stdio: "inherit" }).status !== 0) throw new Error("build failed")
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "awooop-floor-"))
  fs.writeFileSync(path.join(dir, "gateway.yaml"), gatewayBenchConfig(fakeUrl))
  const servers: Array<{ name: string; child: ChildProcess; url: string; postgres: boolean }> = []
  const add = async (name: string, child: ChildProcess, postgres: boolean, url?: string) => {
    servers.push({ name, child, url: url ?? await ready(child), postgres })
  }
  await add("bare proxy", node(["--import", "tsx", "bench/bare-proxy.ts", fakeUrl]), false)
  for (const mode of ["effect", "journal", "run-row", "projector"] as const) {
    const db = mode === "effect" ? [] : [await database(mode)]
    // FLOOR_NODE_FLAGS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/floor") go to the floor servers only.
    const flags = (process.env.FLOOR_NODE_FLAGS ?? "").split(" ").filter(Boolean)
    await add(mode, node([...flags, "--import", "tsx", "bench/floor-server.ts", mode, fakeUrl, ...db]), mode !== "effect")
  }
  const port = 20000 + Math.floor(Math.random() * 20000)
  const gateway = node(["dist/main.js"], { DATABASE_URL: await database("gateway"), AWOOOP_CONFIG: path.join(dir, "gateway.yaml"), PORT: String(port), AWOOOP_LOG_LEVEL: "warn" })
  gateway.stdout!.resume()
  await healthy(`http://127.0.0.1:${port}`, gateway)
  await add("gateway", gateway, true, `http://127.0.0.1:${port}`)

  const agent = new Agent({ connections: 64, keepAliveTimeout: 30_000 })
  const body = JSON.stringify({ model: "gemma3:4b", prompt: "why is the alert firing?", stream: false })
  const load = async (url: string, total: number) => {
    let next = 0
    const t0 = performance.now()
    await Promise.all(Array.from({ length: concurrency }, async () => {
      while (next < total) {
        next++
        const res = await request(`${url}/api/generate`, { method: "POST", dispatcher: agent, headers: { "content-type": "application/json", "x-awooop-lane": "alert-fast", "x-awooop-project-id": "bench" }, body })
        await res.body.dump()
        if (res.statusCode !== 200) throw new Error(`${url}: status ${res.statusCode}`)
      }
    }))
    return total / ((performance.now() - t0) / 1000)
  }
  for (const s of servers) await load(s.url, 2000) // warm-up (JIT, pools, the projector's first batches)
  const samples = new Map<string, Array<{ rps: number; cpu: number; postgres: number }>>()
  for (let round = 0; round < rounds; round++) {
    for (const s of servers) {
      const cpu0 = cpuOfPid(s.child.pid)
      const pg0 = postgresPids()
      const rps = await load(s.url, perRound)
      // The projector runs behind the load: its Postgres work for these requests lands within ~0.5 s.
      if (s.postgres) await new Promise((r) => setTimeout(r, 1000))
      const per = (seconds: number) => (seconds * 1e6) / perRound
      const list = samples.get(s.name) ?? []
      list.push({ rps, cpu: per(cpuOfPid(s.child.pid) - cpu0), postgres: per(postgresSince(pg0)) })
      samples.set(s.name, list)
    }
    process.stderr.write(`round ${round + 1}/${rounds} done\n`)
  }
  const median = (xs: Array<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
  const bare = median(samples.get("bare proxy")!.map((s) => s.cpu))
  const lines = [
    `${rounds} rounds of ${perRound} non-streaming /api/generate requests at c=${concurrency} per server, interleaved; medians. CPU µs per request: the server's process, and every Postgres process (a backend that ended during a round is not counted).`,
    "",
    "| server | req/s | server CPU µs/req | × bare proxy | Postgres CPU µs/req |",
    "|---|---|---|---|---|"
  ]
  for (const s of servers) {
    const list = samples.get(s.name)!
    const cpu = median(list.map((x) => x.cpu))
    lines.push(`| ${s.name} | ${median(list.map((x) => x.rps)).toFixed(0)} | ${cpu.toFixed(0)} | ${(cpu / bare).toFixed(2)} | ${median(list.map((x) => x.postgres)).toFixed(0)} |`)
  }
  // Issue 14's targets restated against the floor (BENCHMARKS.md, session 13, option 1).
  const of = (name: string, key: "cpu" | "postgres") => median(samples.get(name)!.map((x) => x[key]))
  lines.push(
    "",
    `Gateway ÷ projector floor: CPU ${(of("gateway", "cpu") / of("projector", "cpu")).toFixed(2)}×, ` +
      `Postgres ${(of("gateway", "postgres") / of("projector", "postgres")).toFixed(2)}×.`
  )
  await Promise.all(servers.map((s) => new Promise((resolve) => {
    s.child.once("exit", resolve)
    s.child.kill("SIGTERM")
  })))
  fake.kill("SIGTERM")
  // A floor that lost events would be no floor: each server's journal must hold every request's events.
  const served = 2000 + rounds * perRound
  const audit: Array<string> = []
  for (const [mode, { url }] of databases) {
    if (mode === "gateway") continue // bench/gateway.ts audits the gateway's journal
    const db = new pg.Client({ connectionString: url })
    await db.connect()
    const rows = Number((await db.query("SELECT count(*) AS n FROM step_journal")).rows[0].n)
    const runs = mode === "projector" ? Number((await db.query("SELECT count(*) AS n FROM run_state WHERE status = 'completed'")).rows[0].n) : null
    await db.end()
    const expected = mode === "run-row" ? served : served * 5
    audit.push(`${mode} ${rows}/${expected} rows${runs === null ? "" : `, ${runs}/${served} runs completed in run_state`}`)
    if (rows !== expected || (runs !== null && runs !== served)) throw new Error(`floor server ${mode} lost events: ${audit.at(-1)}`)
  }
  lines.push("", `Journal audit after the servers drained: ${audit.join("; ")}.`)
  for (const { name } of databases.values()) {
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
    dropped(name)
  }
  await admin.end()
  fs.rmSync(dir, { recursive: true, force: true })
  return lines.join("\n")
}

if (import.meta.url === `file://${process.argv[1]}`) {
  console.log(await benchFloor(Number(process.argv[2] ?? 10000), Number(process.argv[3] ?? 32), Number(process.argv[4] ?? 5)))
  process.exit(0)
}
