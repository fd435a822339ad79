/**
 * Durable async runs across a crash: a real gateway process (`node dist/main.js`, a temp
 * config, DATABASE_URL of a fresh test database) is killed with SIGKILL while a run's attempt hangs
 * on its host; a new process picks the run up from the journal with its attempt count, and the run
 * finishes exactly once. A third start (after a graceful stop) runs nothing again.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { mkdtemp, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import pg from "pg"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { ensureDist, gatewayCommand } from "./support/Dist.ts"
import { type FakeOllama, startFakeOllama } from "./support/FakeOllama.ts"
import { freePort } from "./support/FreePort.ts"
import { createDatabaseStatement, defaultTestDatabaseUrl, testDatabaseName } from "./support/TestDatabase.ts"

const root = fileURLToPath(new URL("..", import.meta.url))
const adminUrl = process.env.TEST_DATABASE_URL ?? defaultTestDatabaseUrl
const dbName = testDatabaseName("t")
const dbUrl = (() => {
  const u = new URL(adminUrl)
  u.pathname = `/${dbName}`
  return u.toString()
})()

const admin = async (statement: string) => {
  const client = new pg.Client({ connectionString: adminUrl })
  await client.connect()
  try {
    await client.query(statement)
  } finally {
    await client.end()
  }
}

const query = async <T>(text: string, params: Array<unknown> = []): Promise<Array<T>> => {
  const client = new pg.Client({ connectionString: dbUrl })
  await client.connect()
  try {
    return (await client.query(text, params)).rows as Array<T>
  } finally {
    await client.end()
  }
}

const until = async <T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 30_000): Promise<T> => {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await probe().catch(() => undefined)
    if (value !== undefined && value !== false) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

let dir: string
let fake: FakeOllama
let port: number
let configPath: string
const children: Array<ChildProcess> = []
const logs: Array<string> = []

const startGateway = async () => {
  await ensureDist()
  const child = spawn(gatewayCommand[0], gatewayCommand.slice(1), {
    cwd: root,
    env: { ...process.env, DATABASE_URL: dbUrl, AWOOOP_CONFIG: configPath, PORT: String(port), HOST: "127.0.0.1" },
    stdio: ["ignore", "pipe", "pipe"]
  })
  children.push(child)
  child.stdout!.on("data", (d: Buffer) => logs.push(d.toString()))
  child.stderr!.on("data", (d: Buffer) => logs.push(d.toString()))
  const started = Date.now()
  const ready = await until("the gateway to listen", async () =>
    child.exitCode !== null ? "exited" : (await fetch(`http://127.0.0.1:${port}/`)).ok && "listening", 90_000)
  if (ready === "exited") throw new Error(`the gateway exited at start (code ${child.exitCode}):\n${logs.join("")}`)
  return { child, startMs: Date.now() - started }
}

const exited = (child: ChildProcess) =>
  new Promise<void>((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve() : child.once("exit", () => resolve())))

const url = (path: string) => `http://127.0.0.1:${port}${path}`

interface RunView {
  status: string
  attempts: number
  attemptLog: Array<{ attempt: number; host: string; outcome: string }>
  result: Record<string, unknown> | null
}
const getRun = async (runId: string) => (await (await fetch(url(`/awooop/runs/${runId}`))).json()) as RunView

const generates = () => fake.requests.filter((r) => r.path === "/api/generate")

beforeAll(async () => {
  await admin(createDatabaseStatement(dbName))
  dir = await mkdtemp(Path.join(tmpdir(), "awooop-restart-"))
  fake = await startFakeOllama({ name: "111", mode: "hang" })
  port = await freePort()
  configPath = Path.join(dir, "gateway.json")
  await writeFile(configPath, JSON.stringify({
    hosts: { "111": { url: fake.url, slots: 2 } },
    lanes: { "deep-rca": { model: "qwen2.5:14b", async: true, route: [{ host: "111", timeout: "60s" }] } },
    server: { pollInterval: "500ms", probeTimeout: "1s", drainTimeout: "1s" }
  }))
})

afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL")
  await Promise.all(children.map(exited))
  await fake?.stop()
  await rm(dir, { recursive: true, force: true })
  await admin(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`)
})

describe("a gateway killed mid-run", () => {
  it("resumes the run after a restart, from the journal, with its attempt count; it finishes once", async () => {
    const first = await startGateway()
    const submitted = await fetch(url("/api/generate"), {
      method: "POST",
      headers: { "content-type": "application/json", "x-awooop-lane": "deep-rca" },
      body: JSON.stringify({ model: "qwen2.5:14b", prompt: "root cause of the 03:12 outage?" })
    })
    expect(submitted.status).toBe(202)
    const { runId } = (await submitted.json()) as { runId: string }

    // Attempt 1 is on the host (hanging there), and journaled.
    await until("attempt 1 running", async () => {
      const run = await getRun(runId)
      return run.status === "running" && run.attempts === 1 && fake.inFlight() === 1
    })
    first.child.kill("SIGKILL")
    await exited(first.child)
    expect(first.child.signalCode).toBe("SIGKILL")
    fake.setMode("ok")

    const second = await startGateway()
    const done = await until("the run to succeed", async () => {
      const run = await getRun(runId)
      return run.status === "succeeded" ? run : undefined
    })
    expect(done.attempts).toBe(2)
    expect(done.attemptLog).toMatchObject([
      { attempt: 1, host: "111", outcome: "interrupted" },
      { attempt: 2, host: "111", outcome: "succeeded" }
    ])
    expect(done.result).toMatchObject({ model: "qwen2.5:14b", response: "[111] hello world", done: true })
    expect(generates()).toHaveLength(2)

    const events = await query<{ type: string; data: Record<string, unknown> }>(
      "SELECT type, data FROM step_journal WHERE stream_id = $1 ORDER BY stream_position", [`run-${runId}`]
    )
    const types = events.map((e) => e.type)
    expect(types).toEqual([
      "RunStarted", "RunDequeued", "RouteDecided", "AttemptStarted",
      "RunRequeued", "RunDequeued", "RouteDecided", "AttemptStarted", "AttemptSucceeded", "RunCompleted"
    ])
    expect(events.filter((e) => e.type === "AttemptStarted").map((e) => e.data.attempt)).toEqual([1, 2])
    expect(events[4]!.data).toMatchObject({ attemptsSoFar: 1, was: "running" })

    // A graceful stop and a third start: nothing is run again.
    second.child.kill("SIGTERM")
    await exited(second.child)
    const third = await startGateway()
    await new Promise((r) => setTimeout(r, 1_500))
    expect(generates()).toHaveLength(2)
    expect((await getRun(runId)).status).toBe("succeeded")
    const completed = await query<{ n: number }>(
      "SELECT count(*)::int AS n FROM step_journal WHERE stream_id = $1 AND type = 'RunCompleted'", [`run-${runId}`]
    )
    expect(completed[0]!.n).toBe(1)
    third.child.kill("SIGTERM")
    await exited(third.child)
    console.log(`[measured] gateway process start to listening: ${first.startMs} / ${second.startMs} / ${third.startMs} ms`)
  }, 300_000)
})
