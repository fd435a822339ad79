/**
 * The production process: the compiled gateway (`node dist/main.js`, built once here with
 * `scripts/build.mjs`, as `npm start` does) as its own OS process, stopped the ways a terminal and a
 * supervisor stop it — Ctrl-C to `npm start`'s process group, SIGTERM to `npm`, SIGTERM to node —
 * with a slow streaming request in flight: the request completes, new requests get 503, the process
 * exits only after the journal is flushed, and the run's terminal event is in the journal. A request
 * the drain timeout cuts still gets its terminal event. Also: the JSON log lines (one per request,
 * one per host state change, no prompt, no key), health for a paid provider without its key, the
 * audit CLI refusing an embedded store a running gateway holds, and the compiled client export.
 */
import { execFile, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { ensureDeclarations, ensureDist } from "./support/Dist.ts"
import { type FakeOllama, fakeText, startFakeOllama } from "./support/FakeOllama.ts"
import { type Child, closedPortUrl, exited, type ProxiedDatabase, spawnGateway, startProxiedDatabase, waitFor } from "./support/FaultKit.ts"
import { pgliteDataDir } from "./support/PgliteDataDir.ts"
import { newTraceId } from "./support/TestGateway.ts"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const CHUNKS = 8
const SECRET_PROMPT = `do-not-log-${crypto.randomUUID()}`
const SECRET_KEY = `sk-do-not-log-${crypto.randomUUID()}`

let db: ProxiedDatabase
/** gcp-a for the drain scenarios: it drips, so a request is in flight when the signal comes. */
let fake: FakeOllama
/** gcp-a for the logs and health checks: it answers at once (the drip fake keeps its mode). */
let quickFake: FakeOllama
let dir: string
let deadUrl: string
/** The .d.ts files (tsc, ~17 s of CPU when stale): written while the gateways below run, awaited by the export check. */
let declarations: Promise<unknown> = Promise.resolve()
const children: Array<Child> = []
/** Children started in a process group of their own (npm start): afterAll kills the whole group. */
const groups = new Set<Child>()

/**
 * A generous probe timeout: the drain scenarios start their gateways side by side, next to another suite, and a
 * probe answered late on such a loaded machine must not mark gcp-a down under a request (a 503).
 */
const writeConfig = (name: string, drainTimeout: string, host: FakeOllama = fake): string => {
  const file = path.join(dir, `${name}.yaml`)
  fs.writeFileSync(file, `
hosts:
  dead:  { url: "${deadUrl}", slots: 1 }
  gcp-a: { url: "${host.url}", slots: 4 }
legacy: { projectId: awoooi, lanes: {} }
lanes:
  alert-fast:
    model: gemma3:4b
    route: [ { host: dead, timeout: "10s" }, { host: gcp-a, timeout: "10s" } ]
  paid-emergency:
    paid: [gemini]
providers:
  gemini: { kind: gemini, model: gemini-2.5-flash, apiKeyEnv: AWOOOP_PROCESS_TEST_GEMINI_KEY }
prices:
  gemini-2.5-flash: { input: 0.30, output: 2.50 }
budget: { hardKillUsd: 5, period: day }
server: { pollInterval: "500ms", probeTimeout: "10s", drainTimeout: "${drainTimeout}" }
`)
  return file
}

const env = (config: string, database: ProxiedDatabase = db): Record<string, string> => ({
  DATABASE_URL: database.directUrl,
  AWOOOP_CONFIG: config,
  AWOOOP_SPILL_DIR: path.join(dir, "spill"),
  AWOOOP_LOG_FORMAT: "json",
  AWOOOP_LOG_LEVEL: "info",
  // A key in the environment that must never reach a log line (it is not the provider's variable).
  AWOOOP_PROCESS_TEST_UNRELATED_KEY: SECRET_KEY
})

const node = [process.execPath, "--enable-source-maps", "dist/main.js"] as const
const npmStart = ["npm", "start", "--silent"] as const

const start = async (config: string, command: readonly [string, ...Array<string>], detached = false, database: ProxiedDatabase = db) => {
  const child = await spawnGateway(env(config, database), 90_000, { command, detached })
  children.push(child)
  if (detached) groups.add(child)
  await waitFor("gcp-a to be polled up", async () => {
    const h = (await (await fetch(`${child.url}/awooop/health`)).json()) as { hosts: Record<string, { status: string }> }
    return h.hosts["gcp-a"]?.status === "up" && h.hosts.dead?.status === "down"
  }, 20_000)
  return child
}

/** A streaming chat that drips: resolves once its first chunk is in, with the rest of the body to come. */
const slowChat = async (url: string) => {
  const traceId = newTraceId()
  const res = await fetch(`${url}/api/chat`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-awooop-lane": "alert-fast", "x-awooop-trace-id": traceId },
    body: JSON.stringify({ model: "gemma3:4b", messages: [{ role: "user", content: "slow one" }], stream: true })
  })
  expect(res.status).toBe(200)
  const reader = res.body!.getReader()
  const decoder = new TextDecoder()
  let text = (decoder.decode((await reader.read()).value))
  const rest = (async () => {
    try {
      for (;;) {
        const { done, value } = await reader.read()
        if (done) return { text, broken: false }
        text += decoder.decode(value, { stream: true })
      }
    } catch {
      return { text, broken: true }
    }
  })()
  return { traceId, rest }
}

const chunksOf = (ndjson: string) =>
  ndjson.split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l) as { message?: { content?: string }; done?: boolean; error?: string })

const runEvents = async (traceId: string, database: ProxiedDatabase = db) =>
  (await database.query<{ type: string }>(
    "select type from step_journal where trace_id = $1 and stream_id like 'run-%' order by global_position",
    [traceId]
  )).map((r) => r.type)

/** The JSON lines of the child's output (npm's own lines, if any, are not JSON and are left out). */
const jsonLines = (child: Child) =>
  child.output().split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as Record<string, unknown>)

const signalled = (child: Child) =>
  waitFor("the gateway to log the signal", () => jsonLines(child).some((l) => l.event === "Stopping"), 10_000)

/** Once the drain started: a new request gets 503. */
const expectRefused = async (url: string) => {
  let status = 0
  await waitFor("a new request to get 503", async () => {
    status = (await fetch(`${url}/api/tags`)).status
    return status === 503
  }, 5_000)
  const chat = await fetch(`${url}/api/chat`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-awooop-lane": "alert-fast" },
    body: JSON.stringify({ model: "gemma3:4b", messages: [{ role: "user", content: "too late" }], stream: false })
  })
  expect(chat.status).toBe(503)
  expect(((await chat.json()) as { error: string }).error).toMatch(/shutting down/i)
}

beforeAll(async () => {
  // What `npm start` does first (prestart): compile src/ to dist/ unless it is up to date (under the
  // tests' build lock: another suite may be building it right now).
  await ensureDist()
  // A rejection is kept for the test that awaits it (not unhandled meanwhile).
  declarations = ensureDeclarations().then(() => null, (error: unknown) => error)
  db = await startProxiedDatabase({ gatewayPool: false })
  fake = await startFakeOllama({ name: "gcp-a", mode: "drip", delayMs: 250, chunks: CHUNKS })
  quickFake = await startFakeOllama({ name: "gcp-a" })
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "awooop-process-"))
  deadUrl = await closedPortUrl()
}, 240_000)

afterAll(async () => {
  for (const c of children) {
    // A failed npm start scenario: npm's node child (same group) would outlive a SIGKILL to npm alone.
    if (groups.has(c)) {
      try {
        process.kill(-c.process.pid!, "SIGKILL")
      } catch { /* the group is gone */ }
    }
    if (c.process.exitCode === null && c.process.signalCode === null) {
      c.process.kill("SIGKILL")
      await exited(c.process)
    }
  }
  await fake?.stop()
  await quickFake?.stop()
  await db?.close()
  if (dir) fs.rmSync(dir, { recursive: true, force: true })
})

describe("stopping the compiled gateway with a request in flight", () => {
  const cases = [
    // Node gets SIGINT from the terminal and npm's forwarded copy; on a busy machine the kernel may
    // merge the two when the second arrives before the first is delivered, so one or two are logged.
    { name: "Ctrl-C on npm start (SIGINT to the process group: npm forwards it, node gets it twice)", command: npmStart, detached: true, stop: (c: Child) => process.kill(-c.process.pid!, "SIGINT"), again: undefined },
    { name: "SIGTERM to npm start's npm process (a supervisor's main pid)", command: npmStart, detached: true, stop: (c: Child) => c.process.kill("SIGTERM"), again: undefined },
    // A second signal well into the drain (an impatient operator): logged, and it changes nothing.
    { name: "SIGTERM to node dist/main.js, then SIGINT during the drain", command: node, detached: false, stop: (c: Child) => c.process.kill("SIGTERM"), again: (c: Child) => c.process.kill("SIGINT") }
  ] as const

  // Concurrently: most of each scenario is waiting (start-up, the host's first poll, the dripping
  // answer, the drain). Each has its own process, config file and database: a gateway starting on a
  // database closes the open runs of every other instance (Orphans.ts), a neighbour's slow one too.
  const databases: Array<ProxiedDatabase> = []
  const ownDatabase = async () => {
    const database = await startProxiedDatabase({ gatewayPool: false })
    databases.push(database)
    return database
  }
  afterAll(async () => {
    await Promise.all(databases.map((d) => d.close()))
  })

  cases.forEach((scenario, i) => {
    it.concurrent(scenario.name, async () => {
      const own = await ownDatabase()
      const gw = await start(writeConfig(`drain-${i}`, "20s"), scenario.command, scenario.detached, own)
      const slow = await slowChat(gw.url)
      scenario.stop(gw)
      await signalled(gw)
      await expectRefused(gw.url)
      if (scenario.again !== undefined) {
        scenario.again(gw)
        await waitFor("the second signal to be logged", () => jsonLines(gw).filter((l) => l.event === "Stopping").length === 2, 5_000)
      }

      const { text, broken } = await slow.rest
      expect(broken).toBe(false)
      const chunks = chunksOf(text)
      expect(chunks.at(-1)?.done).toBe(true)
      expect(chunks.map((c) => c.message?.content ?? "").join("")).toBe(fakeText("gcp-a", CHUNKS))

      await exited(gw.process)
      expect(gw.process.exitCode).toBe(0)
      // The journal was flushed before the exit: the run's terminal event is there, and last.
      const events = await runEvents(slow.traceId, own)
      expect(events[0]).toBe("RunStarted")
      expect(events.at(-1)).toBe("RunCompleted")
      // One process did the work: node exited after its flush (the last line), npm only waited for it.
      const lines = jsonLines(gw)
      expect(lines.at(-1)?.event).toBe("Stopped")
      // Every signal node got is logged; only the first one stops, later ones say so and change nothing.
      const stopping = lines.filter((l) => l.event === "Stopping").map((l) => String(l.msg).includes("already stopping"))
      expect(stopping[0]).toBe(false)
      expect(stopping.slice(1).every((again) => again)).toBe(true)
      if (scenario.again !== undefined) expect(stopping).toEqual([false, true])
      const request = lines.find((l) => l.event === "Request" && l.traceId === slow.traceId)
      expect(request).toMatchObject({ status: 200, route: "/api/chat", endpoint: "gcp-a" })
      expect(lines.indexOf(request!)).toBeLessThan(lines.length - 1)
    }, 150_000)
  })

  it.concurrent("a request the drain timeout cuts still gets its terminal event, and the process still exits after the flush", async () => {
    const own = await ownDatabase()
    const gw = await start(writeConfig("cut", "300ms"), node, false, own)
    const slow = await slowChat(gw.url)
    gw.process.kill("SIGTERM")
    const { text, broken } = await slow.rest
    // Cut: the stream ends without its done chunk.
    expect(broken || chunksOf(text).at(-1)?.done !== true).toBe(true)
    await exited(gw.process)
    expect(gw.process.exitCode).toBe(0)
    const events = await runEvents(slow.traceId, own)
    expect(events.at(-1)).toBe("RunFailed")
    expect(events.filter((t) => t === "RunCompleted" || t === "RunFailed")).toHaveLength(1)
    const lines = jsonLines(gw)
    expect(lines.some((l) => typeof l.msg === "string" && l.msg.includes("drain timeout"))).toBe(true)
    expect(lines.find((l) => l.event === "Request" && l.traceId === slow.traceId)).toMatchObject({ aborted: true })
    expect(lines.at(-1)?.event).toBe("Stopped")
  }, 150_000)
})

// After the drain scenarios, not beside them: PGlite's start is the heaviest CPU here. (Session 9 ran
// the three sections side by side: 30 → 24 s for this file, no shorter suite on a CPU-bound machine,
// and burstier CPU for the in-process gateways' 300 ms windows in the other worker.)
describe("the compiled audit CLI and the embedded store", () => {
  const cli = (dataDir: string) =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, ["dist/replay/cli.js", "status"], {
        cwd: root,
        env: { ...process.env, DATABASE_URL: "", AWOOOP_DATA_DIR: dataDir },
        stdio: ["ignore", "pipe", "pipe"]
      })
      let stdout = ""
      let stderr = ""
      child.stdout.on("data", (d: Buffer) => { stdout += d.toString() })
      child.stderr.on("data", (d: Buffer) => { stderr += d.toString() })
      child.on("exit", (code) => resolve({ code, stdout, stderr }))
    })

  it("refuses, naming the holder, a store a running gateway holds; takes over the lock of a killed one", async () => {
    // An initialised store (initdb done once per machine, test/support/PgliteDataDir.ts): what is
    // checked here is the lock between processes, not PGlite's first start.
    const dataDir = await pgliteDataDir(path.join(dir, "pglite"))
    const gw = await spawnGateway({ ...env(writeConfig("embedded", "2s")), DATABASE_URL: "", AWOOOP_DATA_DIR: dataDir }, 120_000, { command: node })
    children.push(gw)
    const refused = await cli(dataDir)
    expect(refused.code).toBe(70)
    // One line that says what to do, not a stack trace.
    expect(refused.stderr.trim()).toMatch(/^journal: the embedded store \S+ is in use by process \d+ [^\n]*$/)
    expect(refused.stderr).toContain(`in use by process ${gw.process.pid}`)
    expect(refused.stderr).toContain("DATABASE_URL")
    // SIGKILL leaves the lock file behind; its pid is gone, so the CLI takes the store over.
    gw.process.kill("SIGKILL")
    await exited(gw.process)
    expect(fs.existsSync(path.join(dataDir, "awooop.lock"))).toBe(true)
    const status = await cli(dataDir)
    expect(status.stderr).not.toContain("in use by process")
    expect(status.code).toBe(0)
    expect(fs.existsSync(path.join(dataDir, "awooop.lock"))).toBe(false)
  }, 180_000)

  it("the typed client ships compiled: the package export resolves to dist/ with declarations", async () => {
    const failed = await declarations
    if (failed !== null) throw failed
    // Not spawnSync: that would stop this worker's event loop, which serves the suite's fake hosts.
    const probe = await new Promise<{ stdout: string; stderr: string }>((resolve, reject) => {
      execFile(process.execPath, ["--input-type=module", "-e", "const m = await import('awooop-inference-gateway/client'); console.log(typeof m.GatewayClient, import.meta.resolve('awooop-inference-gateway/client'))"], { cwd: root, encoding: "utf8" }, (error, stdout, stderr) => error === null ? resolve({ stdout, stderr }) : reject(error))
    })
    expect(probe.stderr).toBe("")
    expect(probe.stdout).toMatch(/^function file:\/\/.*\/dist\/client\/index\.js/)
    expect(fs.existsSync(path.join(root, "dist/client/index.d.ts"))).toBe(true)
    expect(fs.existsSync(path.join(root, "dist/replay/cli.d.ts"))).toBe(true)
  }, 120_000)
})

describe("logs and health of the running process", () => {
  let gw: Child

  beforeAll(async () => {
    gw = await start(writeConfig("logs", "2s", quickFake), node)
  }, 120_000)

  afterAll(async () => {
    gw.process.kill("SIGTERM")
    await exited(gw.process)
  })

  it("one JSON line per request with its trace, run, project, lane, route, endpoint, status, duration and fallback reason; none holds a prompt or a key", async () => {
    const post = (path: string, body: unknown, headers: Record<string, string>) =>
      fetch(`${gw.url}${path}`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${SECRET_KEY}`, ...headers },
        body: JSON.stringify(body)
      })
    const answered = newTraceId()
    const r1 = await post("/api/generate", { model: "gemma3:4b", prompt: SECRET_PROMPT, stream: false }, {
      "x-awooop-lane": "alert-fast",
      "x-awooop-project-id": "proc-test",
      "x-awooop-trace-id": answered
    })
    expect(r1.status).toBe(200)
    await r1.arrayBuffer()
    const openAi = newTraceId()
    const r2 = await post("/v1/chat/completions", { model: "gemma3:4b", messages: [{ role: "user", content: SECRET_PROMPT }] }, {
      "x-awooop-lane": "alert-fast",
      "x-awooop-trace-id": openAi
    })
    expect(r2.status).toBe(200)
    await r2.arrayBuffer()
    const r3 = await post("/api/chat", { model: "gemma3:4b", messages: [{ role: "user", content: SECRET_PROMPT }] }, {
      "x-awooop-lane": "no-such-lane"
    })
    expect(r3.status).toBe(400)
    await r3.arrayBuffer()
    const keyless = newTraceId()
    const r4 = await post("/api/generate", { model: "gemini-2.5-flash", prompt: SECRET_PROMPT, stream: false }, {
      "x-awooop-lane": "paid-emergency",
      "x-awooop-trace-id": keyless
    })
    expect(r4.status).toBe(503)
    await r4.arrayBuffer()

    await waitFor("four request lines", () => jsonLines(gw).filter((l) => l.event === "Request").length >= 4, 5_000)
    const out = gw.output()
    const lines = out.split("\n").filter((l) => l.trim() !== "")
    // Every line the process printed is one JSON object with a time, a level and a message.
    for (const line of lines) {
      const parsed = JSON.parse(line) as Record<string, unknown>
      expect(typeof parsed.time).toBe("string")
      expect(Number.isNaN(Date.parse(parsed.time as string))).toBe(false)
      expect(["trace", "debug", "info", "warn", "error", "fatal"]).toContain(parsed.level)
      expect(typeof parsed.msg).toBe("string")
    }
    expect(out).not.toContain(SECRET_PROMPT)
    expect(out).not.toContain(SECRET_KEY)

    const requests = jsonLines(gw).filter((l) => l.event === "Request")
    const byTrace = (t: string) => requests.find((l) => l.traceId === t)
    for (const l of requests) {
      for (const field of ["traceId", "runId", "project", "caller", "lane", "method", "route", "endpoint", "status", "durationMs", "fallbackReason"]) {
        expect(l, `field ${field} in ${JSON.stringify(l)}`).toHaveProperty(field)
      }
      expect(typeof l.durationMs).toBe("number")
    }
    expect(byTrace(answered)).toMatchObject({
      level: "info", method: "POST", route: "/api/generate", status: 200, project: "proc-test", lane: "alert-fast",
      endpoint: "gcp-a", fallbackReason: "dead host-down", error: null
    })
    expect(byTrace(answered)!.runId).toMatch(/^[0-9a-f-]{36}$/)
    expect(byTrace(openAi)).toMatchObject({ route: "/v1/chat/completions", status: 200, endpoint: "gcp-a", project: "awoooi" })
    // Refused before its caller context resolved: no trace or run to name, the error says why.
    expect(requests.find((l) => l.status === 400)).toMatchObject({ route: "/api/chat", traceId: null, runId: null, error: "UnknownLane" })
    expect(byTrace(keyless)).toMatchObject({ status: 503, lane: "paid-emergency", error: "PaidProvidersFailed", level: "warn" })

    // State changes: the hosts' first polls.
    const states = jsonLines(gw).filter((l) => l.event === "HostUp" || l.event === "HostDown")
    expect(states).toEqual(expect.arrayContaining([
      expect.objectContaining({ event: "HostUp", host: "gcp-a", level: "info" }),
      expect.objectContaining({ event: "HostDown", host: "dead", level: "warn" })
    ]))
  })

  it("a paid provider without its API key is unavailable, and the lane relying on it is not safe", async () => {
    const health = (await (await fetch(`${gw.url}/awooop/health`)).json()) as {
      summary: Array<string>
      providers: Record<string, { available: boolean; reason: string | null }>
      lanes: Record<string, { safe: boolean; reasons: Array<string> }>
    }
    expect(health.providers.gemini).toMatchObject({ available: false, reason: "AWOOOP_PROCESS_TEST_GEMINI_KEY is not set" })
    expect(health.lanes["paid-emergency"]!.safe).toBe(false)
    expect(health.lanes["paid-emergency"]!.reasons.join("; ")).toMatch(/gemini unavailable \(AWOOOP_PROCESS_TEST_GEMINI_KEY is not set\)/)
    expect(health.lanes["alert-fast"]!.safe).toBe(true)
    expect(health.summary).toContain("paid provider gemini: unavailable — AWOOOP_PROCESS_TEST_GEMINI_KEY is not set")
  })
})
