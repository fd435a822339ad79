/**
 * The production wiring of tracing: the gateway (`node dist/main.js`) started as a process with OTEL_EXPORTER_OTLP_ENDPOINT
 * pointing at a fake OTLP/HTTP collector on loopback. A request's spans arrive there (after the
 * graceful shutdown flushes them) on the journal's trace id; without the variable the gateway answers
 * just the same and exports nothing.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import pg from "pg"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { ensureDist, gatewayCommand } from "./support/Dist.ts"
import { type FakeOllama, startFakeOllama } from "./support/FakeOllama.ts"
import { createDatabaseStatement, testDatabaseName } from "./support/TestDatabase.ts"
import { newTraceId } from "./support/TestGateway.ts"

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..")
const adminUrl = process.env.TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres"

interface OtlpSpan {
  readonly traceId: string
  readonly spanId: string
  readonly parentSpanId?: string
  readonly name: string
  readonly kind: number
  readonly attributes: ReadonlyArray<{ readonly key: string; readonly value: Record<string, unknown> }>
}

/** A fake OTLP/HTTP collector: keeps every span of every JSON export request to /v1/traces. */
const startCollector = async () => {
  const spans: Array<OtlpSpan> = []
  const paths: Array<string> = []
  const server = http.createServer((req, res) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => {
      paths.push(req.url ?? "")
      const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as {
        resourceSpans: Array<{ scopeSpans: Array<{ spans: Array<OtlpSpan> }> }>
      }
      for (const rs of body.resourceSpans) for (const ss of rs.scopeSpans) spans.push(...ss.spans)
      res.writeHead(200, { "content-type": "application/json" })
      res.end("{}")
    })
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, spans, paths, close: () => new Promise<void>((r) => server.close(() => r())) }
}

const startGateway = async (env: Record<string, string>): Promise<{ child: ChildProcess; url: string }> => {
  await ensureDist()
  return new Promise((resolve, reject) => {
    const clean = { ...process.env }
    delete clean.OTEL_EXPORTER_OTLP_ENDPOINT
    delete clean.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
    const child = spawn(gatewayCommand[0], gatewayCommand.slice(1), { cwd: root, env: { ...clean, ...env }, stdio: ["ignore", "pipe", "pipe"] })
    let out = ""
    const onData = (d: Buffer) => {
      out += d.toString()
      const m = out.match(/Listening on (http:\/\/[0-9.:]+)/)
      if (m) resolve({ child, url: m[1]! })
    }
    child.stdout!.on("data", onData)
    child.stderr!.on("data", onData)
    child.on("exit", (code) => reject(new Error(`gateway exited ${code}:\n${out}`)))
  })
}

const stop = (child: ChildProcess) =>
  new Promise<void>((resolve) => {
    child.removeAllListeners("exit")
    child.on("exit", () => resolve())
    child.kill("SIGTERM")
  })

let fake: FakeOllama
let dbName: string
let dbUrl: string
let configFile: string

beforeAll(async () => {
  fake = await startFakeOllama({ name: "gcp-a" })
  dbName = testDatabaseName("otlp")
  const admin = new pg.Client({ connectionString: adminUrl })
  await admin.connect()
  await admin.query(createDatabaseStatement(dbName))
  await admin.end()
  const u = new URL(adminUrl)
  u.pathname = `/${dbName}`
  dbUrl = u.toString()
  configFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "awooop-otlp-")), "gateway.yaml")
  fs.writeFileSync(configFile, `
hosts:
  gcp-a: { url: "${fake.url}", slots: 4 }
legacy: { lanes: { "gemma3:4b": alert-fast } }
lanes:
  alert-fast:
    model: gemma3:4b
    route: [ { host: gcp-a, timeout: "5s" } ]
server: { pollInterval: "60s", drainTimeout: "2s" }
`)
}, 30_000)

afterAll(async () => {
  await fake?.stop()
  const admin = new pg.Client({ connectionString: adminUrl })
  await admin.connect()
  await admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`)
  await admin.end()
  fs.rmSync(path.dirname(configFile), { recursive: true, force: true })
})

describe("OTLP export from src/main.ts", () => {
  it("exports the request's spans on the journal's trace when OTEL_EXPORTER_OTLP_ENDPOINT is set", async () => {
    const collector = await startCollector()
    const gateway = await startGateway({ DATABASE_URL: dbUrl, AWOOOP_CONFIG: configFile, PORT: "0", OTEL_EXPORTER_OTLP_ENDPOINT: collector.url, OTEL_SERVICE_NAME: "awooop-otlp-test" })
    const traceId = newTraceId()
    try {
      const res = await fetch(`${gateway.url}/api/generate`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-awooop-trace-id": traceId, "x-awooop-project-id": "awoooi" },
        body: JSON.stringify({ model: "gemma3:4b", prompt: "hi", stream: false })
      })
      expect(res.status).toBe(200)
      await res.json()
    } finally {
      await stop(gateway.child) // flushes the batch processor
      await collector.close()
    }
    expect(collector.paths.every((p) => p === "/v1/traces")).toBe(true)
    const mine = collector.spans.filter((s) => s.traceId === traceId)
    const server = mine.find((s) => s.name === "POST /api/generate")
    const attempt = mine.find((s) => s.name === "text_completion gemma3:4b")
    expect(server).toBeDefined()
    expect(attempt).toBeDefined()
    expect(attempt!.parentSpanId).toBe(server!.spanId)
    const attrs = Object.fromEntries(attempt!.attributes.map((a) => [a.key, Object.values(a.value)[0]]))
    expect(attrs).toMatchObject({ "awooop.lane": "alert-fast", "awooop.project_id": "awoooi", "awooop.endpoint": "gcp-a", "gen_ai.provider.name": "ollama" })
  }, 60_000)

  it("exports nothing and still answers when the variable is not set", async () => {
    const collector = await startCollector()
    const gateway = await startGateway({ DATABASE_URL: dbUrl, AWOOOP_CONFIG: configFile, PORT: "0" })
    try {
      const res = await fetch(`${gateway.url}/api/generate`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: "gemma3:4b", prompt: "hi", stream: false })
      })
      expect(res.status).toBe(200)
    } finally {
      await stop(gateway.child)
      await collector.close()
    }
    expect(collector.spans).toHaveLength(0)
  }, 60_000)
})
