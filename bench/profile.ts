/**
 * A CPU profile of the gateway under load (issue 14, item 4): the compiled gateway runs with
 * `--cpu-prof` against the bench's fake host, takes N requests at concurrency C, and on SIGTERM writes
 * a .cpuprofile into PROFILE_DIR; the script prints the top self-time functions.
 *
 *   npx tsx bench/profile.ts [requests=20000] [concurrency=32] [stream=0]
 */
import { spawn, spawnSync } from "node:child_process"
import fs from "node:fs"
import os from "node:os"
import path from "node:path"
import pg from "pg"
import { Agent, request } from "undici"
import { gatewayBenchConfig } from "./BenchConfig.ts"
import { cpuOfPid, createScratchDatabase, dropped, healthy, peakRssMbOf, postgresPids, postgresSince, rssMbOf, stopWithUs, waitLine } from "./Processes.ts"

const root = process.env.ROOT ?? path.join(import.meta.dirname, "..")
const total = Number(process.argv[2] ?? 20000)
const concurrency = Number(process.argv[3] ?? 32)
const stream = process.argv[4] === "1"
const outDir = process.env.PROFILE_DIR ?? fs.mkdtempSync(path.join(os.tmpdir(), "awooop-prof-"))
fs.mkdirSync(outDir, { recursive: true })
const adminUrl = process.env.BENCH_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres"

const dbName = `awooop_prof_${Date.now()}`
const admin = new pg.Client({ connectionString: adminUrl })
await admin.connect()
await createScratchDatabase(admin, adminUrl, dbName)
const fake = stopWithUs(spawn(process.execPath, ["--import", "tsx", "bench/fake-host.ts", "0"], { cwd: path.join(import.meta.dirname, ".."), stdio: ["ignore", "pipe", "inherit"] }))
const fakeUrl = `http://127.0.0.1:${(await waitLine(fake, /READY (\d+)/))[1]}`
const configFile = path.join(outDir, "gateway.yaml")
fs.writeFileSync(configFile, gatewayBenchConfig(fakeUrl))
if (spawnSync(process.execPath, ["scripts/build.mjs"], { cwd: root, stdio: "inherit" }).status !== 0) throw new Error("build failed")
const port = 20000 + Math.floor(Math.random() * 20000)
const profFlags = process.env.NOPROF ? [] : ["--cpu-prof", `--cpu-prof-dir=${outDir}`]
const gw = stopWithUs(spawn(process.execPath, [...profFlags, ...(process.env.GW_NODE_FLAGS ?? "").split(" ").filter(Boolean), "dist/main.js"], {
  cwd: root,
  env: { ...process.env, DATABASE_URL: adminUrl.replace(/\/[^/]*$/, `/${dbName}`), AWOOOP_CONFIG: configFile, PORT: String(port), AWOOOP_LOG_LEVEL: "warn" },
  // GW_STDOUT=<file>: keep the gateway's stdout (e.g. GW_NODE_FLAGS=--trace-gc's lines).
  stdio: ["ignore", process.env.GW_STDOUT ? fs.openSync(process.env.GW_STDOUT, "w") : "ignore", "inherit"]
}))
const base = `http://127.0.0.1:${port}`
await healthy(base, gw)
const agent = new Agent({ connections: 64 })
const body = JSON.stringify({ model: "gemma3:4b", prompt: "why is the alert firing?", stream })
const headers = { "content-type": "application/json", "x-awooop-lane": "alert-fast", "x-awooop-project-id": "bench" }
const db = new pg.Client({ connectionString: adminUrl.replace(/\/[^/]*$/, `/${dbName}`) })
await db.connect()
const pgStats = async () => {
  const d = (await db.query(`SELECT xact_commit, tup_inserted, tup_updated, tup_deleted, tup_fetched, tup_returned, blks_hit FROM pg_stat_database WHERE datname = current_database()`)).rows[0]
  const w = (await db.query(`SELECT wal_records, wal_bytes FROM pg_stat_wal`)).rows[0]
  const t = (await db.query(`SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables`)).rows
  return { ...d, ...w, tables: Object.fromEntries(t.map((r) => [r.relname, r])), pids: postgresPids() }
}
await new Promise((r) => setTimeout(r, 1500))
const before = await pgStats()
let next = 0
const cpu0 = process.cpuUsage()
const t0 = performance.now()
await Promise.all(Array.from({ length: concurrency }, async () => {
  while (next < total) {
    next++
    const res = await request(`${base}/api/generate`, { method: "POST", dispatcher: agent, headers, body })
    for await (const _ of res.body) void _
    if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}`)
  }
}))
const secs = (performance.now() - t0) / 1000
const gwCpu = cpuOfPid(gw.pid)
console.log(`${total} requests at c=${concurrency}: ${(total / secs).toFixed(0)} req/s; gateway CPU (incl. startup) ${(gwCpu * 1e6 / total).toFixed(0)} µs/req; RSS ${rssMbOf(gw.pid)?.toFixed(0)} MB, peak ${peakRssMbOf(gw.pid)?.toFixed(0)} MB`)
void cpu0
await new Promise((r) => setTimeout(r, 1500))
const after = await pgStats()
const postgresSeconds = postgresSince(before.pids)
const per = (k: string) => ((Number((after as any)[k]) - Number((before as any)[k])) / total).toFixed(2)
console.log(`postgres per request: cpu ${(postgresSeconds * 1e6 / total).toFixed(0)} µs, commits ${per("xact_commit")}, inserted ${per("tup_inserted")}, updated ${per("tup_updated")}, deleted ${per("tup_deleted")}, fetched ${per("tup_fetched")}, returned ${per("tup_returned")}, wal records ${per("wal_records")}, wal bytes ${per("wal_bytes")}`)
for (const [name, row] of Object.entries(after.tables)) {
  const b = (before.tables as any)[name] ?? { n_tup_ins: 0, n_tup_upd: 0, n_tup_hot_upd: 0 }
  const ins = (Number((row as any).n_tup_ins) - Number(b.n_tup_ins)) / total
  const upd = (Number((row as any).n_tup_upd) - Number(b.n_tup_upd)) / total
  const hot = (Number((row as any).n_tup_hot_upd) - Number(b.n_tup_hot_upd)) / total
  if (ins + upd > 0.001) console.log(`  ${name}: ins ${ins.toFixed(3)} upd ${upd.toFixed(3)} (hot ${hot.toFixed(3)})`)
}
for (const r of (await db.query(`SELECT type, count(*)::int AS n, avg(pg_column_size(data))::int AS data_bytes, avg(pg_column_size(step_journal.*))::int AS row_bytes FROM step_journal GROUP BY type ORDER BY n DESC`)).rows) console.log(`  ${r.type}: ${r.n} rows, data ${r.data_bytes} B, row ${r.row_bytes} B`)
await db.end()
gw.kill("SIGTERM")
await new Promise((r) => gw.on("exit", r))
fake.kill("SIGTERM")
if (process.env.KEEP_DB) console.log(`kept database ${dbName}`)
else await admin.query(`DROP DATABASE ${dbName} WITH (FORCE)`)
dropped(dbName)
await admin.end()
const file = fs.readdirSync(outDir).find((f) => f.endsWith(".cpuprofile"))
if (file === undefined) process.exit(0)
console.log(`profile: ${path.join(outDir, file)}`)
// Self time by function (and by file), top 40.
const prof = JSON.parse(fs.readFileSync(path.join(outDir, file), "utf8"))
const self = new Map<number, number>()
const dt: Array<number> = prof.timeDeltas
prof.samples.forEach((id: number, i: number) => self.set(id, (self.get(id) ?? 0) + (dt[i] ?? 0)))
const byFn = new Map<string, number>()
const byFile = new Map<string, number>()
let all = 0
for (const n of prof.nodes) {
  const t = self.get(n.id) ?? 0
  all += t
  const cf = n.callFrame
  const file = (cf.url || "(native)").replace(/^.*node_modules\//, "").replace(/^file:\/\/.*\/dist\//, "dist/")
  const key = `${cf.functionName || "(anon)"} ${file}:${cf.lineNumber + 1}`
  byFn.set(key, (byFn.get(key) ?? 0) + t)
  const pkg = file.startsWith("dist/") ? file : file.split("/").slice(0, file.startsWith("@") ? 2 : 1).join("/")
  byFile.set(pkg, (byFile.get(pkg) ?? 0) + t)
}
const top = (m: Map<string, number>, n: number) =>
  [...m].sort((a, b) => b[1] - a[1]).slice(0, n).map(([k, v]) => `${(100 * v / all).toFixed(1).padStart(5)}%  ${k}`).join("\n")
console.log(`\nself time by function:\n${top(byFn, 45)}\n\nby package / file:\n${top(byFile, 30)}`)
