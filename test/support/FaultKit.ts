/**
 * Tools for the fault tests and the soak: a proxied test database (the gateway reaches Postgres
 * through a PgProxy, the audit reads it directly), a request driver that classifies what the caller
 * got, and a journal audit that checks every run stream against what its caller saw.
 *
 * "Correct" is what a caller and an operator would check:
 *   - an answer: 200, the fake's whole text from the host named in x-awooop-endpoint, one done:true;
 *   - an error: a non-2xx with an {"error"} body, or (after the first chunk) a stream that ends with
 *     an {"error"} line and never a done:true;
 *   - never: a stream that just stops (silent truncation), a body that is not the protocol, a hang;
 * and its run stream in the journal: positions 0..n-1 in commit order, RunStarted first, exactly one
 * terminal event (RunCompleted | RunFailed) and it is the last, every AttemptStarted settled once,
 * and the terminal event agreeing with the caller (RunCompleted ↔ the answer and its endpoint,
 * RunFailed ↔ the status the caller got, 502 StreamBroken ↔ an error line after the first chunk).
 */
import { Effect, Exit, Layer, Redacted, Scope } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import pg from "pg"
import { Agent, request } from "undici"
import { layerFromUrl } from "../../src/storage/Database.ts"
import { runMigrations } from "../../src/storage/Migrations.ts"
import { fakeText } from "./FakeOllama.ts"
import { ensureDist, gatewayCommand, root } from "./Dist.ts"
import { createDatabaseStatement, templateDatabase, testDatabaseName } from "./TestDatabase.ts"
import { type PgProxy, startPgProxy } from "./PgProxy.ts"
import type { TestDatabaseHandle } from "./TestGateway.ts"

// ---------------------------------------------------------------------------------------------
// A database behind a proxy

export interface ProxiedDatabase {
  readonly name: string
  readonly proxy: PgProxy
  /** The database, directly (the audit's path; it works while the proxy is down). */
  readonly directUrl: string
  /** The database through the proxy (the gateway's DATABASE_URL). */
  readonly proxiedUrl: string
  /** For `startTestGateway({ database })`: a pool that goes through the proxy. */
  readonly handle: TestDatabaseHandle
  /** SQL on the direct connection. */
  readonly query: <T extends object = Record<string, unknown>>(text: string, params?: ReadonlyArray<unknown>) => Promise<Array<T>>
  readonly close: () => Promise<void>
}

export const adminUrl = process.env.TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres"

const withDatabase = (url: string, database: string) => {
  const u = new URL(url)
  u.pathname = `/${database}`
  return u.toString()
}

/** A fresh, migrated database; the gateway's pool reaches it through a new PgProxy. */
export const startProxiedDatabase = async (options: { readonly gatewayPool?: boolean } = {}): Promise<ProxiedDatabase> => {
  const name = testDatabaseName("f")
  const template = templateDatabase()
  const admin = new pg.Client({ connectionString: adminUrl })
  await admin.connect()
  await admin.query(createDatabaseStatement(name))
  await admin.end()
  const directUrl = withDatabase(adminUrl, name)
  const proxy = await startPgProxy({ targetHost: new URL(adminUrl).hostname, targetPort: Number(new URL(adminUrl).port || 5432) })
  const proxiedUrl = proxy.url(directUrl)
  // Migrations (unless the template had them) go straight to the database; only the gateway's own pool uses the proxy.
  if (template === undefined) await Effect.runPromise(Effect.scoped(Effect.provide(runMigrations, layerFromUrl(Redacted.make(directUrl), { maxConnections: 1 }))))
  const scope = Effect.runSync(Scope.make())
  const context = options.gatewayPool === false
    ? null
    : await Effect.runPromise(Layer.buildWithScope(layerFromUrl(Redacted.make(proxiedUrl), { applicationName: "awooop-fault-test" }), scope))
  const pool = new pg.Pool({ connectionString: directUrl, max: 2 })
  pool.on("error", () => {})
  let closed = false
  const close = async () => {
    if (closed) return
    closed = true
    await proxy.start().catch(() => {})
    await Effect.runPromise(Scope.close(scope, Exit.void))
    await pool.end()
    await proxy.close()
    const a = new pg.Client({ connectionString: adminUrl })
    await a.connect()
    await a.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
    await a.end()
  }
  return {
    name,
    proxy,
    directUrl,
    proxiedUrl,
    handle: { context: context as TestDatabaseHandle["context"], close: () => Promise.resolve() },
    query: async <T extends object>(text: string, params: ReadonlyArray<unknown> = []) => (await pool.query(text, [...params])).rows as Array<T>,
    close
  }
}

// ---------------------------------------------------------------------------------------------
// Driving requests

export type Operation = "generate" | "chat" | "embed"

export interface Call {
  readonly lane: string
  readonly model: string
  readonly operation: Operation
  readonly stream: boolean
}

export type Kind =
  | "answer" // a whole, correct answer
  | "error" // a correct error (status + {"error"}, or an error line after the first chunk)
  | "transport" // the connection failed (no HTTP answer)
  | "wrong" // anything else: truncated stream, fake done, garbage, wrong text

export interface Outcome extends Call {
  readonly traceId: string
  readonly status: number
  readonly kind: Kind
  /** The error line or body ({"error"}), or what was wrong. */
  readonly error: string | null
  readonly endpoint: string | null
  /** An error line arrived after the first chunk. */
  readonly midStream: boolean
  /** The gateway's error tag (from X-AwoooP-Error), e.g. "AllHostsUnavailable"; null for answers. */
  readonly errorTag: string | null
  readonly ms: number
}

export const newTraceId = (): string => crypto.randomUUID().replaceAll("-", "")

const bodyOf = (call: Call): Record<string, unknown> => {
  switch (call.operation) {
    case "generate": return { model: call.model, prompt: "why is the alert firing?", stream: call.stream }
    case "chat": return { model: call.model, messages: [{ role: "user", content: "why is the alert firing?" }], stream: call.stream }
    case "embed": return { model: call.model, input: ["disk full on node-3"] }
  }
}

const textOf = (chunk: Record<string, unknown>): string => {
  if (typeof chunk.response === "string") return chunk.response
  const message = chunk.message as { content?: unknown } | undefined
  return typeof message?.content === "string" ? message.content : ""
}

/** Checks an answer's text: the fake's whole answer from the host (or provider) the gateway says answered. */
const rightText = (text: string, endpoint: string | null, options: DriveOptions) =>
  endpoint !== null && text === (options.replies?.[endpoint] ?? fakeText(endpoint, options.chunks ?? 3))

export interface DriveOptions {
  /** Chunks the fakes send per answer (their `chunks` option; default 3). */
  readonly chunks?: number
  /** Client-side limit for one request (a hang becomes "wrong"); default 20 s. */
  readonly timeoutMs?: number
  readonly agent?: Agent
  readonly headers?: Record<string, string>
  /** The whole answer of a paid provider, by name (e.g. FakeGemini's "[gemini] hello from gemini"). */
  readonly replies?: Record<string, string>
}

const defaultAgent = new Agent({ connections: 128, keepAliveTimeout: 10_000 })

/** The `_tag` of the structured error in X-AwoooP-Error (base64url JSON). */
const tagOf = (header: string | Array<string> | undefined): string | null => {
  if (typeof header !== "string") return null
  try {
    const tag = (JSON.parse(Buffer.from(header, "base64url").toString("utf8")) as { _tag?: unknown })._tag
    return typeof tag === "string" ? tag : null
  } catch {
    return null
  }
}

/** One request; never throws. */
export const send = async (baseUrl: string, call: Call, options: DriveOptions = {}): Promise<Outcome> => {
  const traceId = newTraceId()
  const t0 = performance.now()
  let errorTag: string | null = null
  const result = (kind: Kind, status: number, error: string | null, endpoint: string | null, midStream = false): Outcome => ({
    ...call,
    traceId,
    status,
    kind,
    error,
    endpoint,
    midStream,
    errorTag: kind === "error" && midStream ? "StreamBroken" : errorTag,
    ms: performance.now() - t0
  })
  const path = call.operation === "embed" ? "/api/embed" : `/api/${call.operation}`
  const controller = new AbortController()
  const timer = setTimeout(() => controller.abort(), options.timeoutMs ?? 20_000)
  try {
    const res = await request(baseUrl + path, {
      method: "POST",
      dispatcher: options.agent ?? defaultAgent,
      signal: controller.signal,
      headers: {
        "content-type": "application/json",
        "x-awooop-lane": call.lane,
        "x-awooop-project-id": "faults",
        "x-awooop-trace-id": traceId,
        ...options.headers
      },
      body: JSON.stringify(bodyOf(call))
    })
    const endpoint = typeof res.headers["x-awooop-endpoint"] === "string" ? res.headers["x-awooop-endpoint"] : null
    errorTag = tagOf(res.headers["x-awooop-error"])
    const text = await res.body.text()
    if (res.statusCode !== 200) {
      try {
        const parsed = JSON.parse(text) as { error?: unknown }
        if (typeof parsed.error === "string" && parsed.error.length > 0) return result("error", res.statusCode, parsed.error, endpoint)
      } catch { /* below */ }
      return result("wrong", res.statusCode, `non-protocol error body: ${text.slice(0, 200)}`, endpoint)
    }
    if (!call.stream) {
      let parsed: Record<string, unknown>
      try {
        parsed = JSON.parse(text) as Record<string, unknown>
      } catch {
        return result("wrong", 200, `unparseable answer: ${text.slice(0, 200)}`, endpoint)
      }
      if (call.operation === "embed") {
        const ok = Array.isArray(parsed.embeddings) && parsed.embeddings.length === 1
        return ok ? result("answer", 200, null, endpoint) : result("wrong", 200, `bad embed answer: ${text.slice(0, 200)}`, endpoint)
      }
      if (parsed.done !== true || !rightText(textOf(parsed), endpoint, options)) {
        return result("wrong", 200, `wrong answer from ${endpoint}: ${text.slice(0, 200)}`, endpoint)
      }
      return result("answer", 200, null, endpoint)
    }
    // A stream: chunks, then exactly one of {done:true} or {"error"} as the last line.
    const lines = text.split("\n").filter((l) => l.trim() !== "")
    let streamed = ""
    for (let i = 0; i < lines.length; i++) {
      let chunk: Record<string, unknown>
      try {
        chunk = JSON.parse(lines[i]!) as Record<string, unknown>
      } catch {
        return result("wrong", 200, `garbage line ${i}: ${lines[i]!.slice(0, 200)}`, endpoint)
      }
      const last = i === lines.length - 1
      if (typeof chunk.error === "string") {
        return last ? result("error", 200, chunk.error, endpoint, i > 0) : result("wrong", 200, `lines after the error line`, endpoint)
      }
      streamed += textOf(chunk)
      if (chunk.done === true) {
        if (!last) return result("wrong", 200, "lines after done", endpoint)
        return rightText(streamed, endpoint, options)
          ? result("answer", 200, null, endpoint)
          : result("wrong", 200, `wrong streamed text from ${endpoint}: ${JSON.stringify(streamed)}`, endpoint)
      }
    }
    return result("wrong", 200, `silent truncation after ${lines.length} lines`, endpoint)
  } catch (e) {
    const aborted = controller.signal.aborted
    return result(aborted ? "wrong" : "transport", 0, aborted ? `no answer within ${(options.timeoutMs ?? 20_000) / 1000}s (hang)` : String((e as Error).message ?? e), null)
  } finally {
    clearTimeout(timer)
  }
}

/** `total` requests, `concurrency` at a time, cycling through `calls`. */
export const drive = async (baseUrl: string, calls: ReadonlyArray<Call>, total: number, concurrency: number, options: DriveOptions = {}) => {
  const out: Array<Outcome> = []
  let next = 0
  await Promise.all(Array.from({ length: Math.min(concurrency, total) }, async () => {
    while (next < total) {
      const call = calls[next++ % calls.length]!
      out.push(await send(baseUrl, call, options))
    }
  }))
  return out
}

// ---------------------------------------------------------------------------------------------
// The journal audit

export interface JournalRow {
  readonly streamId: string
  readonly position: number
  readonly globalPosition: number
  readonly type: string
  readonly traceId: string | null
  readonly data: Record<string, unknown>
}

export interface Audit {
  readonly runs: number
  readonly events: number
  /** One line per problem found; empty when every run is consistent with its caller. */
  readonly problems: Array<string>
  /** Outcomes whose run stream agrees with what the caller got. */
  readonly consistent: Set<string>
}

const terminal = new Set(["RunCompleted", "RunFailed"])

export const readRuns = async (query: ProxiedDatabase["query"], traceIds: ReadonlyArray<string>) =>
  query<JournalRow>(
    `SELECT stream_id AS "streamId", stream_position AS "position", global_position::float8 AS "globalPosition", type,
            trace_id AS "traceId", data
     FROM step_journal WHERE trace_id = ANY($1::text[]) AND stream_id LIKE 'run-%'
     ORDER BY stream_id, stream_position`,
    [traceIds]
  )

/** Structural checks of one run stream (rows in stream-position order). */
export const checkStream = (streamId: string, rows: ReadonlyArray<JournalRow>): Array<string> => {
  const problems: Array<string> = []
  rows.forEach((r, i) => {
    if (r.position !== i) problems.push(`${streamId}: position ${r.position} where ${i} was expected (lost or doubled event)`)
    if (i > 0 && r.globalPosition <= rows[i - 1]!.globalPosition) problems.push(`${streamId}: event ${i} committed before event ${i - 1}`)
  })
  if (rows[0]?.type !== "RunStarted") problems.push(`${streamId}: starts with ${rows[0]?.type ?? "nothing"}`)
  const ends = rows.filter((r) => terminal.has(r.type))
  if (ends.length !== 1) problems.push(`${streamId}: ${ends.length} terminal events`)
  else if (!terminal.has(rows[rows.length - 1]!.type)) problems.push(`${streamId}: events after ${ends[0]!.type} (${rows.map((r) => r.type).join(" → ")})`)
  const started = rows.filter((r) => r.type === "AttemptStarted").length
  const settled = rows.filter((r) => r.type === "AttemptSucceeded" || r.type === "AttemptFailed").length
  if (started !== settled) problems.push(`${streamId}: ${started} attempts started, ${settled} settled`)
  return problems
}

/** Checks every outcome's run against what its caller got. */
export const auditOutcomes = async (query: ProxiedDatabase["query"], outcomes: ReadonlyArray<Outcome>): Promise<Audit> => {
  const rows = await readRuns(query, outcomes.map((o) => o.traceId))
  const byTrace = new Map<string, Map<string, Array<JournalRow>>>()
  for (const r of rows) {
    const streams = byTrace.get(r.traceId!) ?? new Map<string, Array<JournalRow>>()
    byTrace.set(r.traceId!, streams)
    const list = streams.get(r.streamId) ?? []
    streams.set(r.streamId, list)
    list.push(r)
  }
  const problems: Array<string> = []
  const consistent = new Set<string>()
  for (const o of outcomes) {
    const streams = byTrace.get(o.traceId)
    const label = `${o.lane} ${o.operation}${o.stream ? " (stream)" : ""} trace ${o.traceId}`
    if (streams === undefined || streams.size !== 1) {
      problems.push(`${label}: ${streams?.size ?? 0} run streams in the journal (expected 1)`)
      continue
    }
    const [[streamId, list]] = [...streams.entries()] as [[string, Array<JournalRow>]]
    const found = checkStream(streamId, list)
    const end = list[list.length - 1]!
    const data = end.data as { status?: unknown; endpoint?: unknown; error?: unknown }
    if (o.kind === "answer" && (end.type !== "RunCompleted" || data.endpoint !== o.endpoint)) {
      found.push(`${label}: the caller got an answer from ${o.endpoint}, the journal ends with ${end.type} ${JSON.stringify(data.endpoint ?? data.error)}`)
    }
    if (o.kind === "error") {
      const status = o.midStream || o.status === 200 ? 502 : o.status
      if (end.type !== "RunFailed" || data.status !== status) {
        found.push(`${label}: the caller got ${o.midStream ? "an error line mid-stream" : `${o.status}`}, the journal ends with ${end.type} ${String(data.status)}`)
      }
    }
    if (found.length === 0) consistent.add(o.traceId)
    problems.push(...found)
  }
  return { runs: rows.length === 0 ? 0 : new Set(rows.map((r) => r.streamId)).size, events: rows.length, problems, consistent }
}

/** Every row of the journal (all streams), for totals. */
export const countEvents = async (query: ProxiedDatabase["query"]) =>
  Number((await query<{ n: number }>(`SELECT count(*)::int AS n FROM step_journal`))[0]!.n)

/** Structural checks of every run stream in the database. */
export const auditAllRuns = async (query: ProxiedDatabase["query"]) => {
  const rows = await query<JournalRow>(
    `SELECT stream_id AS "streamId", stream_position AS "position", global_position::float8 AS "globalPosition", type,
            trace_id AS "traceId", data
     FROM step_journal WHERE stream_id LIKE 'run-%' ORDER BY stream_id, stream_position`
  )
  const problems: Array<string> = []
  let runs = 0
  for (let i = 0; i < rows.length;) {
    let j = i
    while (j < rows.length && rows[j]!.streamId === rows[i]!.streamId) j++
    runs++
    problems.push(...checkStream(rows[i]!.streamId, rows.slice(i, j)))
    i = j
  }
  // Host streams: positions 0..n-1 as well.
  const heads = await query<{ streamId: string; n: number; max: number }>(
    `SELECT stream_id AS "streamId", count(*)::int AS n, max(stream_position)::int AS max FROM step_journal
     WHERE stream_id NOT LIKE 'run-%' GROUP BY stream_id`
  )
  for (const h of heads) if (h.n !== h.max + 1) problems.push(`${h.streamId}: ${h.n} events for positions 0..${h.max}`)
  return { runs, events: rows.length, problems }
}

/** Waits until `check` holds (polling), or throws with `what`. */
export const waitFor = async (what: string, check: () => Promise<boolean> | boolean, timeoutMs = 15_000, everyMs = 50) => {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await check()) return
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, everyMs))
  }
}

export interface HealthJournal {
  readonly status: "ok" | "degraded" | "unavailable"
  readonly spilled: number
  readonly queued: number
  readonly written: number
  /** Events lost since start, by why (dropped, torn, shutdown). */
  readonly lost?: { readonly dropped: number; readonly torn: number; readonly shutdown: number }
}

export const healthJournal = async (baseUrl: string): Promise<HealthJournal> => {
  const res = await fetch(`${baseUrl}/awooop/health`)
  const body = (await res.json()) as { journal?: HealthJournal }
  if (body.journal === undefined) throw new Error(`/awooop/health has no journal section: ${JSON.stringify(body).slice(0, 300)}`)
  return body.journal
}

// ---------------------------------------------------------------------------------------------
// The gateway as its own process (dist/main.js), for SIGKILL and for the soak

export interface Child {
  readonly process: ChildProcess
  readonly url: string
  /** The last 64 KiB it printed. */
  readonly output: () => string
}

export interface SpawnOptions {
  /** The command and its arguments (default `node dist/main.js`, built first if stale). */
  readonly command?: readonly [string, ...Array<string>]
  /** Its own process group (its pid is the group id), as a terminal's foreground job is. */
  readonly detached?: boolean
}

/** The compiled gateway (test/support/Dist.ts) with PORT=0; resolves once it logs "Listening on http://…". */
export const spawnGateway = async (env: Record<string, string>, startTimeoutMs = 60_000, options: SpawnOptions = {}): Promise<Child> => {
  await ensureDist()
  return spawnStarted(env, startTimeoutMs, options.command ?? gatewayCommand, options.detached ?? false)
}

const spawnStarted = (env: Record<string, string>, startTimeoutMs: number, commandLine: readonly [string, ...Array<string>], detached: boolean): Promise<Child> =>
  new Promise((resolve, reject) => {
    const [command, ...args] = commandLine
    const child = spawn(command, args, {
      cwd: root,
      env: { ...process.env, PORT: "0", HOST: "127.0.0.1", ...env },
      stdio: ["ignore", "pipe", "pipe"],
      detached
    })
    let out = ""
    let url: string | null = null
    const timer = setTimeout(() => reject(new Error(`the gateway did not start within ${startTimeoutMs / 1000} s:\n${out}`)), startTimeoutMs)
    // Kept reading for the child's whole life: a full pipe would block its logging.
    const onData = (d: Buffer) => {
      out = (out + d.toString()).slice(-65_536)
      if (url !== null) return
      const m = /Listening on (http:\/\/[0-9.:]+)/.exec(out)
      if (m) {
        url = m[1]!
        clearTimeout(timer)
        resolve({ process: child, url, output: () => out })
      }
    }
    child.stdout!.on("data", onData)
    child.stderr!.on("data", onData)
    child.once("exit", (code, signal) => {
      clearTimeout(timer)
      if (url === null) reject(new Error(`the gateway exited (${code ?? signal}) before listening:\n${out}`))
    })
  })

/** The URL of a loopback port nothing listens on (a host that refuses connections). */
export { closedPortUrl } from "./ClosedPort.ts"

export const exited = (child: ChildProcess) =>
  new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve()
    child.once("exit", () => resolve())
  })

/** The whole /awooop/health view (hosts' breakers and slots, lanes, journal). */
export interface Health {
  readonly summary: ReadonlyArray<string>
  readonly hosts: Record<string, {
    readonly status: string
    readonly breaker: { readonly status: string; readonly probeInFlight: boolean }
    readonly slots: { readonly inUse: number }
  }>
  readonly journal: HealthJournal
}

export const health = async (baseUrl: string): Promise<Health> => (await (await fetch(`${baseUrl}/awooop/health`)).json()) as Health

// ---------------------------------------------------------------------------------------------
// The fault table

export interface RowResult {
  readonly fault: string
  readonly requests: number
  readonly answers: number
  readonly errors: number
  readonly wrong: Array<string>
  readonly expected: number
  readonly found: number
  readonly journalProblems: Array<string>
  readonly afterwards: Array<string>
  readonly seconds: number
}

/** The rows as a markdown table (and the first problems of each), on stdout. */
export const printTable = (title: string, rows: ReadonlyArray<RowResult>) => {
  const lines = [
    "| fault | requests | correct answers | correct errors | wrong | events expected/found | afterwards | s |",
    "|---|---|---|---|---|---|---|---|"
  ]
  for (const r of rows) {
    lines.push(
      `| ${r.fault} | ${r.requests} | ${r.answers} | ${r.errors} | ${r.wrong.length} | ${r.expected}/${r.found}${r.expected === r.found && r.journalProblems.length === 0 ? "" : " ✗"} | ${
        r.afterwards.length === 0 ? "breakers closed, slots free" : r.afterwards.join("; ")
      } | ${r.seconds.toFixed(1)} |`
    )
  }
  console.log(`\n${title}\n\n${lines.join("\n")}\n`)
  for (const r of rows) {
    for (const w of r.wrong.slice(0, 5)) console.log(`  ${r.fault}: ${w}`)
    for (const p of r.journalProblems.slice(0, 5)) console.log(`  ${r.fault}: ${p}`)
  }
}
