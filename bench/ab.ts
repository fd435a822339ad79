/**
 * Two builds of the gateway side by side under the same conditions (issue 11's "benchmark within
 * noise", issue 14's CPU work): checkouts A and B each run their compiled gateway on a database of
 * their own, against one fake host, and take the same load at the same time (C connections each,
 * requests alternating between them). Each round reports each process's CPU per request over the
 * same window, so whatever else loads the machine loads both alike; the ratio B/A is the verdict.
 * Sequential A-then-B runs on this shared 2-core machine differed by up to 2× from load alone.
 *
 *   A=<checkout> B=<checkout> npx tsx bench/ab.ts [requests per gateway per round=10000] [connections each=16] [rounds=3]
 *
 * B defaults to this checkout. PROF=1 also writes a CPU profile of each side; NODE_FLAGS_A /
 * NODE_FLAGS_B give one side node flags (A=B=<checkout> with a flag on one side measures the flag), ENV_A /
 * ENV_B one side's environment ("K=V K2=V2"). Each checkout is built with its own scripts/build.mjs (and needs its
 * node_modules). Traffic goes to loopback only.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import fs from "node:fs"
import os from "node:os"
import path from "node:path"
import pg from "pg"
import { Agent, request } from "undici"
import { gatewayBenchConfig } from "./BenchConfig.ts"
import { cpuOfPid, createScratchDatabase, dropped, healthy, rssMbOf, stopWithUs, waitLine } from "./Processes.ts"

const here = path.join(import.meta.dirname, "..")
const roots = { A: process.env.A, B: process.env.B ?? here }
if (roots.A === undefined) throw new Error("set A=<checkout> (and optionally B=<checkout>, default this one)")
const perRound = Number(process.argv[2] ?? 10000)
const connections = Number(process.argv[3] ?? 16)
const rounds = Number(process.argv[4] ?? 3)
const adminUrl = process.env.BENCH_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres"
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "awooop-ab-"))

const admin = new pg.Client({ connectionString: adminUrl })
await admin.connect()
const fake = stopWithUs(spawn(process.execPath, ["--import", "tsx", "bench/fake-host.ts", "0"], { cwd: here, stdio: ["ignore", "pipe", "inherit"] }))
const fakeUrl = `http://127.0.0.1:${(await waitLine(fake, /READY (\d+)/))[1]}`
const configFile = path.join(dir, "gateway.yaml")
fs.writeFileSync(configFile, gatewayBenchConfig(fakeUrl))

interface Side {
  readonly name: "A" | "B"
  readonly child: ChildProcess
  readonly url: string
  readonly db: string
}

const start = async (name: "A" | "B"): Promise<Side> => {
  const root = roots[name]!
  if (spawnSync(process.execPath, ["scripts/build.mjs"], { cwd: root, stdio: "inherit" }).status !== 0) throw new Error(`build of ${root} failed`)
  const db = `awooop_ab_${name.toLowerCase()}_${Date.now()}`
  await createScratchDatabase(admin, adminUrl, db)
  const port = 20000 + Math.floor(Math.random() * 20000)
  // PROF=1: a --cpu-prof profile of each side, written into <tmp dir>/<side> when it stops.
  const prof = process.env.PROF ? ["--cpu-prof", `--cpu-prof-dir=${path.join(dir, name)}`] : []
  // NODE_FLAGS_A / NODE_FLAGS_B: node flags of one side (e.g. a heap setting against the same build).
  const flags = (process.env[`NODE_FLAGS_${name}`] ?? "").split(" ").filter(Boolean)
  // ENV_A / ENV_B: environment of one side, "K=V K2=V2" (e.g. AWOOOP_PROJECTOR_ENABLED=false: what the projector costs).
  const extraEnv = Object.fromEntries((process.env[`ENV_${name}`] ?? "").split(" ").filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]))
  const child = stopWithUs(spawn(process.execPath, [...prof, ...flags, "dist/main.js"], {
    cwd: root,
    env: { ...process.env, DATABASE_URL: adminUrl.replace(/\/[^/]*$/, `/${db}`), AWOOOP_CONFIG: configFile, PORT: String(port), AWOOOP_LOG_LEVEL: "warn", ...extraEnv },
    stdio: ["ignore", "ignore", "inherit"]
  }))
  const url = `http://127.0.0.1:${port}`
  await healthy(url, child)
  return { name, child, url, db }
}

const sides = [await start("A"), await start("B")]
const agent = new Agent({ connections: connections * 2 })
const body = JSON.stringify({ model: "gemma3:4b", prompt: "why is the alert firing?", stream: false })
const headers = { "content-type": "application/json", "x-awooop-lane": "alert-fast", "x-awooop-project-id": "bench" }

const load = (side: Side, n: number) => {
  let next = 0
  return Promise.all(Array.from({ length: connections }, async () => {
    while (next < n) {
      next++
      const res = await request(`${side.url}/api/generate`, { method: "POST", dispatcher: agent, headers, body })
      for await (const _ of res.body) void _
      if (res.statusCode !== 200) throw new Error(`${side.name}: status ${res.statusCode}`)
    }
  }))
}

try {
  // Warm-up: JIT, connection pools, the projector's first batches.
  await Promise.all(sides.map((s) => load(s, 2000)))
  await new Promise((r) => setTimeout(r, 1500))
  console.log(`A = ${roots.A}\nB = ${roots.B}\n${perRound} requests each per round, ${connections} connections each, at the same time; load average ${os.loadavg()[0]!.toFixed(1)}`)
  console.log("| round | A µs/req | B µs/req | B/A | Postgres A / B µs/req | RSS A / B MB after the round |\n|---|---|---|---|---|---|")
  const ratios: Array<number> = []
  // Each side's Postgres backends (its pool's connections, found by database): their CPU per request.
  const backends = async (s: Side) =>
    (await admin.query(`SELECT pid FROM pg_stat_activity WHERE datname = $1`, [s.db])).rows.map((r) => Number(r.pid))
  const backendCpu = (pids: ReadonlyArray<number>) => pids.reduce((sum, pid) => sum + cpuOfPid(pid), 0)
  for (let round = 1; round <= rounds; round++) {
    const pids = await Promise.all(sides.map(backends))
    const pgBefore = pids.map(backendCpu)
    const before = sides.map((s) => cpuOfPid(s.child.pid))
    await Promise.all(sides.map((s) => load(s, perRound)))
    // The journal's and projector's batches for this round's requests.
    await new Promise((r) => setTimeout(r, 1500))
    const us = sides.map((s, i) => ((cpuOfPid(s.child.pid) - before[i]!) * 1e6) / perRound)
    const pgUs = pids.map((p, i) => ((backendCpu(p) - pgBefore[i]!) * 1e6 / perRound).toFixed(0))
    ratios.push(us[1]! / us[0]!)
    const rss = sides.map((s) => (rssMbOf(s.child.pid) ?? 0).toFixed(0))
    console.log(`| ${round} | ${us[0]!.toFixed(0)} | ${us[1]!.toFixed(0)} | ${(us[1]! / us[0]!).toFixed(2)} | ${pgUs[0]} / ${pgUs[1]} | ${rss[0]} / ${rss[1]} |`)
  }
  const sorted = [...ratios].sort((a, b) => a - b)
  console.log(`median B/A ${sorted[Math.floor(sorted.length / 2)]!.toFixed(2)}; load average at the end ${os.loadavg()[0]!.toFixed(1)}`)
} finally {
  for (const s of sides) s.child.kill("SIGTERM")
  await Promise.all(sides.map((s) => new Promise((r) => s.child.exitCode !== null ? r(null) : s.child.on("exit", r))))
  fake.kill("SIGTERM")
  for (const s of sides) {
    await admin.query(`DROP DATABASE IF EXISTS ${s.db} WITH (FORCE)`)
    dropped(s.db)
  }
  await admin.end()
  await agent.close()
  if (process.env.PROF) console.log(`profiles: ${dir}/A, ${dir}/B`)
}
