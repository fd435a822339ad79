/**
 * Soak (issue 7, part 4): `npm run soak` — a benchmark, not a CI test.
 *
 * The real gateway (src/main.ts, its own process, production journal settings) in front of fake
 * Ollama hosts and a fake Gemini on loopback, its DATABASE_URL through a PgProxy, under a steady
 * open-loop load of mixed lanes (alert-fast generate/chat, streaming and not, code-review, embedding,
 * and a paid-fallback lane) for SOAK_MINUTES (default 10), with faults injected on a schedule: fake
 * hosts hang, drip, fail, reset, send garbage, get busy or stop; the Postgres proxy cuts every
 * connection now and then and "restarts" Postgres once per cycle.
 *
 * Reports requests, correct answers and errors, error rate by cause, p50/p99, the gateway's RSS
 * every 10 s (first, last, slope), the load average, and the journal audit: the events the gateway
 * says it wrote = the rows in step_journal, and every run stream whole (positions 0..n-1 in commit
 * order, one terminal event) and agreeing with what its caller got.
 *
 *   npm run soak                           # 10 minutes, 20 requests/s (after a 30 s warm-up)
 *   SOAK_MINUTES=2 SOAK_RPS=40 npm run soak
 *   npm run soak -- --minutes 15 --rps 80
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { Agent } from "undici"
import type { FakeMode } from "../test/support/FakeOllama.ts"
import {
  type Call,
  type Child,
  exited,
  health,
  healthJournal,
  type Outcome,
  type ProxiedDatabase,
  send,
  spawnGateway,
  startProxiedDatabase
} from "../test/support/FaultKit.ts"
import { stopWithUs } from "./Processes.ts"

const arg = (name: string): string | undefined => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? process.argv[i + 1] : undefined
}
const MINUTES = Number(arg("minutes") ?? process.env.SOAK_MINUTES ?? 10)
const RPS = Number(arg("rps") ?? process.env.SOAK_RPS ?? 20)
/** Unmeasured warm-up at the target rate, no faults (JIT, the tsx loader, connection pools). */
const WARMUP_MS = Number(arg("warmup") ?? process.env.SOAK_WARMUP_SECONDS ?? 30) * 1000
const MAX_IN_FLIGHT = 256
const PHASE_MS = 30_000
const SAMPLE_MS = 10_000
const GEMINI_KEY = `gem-soak-${crypto.randomUUID()}`
const GEMINI_REPLY = "[gemini] hello from gemini"
const replies = { gemini: GEMINI_REPLY }

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

// ---------------------------------------------------------------------------------------------
// Traffic mix

const mix: ReadonlyArray<[Call, number]> = [
  [{ lane: "alert-fast", model: "gemma3:4b", operation: "generate", stream: false }, 25],
  [{ lane: "alert-fast", model: "gemma3:4b", operation: "generate", stream: true }, 25],
  [{ lane: "alert-fast", model: "gemma3:4b", operation: "chat", stream: true }, 13],
  [{ lane: "code-review", model: "qwen2.5-coder:7b", operation: "chat", stream: false }, 15],
  [{ lane: "embedding", model: "bge-m3", operation: "embed", stream: false }, 20],
  [{ lane: "alert-paid", model: "gemma3:4b", operation: "generate", stream: false }, 2]
]
const totalWeight = mix.reduce((a, [, w]) => a + w, 0)
const pick = (): Call => {
  let r = Math.random() * totalWeight
  for (const [call, w] of mix) {
    r -= w
    if (r < 0) return call
  }
  return mix[0]![0]
}

// ---------------------------------------------------------------------------------------------
// Fault schedule: one phase every 30 s, cycling

interface Phase {
  readonly name: string
  readonly start: (env: Env) => Promise<void>
  readonly stop: (env: Env) => Promise<void>
}

/** The fake hosts, in their own process (bench/soak-hosts.ts). */
interface Hosts {
  readonly urls: Record<string, string>
  readonly mode: (host: string, mode: FakeMode, delayMs?: number) => Promise<void>
  readonly stop: (host: string) => Promise<void>
  readonly start: (host: string) => Promise<void>
  readonly close: () => Promise<void>
}

const startHosts = (env: Record<string, string>): Promise<Hosts> =>
  new Promise((resolve, reject) => {
    const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..")
    const child: ChildProcess = stopWithUs(spawn(process.execPath, ["--import", "tsx", "bench/soak-hosts.ts"], {
      cwd: root,
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "inherit", "ipc"]
    }))
    let nextId = 0
    const waiting = new Map<number, (result: unknown) => void>()
    child.on("message", (m) => {
      const { id, result } = m as { id: number; result: unknown }
      waiting.get(id)?.(result)
      waiting.delete(id)
    })
    const ask = (command: Record<string, unknown>) =>
      new Promise<unknown>((done) => {
        const id = nextId++
        waiting.set(id, done)
        child.send({ id, ...command })
      })
    let out = ""
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString()
      const m = /READY (\{.*\})/.exec(out)
      if (m) {
        child.stdout!.removeAllListeners("data")
        child.stdout!.resume()
        resolve({
          urls: JSON.parse(m[1]!) as Record<string, string>,
          mode: async (host, mode, delayMs) => void (await ask({ op: "mode", host, mode, delayMs })),
          stop: async (host) => void (await ask({ op: "stop", host })),
          start: async (host) => void (await ask({ op: "start", host })),
          close: () =>
            new Promise((r) => {
              child.once("exit", () => r())
              child.disconnect()
            })
        })
      }
    })
    child.once("exit", (code) => reject(new Error(`soak-hosts exited (${code}): ${out}`)))
  })

interface Env {
  readonly hosts: Hosts
  readonly db: ProxiedDatabase
}

const none: Phase = { name: "no fault", start: async () => {}, stop: async () => {} }
const mode = (host: string, m: FakeMode, delayMs?: number): Phase => ({
  name: `${host} ${m}${delayMs !== undefined ? ` (${delayMs / 1000} s)` : ""}`,
  start: ({ hosts }) => hosts.mode(host, m, delayMs),
  stop: ({ hosts }) => hosts.mode(host, "ok", 50)
})
const withPg = (phase: Phase, what: "cut" | "restart"): Phase => ({
  name: `${phase.name} + Postgres ${what === "cut" ? "connections cut" : "restart (2 s down)"}`,
  start: async (env) => {
    await phase.start(env)
    if (what === "cut") env.db.proxy.cutAll()
    else await env.db.proxy.restart(2_000)
  },
  stop: phase.stop
})
const stopped = (host: string): Phase => ({
  name: `${host} stopped (connection refused)`,
  start: ({ hosts }) => hosts.stop(host),
  stop: ({ hosts }) => hosts.start(host)
})

const schedule: ReadonlyArray<Phase> = [
  none,
  mode("gcp-a", "hang"),
  withPg(none, "cut"),
  mode("gcp-b", "error500"),
  mode("111", "resetMidStream"),
  withPg(none, "restart"),
  mode("gcp-a", "drip", 2_000),
  mode("111", "busy503"),
  withPg(mode("gcp-a", "malformed"), "cut"),
  mode("gcp-b", "resetBeforeFirst"),
  stopped("gcp-a"),
  mode("gcp-a", "slow", 800)
]

// ---------------------------------------------------------------------------------------------

const percentile = (sorted: ReadonlyArray<number>, p: number) => sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!

const rssMb = (pid: number): number => {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8")
  const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN)
  return kb / 1024
}

/** Least-squares slope of y over x. */
const slope = (xs: ReadonlyArray<number>, ys: ReadonlyArray<number>) => {
  const n = xs.length
  if (n < 2) return NaN
  const mx = xs.reduce((a, b) => a + b, 0) / n
  const my = ys.reduce((a, b) => a + b, 0) / n
  let num = 0
  let den = 0
  for (let i = 0; i < n; i++) {
    num += (xs[i]! - mx) * (ys[i]! - my)
    den += (xs[i]! - mx) ** 2
  }
  return num / den
}

const causeOf = (o: Outcome): string => {
  switch (o.kind) {
    case "answer": return "answer"
    case "error": return o.midStream ? "StreamBroken (error line after the first chunk)" : `${o.status} ${o.errorTag ?? "?"}`
    case "transport": return `transport: ${o.error}`
    case "wrong": return `WRONG: ${(o.error ?? "").slice(0, 80)}`
  }
}

/** The live heap after a full GC, once a minute since the gateway started (warm-up included): first, last, slope. */
const heapLine = (heap: ReadonlyArray<readonly [number, number]>, warmupSeconds: number): string => {
  const measured = heap.filter(([t]) => t >= warmupSeconds + 60)
  if (measured.length < 2) return `Live heap after a full GC: ${heap.length === 0 ? "not measured" : `${(heap[heap.length - 1]![1] / 1e6).toFixed(1)} MB`}.`
  const [t1, h1] = measured[0]!
  const [t2, h2] = measured[measured.length - 1]!
  const perMin = slope(measured.map(([t]) => t / 60), measured.map(([, h]) => h / 1e6))
  return `Live heap after a full GC (once a minute): ${(h1 / 1e6).toFixed(1)} MB at ${(t1 / 60).toFixed(1)} min → ${(h2 / 1e6).toFixed(1)} MB at ${(t2 / 60).toFixed(1)} min of the gateway's life; slope ${perMin.toFixed(3)} MB/min (${(perMin * 60).toFixed(1)} MB/h). ` +
    `Samples (MB): ${measured.map(([, h]) => (h / 1e6).toFixed(1)).join(", ")}.`
}

interface Sample {
  readonly minute: number
  readonly rssMb: number
  readonly requests: number
  readonly load1: number
  readonly journal: string
}

export const soak = async (): Promise<string> => {
  const db = await startProxiedDatabase({ gatewayPool: false })
  const hosts = await startHosts({ AWOOOP_SOAK_GEMINI_KEY: GEMINI_KEY })
  const fakes = hosts.urls
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "awooop-soak-"))
  const closed = await new Promise<string>((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port
      s.close(() => resolve(`http://127.0.0.1:${port}`))
    })
  })
  fs.writeFileSync(path.join(dir, "gateway.yaml"), `
hosts:
  gcp-a: { url: "${fakes["gcp-a"]!}", slots: 8, protected: true }
  gcp-b: { url: "${fakes["gcp-b"]!}", slots: 8, protected: true }
  "111": { url: "${fakes["111"]!}", slots: 8 }
  dead:  { url: "${closed}", slots: 1 }
breaker: { consecutiveTimeouts: 2, cooldown: "5s" }
legacy: { projectId: awoooi, lanes: {} }
lanes:
  alert-fast:
    model: gemma3:4b
    reserved: { gcp-a: 4, gcp-b: 4 }
    route: [ { host: gcp-a, timeout: "1500ms" }, { host: gcp-b, timeout: "1500ms" }, { host: "111", timeout: "2s" } ]
  code-review:
    model: qwen2.5-coder:7b
    route: [ { host: "111", timeout: "3s" }, { host: gcp-b, timeout: "3s", when: unavailable } ]
  embedding:
    model: bge-m3
    route: [ { host: "111", timeout: "2s" }, { host: gcp-b, timeout: "2s", when: unavailable } ]
  alert-paid:
    model: gemma3:4b
    route: [ { host: dead, timeout: "1s" } ]
    paidFallback: [gemini]
providers:
  gemini: { kind: gemini, model: gemini-2.5-flash, apiKeyEnv: AWOOOP_SOAK_GEMINI_KEY, baseUrl: "${fakes.gemini!}", timeout: "3s", maxOutputTokens: 64 }
prices:
  gemini-2.5-flash: { input: 0.30, output: 2.50 }
budget: { hardKillUsd: 100, period: day }
server: { pollInterval: "2s", probeTimeout: "3s", drainTimeout: "5s" }
`)
  const heapFile = path.join(dir, "heap.txt")
  const env = {
    DATABASE_URL: db.proxiedUrl,
    AWOOOP_CONFIG: path.join(dir, "gateway.yaml"),
    AWOOOP_SPILL_DIR: path.join(dir, "spill"),
    AWOOOP_SOAK_GEMINI_KEY: GEMINI_KEY,
    // A full GC once a minute, then the live heap to heapFile (bench/soak-heap.mjs).
    NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ""} --expose-gc --import ${path.resolve(path.dirname(new URL(import.meta.url).pathname), "soak-heap.mjs")}`.trim(),
    SOAK_HEAP_FILE: heapFile
  }
  const gw: Child = await spawnGateway(env)
  stopWithUs(gw.process)
  const pid = gw.process.pid!
  const agent = new Agent({ connections: MAX_IN_FLIGHT, keepAliveTimeout: 10_000 })
  const faultEnv: Env = { hosts, db }
  // Let the poller see every host before the clock starts.
  for (let i = 0; i < 100; i++) {
    const h = await health(gw.url)
    if (["gcp-a", "gcp-b", "111"].every((n) => h.hosts[n]?.status === "up")) break
    await sleep(100)
  }

  // Warm-up: the same traffic without faults, not counted.
  {
    const warmStart = performance.now()
    let warmLaunched = 0
    let warmInFlight = 0
    while (performance.now() - warmStart < WARMUP_MS) {
      const due = Math.floor((RPS * (performance.now() - warmStart)) / 1000)
      while (warmLaunched < due) {
        warmLaunched++
        if (warmInFlight >= MAX_IN_FLIGHT) continue
        warmInFlight++
        void send(gw.url, pick(), { replies, agent, timeoutMs: 30_000 }).then(() => warmInFlight--)
      }
      await sleep(5)
    }
    while (warmInFlight > 0) await sleep(20)
  }

  const load0 = os.loadavg()
  const durationMs = MINUTES * 60_000
  const outcomes: Array<Outcome & { readonly phase: string }> = []
  const samples: Array<Sample> = []
  let launched = 0
  let notSent = 0
  let inFlight = 0
  let phaseIndex = -1
  let phase: Phase = none
  const phaseLog: Array<string> = []
  const t0 = performance.now()
  const elapsed = () => performance.now() - t0

  const sample = async () => {
    const j = await healthJournal(gw.url).catch(() => null)
    samples.push({
      minute: elapsed() / 60_000,
      rssMb: rssMb(pid),
      requests: outcomes.length,
      load1: os.loadavg()[0]!,
      journal: j === null ? "?" : `${j.status}${j.spilled > 0 ? ` (${j.spilled} spilled)` : ""}`
    })
  }
  await sample()
  let nextSample = SAMPLE_MS

  while (elapsed() < durationMs) {
    const now = elapsed()
    const wanted = Math.floor(now / PHASE_MS) % schedule.length
    if (wanted !== phaseIndex) {
      await phase.stop(faultEnv)
      phaseIndex = wanted
      phase = schedule[wanted]!
      await phase.start(faultEnv)
      phaseLog.push(`${(now / 60_000).toFixed(1)} min: ${phase.name}`)
    }
    if (now >= nextSample) {
      nextSample += SAMPLE_MS
      await sample()
    }
    const due = Math.floor((RPS * elapsed()) / 1000)
    while (launched < due) {
      launched++
      if (inFlight >= MAX_IN_FLIGHT) {
        notSent++
        continue
      }
      inFlight++
      const name = phase.name
      void send(gw.url, pick(), { replies, agent, timeoutMs: 30_000 }).then((o) => {
        outcomes.push({ ...o, phase: name })
        inFlight--
      })
    }
    await sleep(5)
  }
  await phase.stop(faultEnv)
  while (inFlight > 0) await sleep(20)
  await sample()
  const load1 = os.loadavg()

  // --- the journal audit, once everything has settled -----------------------------------------
  let settled = await healthJournal(gw.url)
  const settleStart = Date.now()
  while (!(settled.status === "ok" && settled.queued === 0 && settled.spilled === 0) && Date.now() - settleStart < 120_000) {
    await sleep(200)
    settled = await healthJournal(gw.url)
  }
  let expected = 0
  let found = 0
  for (let i = 0; i < 50; i++) {
    const a = await healthJournal(gw.url)
    found = Number((await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM step_journal`))[0]!.n)
    const b = await healthJournal(gw.url)
    expected = b.written
    if (a.written === b.written && b.queued === 0 && b.spilled === 0) break
    await sleep(200)
  }
  const structure = (await db.query<{ runs: number; gaps: number; terminals: number; notLast: number; notFirst: number; order: number; unsettled: number }>(`
    WITH e AS (
      SELECT stream_id, stream_position, type, global_position,
             lag(global_position) OVER (PARTITION BY stream_id ORDER BY stream_position) AS prev
      FROM step_journal WHERE stream_id LIKE 'run-%'
    ), s AS (
      SELECT stream_id, count(*) AS n, max(stream_position) AS maxpos,
             count(*) FILTER (WHERE type IN ('RunCompleted', 'RunFailed')) AS terminals,
             max(stream_position) FILTER (WHERE type IN ('RunCompleted', 'RunFailed')) AS lastterm,
             min(stream_position) FILTER (WHERE type = 'RunStarted') AS started,
             count(*) FILTER (WHERE prev IS NOT NULL AND prev > global_position) AS disorder,
             count(*) FILTER (WHERE type = 'AttemptStarted') - count(*) FILTER (WHERE type IN ('AttemptSucceeded', 'AttemptFailed')) AS open
      FROM e GROUP BY stream_id
    )
    SELECT count(*)::int AS runs,
           count(*) FILTER (WHERE n <> maxpos + 1)::int AS gaps,
           count(*) FILTER (WHERE terminals <> 1)::int AS terminals,
           count(*) FILTER (WHERE lastterm IS DISTINCT FROM maxpos)::int AS "notLast",
           count(*) FILTER (WHERE started IS DISTINCT FROM 0)::int AS "notFirst",
           count(*) FILTER (WHERE disorder > 0)::int AS "order",
           count(*) FILTER (WHERE open <> 0)::int AS unsettled
    FROM s`))[0]!
  const hostGaps = Number((await db.query<{ n: number }>(`
    SELECT count(*)::int AS n FROM (SELECT stream_id FROM step_journal WHERE stream_id NOT LIKE 'run-%'
      GROUP BY stream_id HAVING count(*) <> max(stream_position) + 1) s`))[0]!.n)
  // Every caller's run: exactly one, and its terminal event agrees with what the caller got.
  const terminals = await db.query<{ traceId: string; type: string; status: string | null; endpoint: string | null; runs: number }>(`
    SELECT trace_id AS "traceId", min(type) AS type, min(data->>'status') AS status, min(data->>'endpoint') AS endpoint,
           count(DISTINCT stream_id)::int AS runs
    FROM step_journal WHERE stream_id LIKE 'run-%' AND type IN ('RunCompleted', 'RunFailed') GROUP BY trace_id`)
  const byTrace = new Map(terminals.map((t) => [t.traceId, t]))
  let disagree = 0
  const disagreements: Array<string> = []
  for (const o of outcomes) {
    const t = byTrace.get(o.traceId)
    const ok = t !== undefined && t.runs === 1 && (
      o.kind === "answer" ? t.type === "RunCompleted" && t.endpoint === o.endpoint
        : o.kind === "error" ? t.type === "RunFailed" && Number(t.status) === (o.midStream || o.status === 200 ? 502 : o.status)
        : true
    )
    if (!ok) {
      disagree++
      if (disagreements.length < 5) disagreements.push(`${o.lane} ${o.kind} ${o.status}: journal ${t === undefined ? "has no terminal event" : `${t.type} ${t.status ?? t.endpoint} (${t.runs} runs)`}`)
    }
  }

  // Diagnostics: what the journal says about the requests that went wrong and the unsettled runs.
  const diagnostics: Array<string> = []
  const typesOf = async (where: string, param: string) =>
    (await db.query<{ type: string; data: Record<string, unknown> }>(
      `SELECT type, data FROM step_journal WHERE ${where} = $1 ORDER BY stream_id, stream_position`,
      [param]
    )).map((e) => e.type === "AttemptFailed" || e.type === "RunFailed" || e.type === "HostSkipped"
      ? `${e.type}(${String(e.data.host ?? e.data.error ?? "")} ${String(e.data.kind ?? e.data.status ?? e.data.reason ?? "")})`
      : e.type).join(" → ")
  for (const o of outcomes.filter((o) => o.kind === "wrong" || o.kind === "transport").slice(0, 10)) {
    diagnostics.push(`${o.phase}: ${o.lane} ${o.operation}${o.stream ? " stream" : ""} ${o.kind} after ${o.ms.toFixed(0)} ms (${o.error}); journal: ${await typesOf("trace_id", o.traceId) || "nothing"}`)
  }
  const unsettledRuns = await db.query<{ streamId: string }>(`
    SELECT stream_id AS "streamId" FROM step_journal WHERE stream_id LIKE 'run-%' GROUP BY stream_id
    HAVING count(*) FILTER (WHERE type = 'AttemptStarted') <> count(*) FILTER (WHERE type IN ('AttemptSucceeded', 'AttemptFailed'))
    LIMIT 5`)
  for (const r of unsettledRuns) diagnostics.push(`unsettled attempt in ${r.streamId}: ${await typesOf("stream_id", r.streamId)}`)

  const heap = fs.existsSync(heapFile)
    ? fs.readFileSync(heapFile, "utf8").trim().split("\n").map((l) => l.split(" ").map(Number) as [number, number])
    : []
  gw.process.kill("SIGTERM")
  await exited(gw.process)
  await hosts.close()
  await agent.close()
  if (process.env.SOAK_KEEP_DB !== "1") await db.close()
  fs.rmSync(dir, { recursive: true, force: true })

  // --- the report -------------------------------------------------------------------------------
  const n = outcomes.length
  const count = (f: (o: Outcome) => boolean) => outcomes.filter(f).length
  const answers = count((o) => o.kind === "answer")
  const errors = count((o) => o.kind === "error")
  const wrong = count((o) => o.kind === "wrong")
  const transport = count((o) => o.kind === "transport")
  const pct = (k: number, of = n) => `${((100 * k) / Math.max(1, of)).toFixed(2)}%`
  const ms = (xs: Array<number>) => xs.sort((a, b) => a - b)
  const lat = (f: (o: Outcome & { phase: string }) => boolean) => {
    const xs = ms(outcomes.filter(f).map((o) => o.ms))
    return `${xs.length} | ${percentile(xs, 0.5).toFixed(1)} | ${percentile(xs, 0.99).toFixed(1)} | ${(xs[xs.length - 1] ?? NaN).toFixed(1)}`
  }
  const causes = new Map<string, number>()
  for (const o of outcomes) if (o.kind !== "answer") causes.set(causeOf(o), (causes.get(causeOf(o)) ?? 0) + 1)
  const phases = new Map<string, { requests: number; answers: number; errors: number; wrong: number }>()
  for (const o of outcomes) {
    const p = phases.get(o.phase) ?? { requests: 0, answers: 0, errors: 0, wrong: 0 }
    p.requests++
    if (o.kind === "answer") p.answers++
    else if (o.kind === "error") p.errors++
    else p.wrong++
    phases.set(o.phase, p)
  }
  const steady = samples.filter((s) => s.minute >= 1)
  const rssSlope = slope(steady.map((s) => s.minute), steady.map((s) => s.rssMb))
  const first = samples.find((s) => s.minute >= 1) ?? samples[0]!
  const last = samples[samples.length - 1]!
  const peak = Math.max(...samples.map((s) => s.rssMb))
  const loadDuring = samples.map((s) => s.load1)
  const journalOk = expected === found && structure.gaps + structure.terminals + structure.notLast + structure.notFirst + structure.order + structure.unsettled + hostGaps === 0 && disagree === 0

  const lines: Array<string> = []
  lines.push(
    `Command: \`SOAK_MINUTES=${MINUTES} SOAK_RPS=${RPS} npm run soak\` (after a ${WARMUP_MS / 1000} s unmeasured warm-up) — the gateway (src/main.ts, own process, production journal settings), fake Ollama hosts gcp-a, gcp-b, 111 and a fake Gemini on loopback, Postgres 15 through a PgProxy; open-loop load of ${RPS} req/s (at most ${MAX_IN_FLIGHT} in flight), a fault phase every ${PHASE_MS / 1000} s.`,
    "",
    `Machine: ${os.cpus().length} cores (${os.cpus()[0]?.model ?? "?"}), shared with other developers' test runs: load average ${load0.map((l) => l.toFixed(2)).join(" / ")} (1/5/15 min) at the start, ${load1.map((l) => l.toFixed(2)).join(" / ")} at the end, 1-min load ${Math.min(...loadDuring).toFixed(1)}–${Math.max(...loadDuring).toFixed(1)} during the run.`,
    "",
    "| duration | requests | achieved req/s | correct answers | correct errors | wrong | transport failures | not sent (in-flight cap) |",
    "|---|---|---|---|---|---|---|---|",
    `| ${MINUTES} min | ${n} | ${(n / (durationMs / 1000)).toFixed(1)} | ${answers} (${pct(answers)}) | ${errors} (${pct(errors)}) | ${wrong} | ${transport} | ${notSent} |`,
    "",
    "Errors by cause (every one a well-formed Ollama error the journal agrees with):",
    "",
    "| cause | requests | rate |",
    "|---|---|---|",
    ...[...causes.entries()].sort((a, b) => b[1] - a[1]).map(([c, k]) => `| ${c} | ${k} | ${pct(k)} |`),
    "",
    "Latency, ms (client side, whole response):",
    "",
    "| requests | n | p50 | p99 | max |",
    "|---|---|---|---|---|",
    `| all | ${lat(() => true)} |`,
    `| answers | ${lat((o) => o.kind === "answer")} |`,
    `| answers in no-fault phases | ${lat((o) => o.kind === "answer" && o.phase === none.name)} |`,
    `| errors | ${lat((o) => o.kind === "error")} |`,
    "",
    "By fault phase:",
    "",
    "| phase | requests | answers | errors | wrong |",
    "|---|---|---|---|---|",
    ...schedule.filter((p, i, all) => all.findIndex((q) => q.name === p.name) === i).map((p) => {
      const s = phases.get(p.name) ?? { requests: 0, answers: 0, errors: 0, wrong: 0 }
      return `| ${p.name} | ${s.requests} | ${s.answers} | ${s.errors} | ${s.wrong} |`
    }),
    "",
    `Gateway RSS: ${first.rssMb.toFixed(1)} MB at ${first.minute.toFixed(1)} min → ${last.rssMb.toFixed(1)} MB at ${last.minute.toFixed(1)} min, peak ${peak.toFixed(1)} MB; least-squares slope after the first minute ${rssSlope.toFixed(2)} MB/min (${(rssSlope * 60).toFixed(1)} MB/h).`,
    "",
    heapLine(heap, WARMUP_MS / 1000),
    "",
    "| minute | RSS MB | requests so far | 1-min load | journal |",
    "|---|---|---|---|---|",
    ...samples.filter((s, i) => i === 0 || i === samples.length - 1 || Math.floor(s.minute) !== Math.floor(samples[i - 1]!.minute))
      .map((s) => `| ${s.minute.toFixed(1)} | ${s.rssMb.toFixed(1)} | ${s.requests} | ${s.load1.toFixed(2)} | ${s.journal} |`),
    "",
    `Journal audit: expected ${expected} events (what the gateway says it wrote) = found ${found} rows in step_journal; ${structure.runs} run streams: ` +
      `${structure.gaps} with gaps, ${structure.terminals} without exactly one terminal event, ${structure.notLast} with events after it, ` +
      `${structure.order} out of commit order, ${structure.unsettled} with an unsettled attempt; ${hostGaps} host streams with gaps; ` +
      `${disagree} of ${n} callers whose run disagrees with what they got. ${journalOk ? "OK: nothing lost, nothing doubled." : "MISMATCH"}`,
    ...disagreements.map((d) => `  - ${d}`),
    ...diagnostics.map((d) => `  - ${d}`),
    "",
    `Fault schedule (cycled): ${schedule.map((p) => p.name).join("; ")}.`
  )
  if (process.env.SOAK_VERBOSE === "1") lines.push("", ...phaseLog)
  return lines.join("\n")
}

if (import.meta.url === `file://${process.argv[1]}`) {
  console.log(`## Soak (issue 7)\n`)
  console.log(await soak())
  process.exit(0)
}
