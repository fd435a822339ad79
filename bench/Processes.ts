/**
 * What the benchmarks read about the processes they start (Linux /proc): CPU seconds (utime + stime
 * in clock ticks of 1/100 s), resident memory, and when a child is ready; and what they clean up
 * however they end (children, scratch databases).
 */
import { type ChildProcess, spawnSync } from "node:child_process"
import fs from "node:fs"
import os from "node:os"
import path from "node:path"

const TICK = 100

const started = new Set<ChildProcess>()
/** Scratch databases not dropped yet, by name: their server's admin URL. */
const scratch = new Map<string, string>()
let hooked = false

/**
 * At exit, in any way: kill what we started, drop what we created. The `exit` hook must be
 * synchronous, so a database is dropped by a short node child (pg, `DROP … WITH (FORCE)`).
 */
const hookExit = () => {
  if (hooked) return
  hooked = true
  process.once("exit", () => {
    for (const c of started) c.kill("SIGKILL")
    for (const [db, adminUrl] of scratch) {
      spawnSync(process.execPath, ["-e", dropScript], {
        cwd: path.join(import.meta.dirname, ".."),
        env: { ...process.env, ADMIN_URL: adminUrl, DB: db },
        stdio: "inherit",
        timeout: 15_000
      })
    }
  })
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.once(signal, () => process.exit(128 + os.constants.signals[signal]))
  }
}

const dropScript = `const pg = require("pg")
const c = new pg.Client({ connectionString: process.env.ADMIN_URL })
c.connect().then(() => c.query('DROP DATABASE IF EXISTS "' + process.env.DB + '" WITH (FORCE)'))
  .then(() => console.error("dropped the benchmark's database " + process.env.DB), (e) => console.error("could not drop " + process.env.DB + ": " + e.message))
  .finally(() => c.end())`

/**
 * Kills `child` when this benchmark exits in any way: a run cut short (Ctrl-C, a closed stdout pipe,
 * a thrown error) otherwise leaves its gateway and fake host running, and they load every later
 * measurement (session 12: a profiled gateway left by `profile.ts | head` used ~6% of a core for 40
 * minutes of suite timings). Returns the child.
 */
export const stopWithUs = <C extends ChildProcess>(child: C): C => {
  started.add(child)
  child.once("exit", () => started.delete(child))
  hookExit()
  return child
}

/**
 * Creates the benchmark's scratch database `db` and drops it when the benchmark exits without
 * having dropped it (a thrown error, Ctrl-C: session 12 and 13 found `awooop_prof_…` and
 * `awooop_ab_…` left behind). The benchmark's own drop calls `dropped(db)`; so does a kept one.
 */
export const createScratchDatabase = async (admin: { query: (text: string) => Promise<unknown> }, adminUrl: string, db: string) => {
  await admin.query(`CREATE DATABASE ${db}`)
  scratch.set(db, adminUrl)
  hookExit()
}

/** `db` was dropped (or is to be kept): nothing to do for it at exit. */
export const dropped = (db: string) => {
  scratch.delete(db)
}

/** CPU seconds a process has spent so far (0 when it is gone or unknown). */
export const cpuOfPid = (pid: number | undefined): number => {
  if (pid === undefined) return 0
  try {
    const fields = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ")
    return (Number(fields[11]) + Number(fields[12])) / TICK
  } catch {
    return 0
  }
}

/** CPU seconds of each Postgres process now (backends come and go: see `postgresSince`). */
export const postgresPids = (): Map<number, number> => {
  const out = new Map<number, number>()
  for (const entry of fs.existsSync("/proc") ? fs.readdirSync("/proc") : []) {
    if (!/^\d+$/.test(entry)) continue
    try {
      if (fs.readFileSync(`/proc/${entry}/comm`, "utf8").trim() === "postgres") out.set(Number(entry), cpuOfPid(Number(entry)))
    } catch { /* gone */ }
  }
  return out
}

/**
 * Postgres CPU seconds since `before`: a process that started since counts from zero, one that
 * ended since is not counted (summing whatever processes exist at both ends went negative when a
 * pool closed an idle backend).
 */
export const postgresSince = (before: Map<number, number>): number => {
  let total = 0
  for (const [pid, cpu] of postgresPids()) total += cpu - (before.get(pid) ?? 0)
  return total
}

const statusMb = (pid: number | undefined, field: "VmRSS" | "VmHWM"): number | null => {
  try {
    const m = new RegExp(`${field}:\\s+(\\d+)`).exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"))
    return m === null ? null : Number(m[1]) / 1024
  } catch {
    return null
  }
}

/** Resident set size now, in MB (null when unknown). */
export const rssMbOf = (pid: number | undefined): number | null => statusMb(pid, "VmRSS")

/** Peak resident set size (VmHWM) in MB (null when unknown). */
export const peakRssMbOf = (pid: number | undefined): number | null => statusMb(pid, "VmHWM")

/** Rejects once `child` has exited (never resolves): raced against a wait for it to be ready. */
const exited = (child: ChildProcess, what: string) =>
  new Promise<never>((_, reject) => {
    const fail = () => reject(new Error(`${what} exited (code ${child.exitCode}, signal ${child.signalCode}) before it was ready`))
    if (child.exitCode !== null || child.signalCode !== null) fail()
    else child.once("exit", fail)
  })

/**
 * Resolves with the first match of `re` in the child's stdout (the fake host's `READY <port>`); fails
 * if the child exits first.
 */
export const waitLine = (child: ChildProcess, re: RegExp) =>
  Promise.race([
    new Promise<RegExpMatchArray>((resolve) => {
      let buf = ""
      child.stdout!.on("data", (d) => {
        buf += d
        const m = buf.match(re)
        if (m !== null) resolve(m)
      })
    }),
    exited(child, `${child.spawnargs.slice(1).join(" ")}`)
  ])

/**
 * Resolves once the gateway at `base` answers /awooop/health; fails after 2 minutes, or with
 * `child` as soon as it exits: a gateway that refuses its configuration (say,
 * `AWOOOP_JOURNAL_LINGER=50ms`, which is not an Effect duration; "50 millis" is) exits at start, and
 * the benchmark waited for it forever (session 13).
 */
export const healthy = async (base: string, child?: ChildProcess): Promise<void> => {
  const deadline = Date.now() + 120_000
  while (Date.now() < deadline) {
    if (child !== undefined && (child.exitCode !== null || child.signalCode !== null)) {
      throw new Error(`the gateway exited (code ${child.exitCode}, signal ${child.signalCode}) before it answered`)
    }
    try {
      await (await fetch(`${base}/awooop/health`)).text()
      return
    } catch {
      await new Promise((r) => setTimeout(r, 100))
    }
  }
  throw new Error(`${base} did not answer within 2 minutes`)
}
