/**
 * A fake Ollama host for tests and benchmarks.
 *
 * A real HTTP server (node:http on 127.0.0.1) speaking Ollama's wire format (see
 * /work/shared/REFERENCE.md), standing in for a GPU host that cannot run here. Failure modes
 * (hang, slow, drip, 500, 503, resets, malformed streams) are switchable at run time with
 * `setMode`, and apply to the inference routes only (generate, chat, embed, embeddings);
 * `/`, `/api/version`, `/api/tags`, `/api/ps` and `/api/show` keep answering.
 *
 * Built to be cheap on the hot path (it also serves the gateway-overhead benchmark): no logging,
 * pre-serialised static answers, NDJSON lines built from templates, keep-alive friendly.
 *
 * Request validation (400 / 404) happens before the mode is applied: a malformed request is
 * refused at once even when the host is "hanging".
 */
import { createHash } from "node:crypto"
import * as http from "node:http"
import type { AddressInfo, Socket } from "node:net"
import { performance } from "node:perf_hooks"
import { Effect } from "effect"

export type FakeMode =
  | "ok" // normal answers
  | "hang" // accept the request, never answer (until closed)
  | "slow" // wait `delayMs` before the first byte, then answer normally
  | "drip" // streaming: a chunk every `delayMs`; non-streaming: wait chunks*delayMs
  | "error500" // 500 {"error":"runner crashed"}
  | "busy503" // 503 {"error":"server busy, please try again.  maximum pending requests exceeded"}
  | "resetBeforeFirst" // destroy the socket before sending any byte
  | "resetMidStream" // streaming: 200 + first chunk, then destroy; non-streaming: destroy before answering
  | "malformed" // streaming: first chunk, then a line of invalid JSON, then end; non-streaming: truncated JSON body

export interface FakeOllamaOptions {
  port?: number
  mode?: FakeMode
  delayMs?: number
  chunks?: number
  models?: Array<{ name: string; parameterSize?: string; family?: string }>
  resident?: string[]
  version?: string
  name?: string
  /** Record every request in `requests` (default true). Benchmarks may turn it off. */
  record?: boolean
}

export interface FakeRequest {
  method: string
  path: string
  body: unknown
  headers: Record<string, string | string[] | undefined>
  at: number
}

export interface FakeOllama {
  readonly url: string
  readonly port: number
  /** Name given in the options (undefined if none). */
  readonly name: string | undefined
  readonly requests: Array<FakeRequest>
  setMode(mode: FakeMode, opts?: { delayMs?: number; chunks?: number }): void
  setResident(models: string[]): void
  /** Sends every answer still waiting out its delay now (a test done with the requests a "slow" host held). */
  finishDelayed(): void
  /** Inference requests (generate/chat/embed/embeddings) currently being processed. */
  inFlight(): number
  /** High-water mark of `inFlight()` since start or the last `reset()`. */
  maxInFlight(): number
  /** High-water mark of the inference requests for `model` in flight at once (same reset). */
  maxInFlightOf(model: string): number
  reset(): void
  stop(): Promise<void>
  start(): Promise<void>
}

/** The token count the fake reports for a text (prompt_eval_count): ceil(chars / 4), at least 1 for non-empty text. */
export const fakeTokenCount = (text: string): number => (text.length === 0 ? 0 : Math.ceil(text.length / 4))

/** The text piece of streamed chunk `i` (0-based): "[name] ", "hello ", "world", then "!" … */
export const fakePiece = (name: string | undefined, i: number): string => {
  if (name !== undefined) {
    if (i === 0) return `[${name}] `
    i -= 1
  }
  return i === 0 ? "hello " : i === 1 ? "world" : "!"
}

/** The whole answer text for `chunks` chunks (what a non-streaming call returns). */
export const fakeText = (name: string | undefined, chunks: number): string => {
  let s = ""
  for (let i = 0; i < chunks; i++) s += fakePiece(name, i)
  return s
}

/** The deterministic, unit-length embedding the fake returns for `text`. */
export const fakeEmbedding = (model: string, text: string, dims = 8): number[] => {
  // FNV-1a over model + NUL + text, then xorshift32 for the components.
  let h = 0x811c9dc5
  const s = model + "\u0000" + text
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  let x = h | 0 || 1
  const v = new Array<number>(dims)
  let norm = 0
  for (let i = 0; i < dims; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    const c = (x >>> 0) / 0x100000000 - 0.5
    v[i] = c
    norm += c * c
  }
  norm = Math.sqrt(norm) || 1
  for (let i = 0; i < dims; i++) v[i] = Math.round((v[i]! / norm) * 1e6) / 1e6
  return v
}

/** The arguments the fake calls a tool with: `"fake-<name>"` for each string property of its parameters. */
export const fakeToolArguments = (parameters: unknown): Record<string, string> => {
  const properties = (parameters as { properties?: Record<string, { type?: unknown }> } | undefined)?.properties ?? {}
  const args: Record<string, string> = {}
  for (const [name, p] of Object.entries(properties)) if (p?.type === "string") args[name] = `fake-${name}`
  return args
}

// ---------------------------------------------------------------------------------------------
// Models

export const DEFAULT_MODELS: ReadonlyArray<{ name: string; parameterSize: string; family: string }> = [
  { name: "gemma3:4b", parameterSize: "4.3B", family: "gemma3" },
  { name: "qwen2.5-coder:7b", parameterSize: "7.6B", family: "qwen2" },
  { name: "bge-m3", parameterSize: "567M", family: "bert" },
  { name: "qwen2.5:14b", parameterSize: "14.8B", family: "qwen2" }
]

const MODIFIED_AT = "2025-09-01T12:00:00.000000000Z"
const FOREVER = "2318-01-01T00:00:00Z"
const DEFAULT_KEEP_ALIVE_MS = 5 * 60_000

interface ModelEntry {
  readonly name: string
  readonly family: string
  readonly size: number
  readonly digest: string
  readonly paramCount: number
  readonly completion: boolean
  readonly details: Record<string, unknown>
  readonly capabilities: ReadonlyArray<string>
}

const parseParamCount = (p: string): number => {
  const m = /^(\d+(?:\.\d+)?)\s*([KMBT]?)$/i.exec(p.trim())
  if (!m) return 7e9
  const n = Number(m[1])
  switch (m[2]!.toUpperCase()) {
    case "K":
      return n * 1e3
    case "M":
      return n * 1e6
    case "B":
      return n * 1e9
    case "T":
      return n * 1e12
    default:
      return n
  }
}

const makeEntry = (m: { name: string; parameterSize?: string; family?: string }): ModelEntry => {
  const base = m.name.split(":")[0]!
  const tag = m.name.includes(":") ? m.name.slice(m.name.indexOf(":") + 1) : ""
  const tagSize = /^(\d+(?:\.\d+)?)([bm])$/i.exec(tag)
  const parameterSize = m.parameterSize ?? (tagSize ? tagSize[1]! + tagSize[2]!.toUpperCase() : "7B")
  const family = m.family ?? (base.replace(/[.\-]?\d+(\.\d+)*$/, "") || base)
  const paramCount = Math.round(parseParamCount(parameterSize))
  const embedding = family === "bert" || family === "nomic-bert" || /embed|bge|minilm/i.test(m.name)
  return {
    name: m.name,
    family,
    size: Math.round(paramCount * 0.75),
    digest: createHash("sha256").update(m.name).digest("hex"),
    paramCount,
    completion: !embedding,
    details: {
      parent_model: "",
      format: "gguf",
      family,
      families: [family],
      parameter_size: parameterSize,
      quantization_level: "Q4_K_M"
    },
    capabilities: embedding ? ["embedding"] : ["completion"]
  }
}

// ---------------------------------------------------------------------------------------------
// Small helpers

const JSON_CT = "application/json; charset=utf-8"
const NDJSON_HEADERS = { "Content-Type": "application/x-ndjson" } as const
const ROOT_TEXT = "Ollama is running"

const errBody = (message: string): string => `{"error":${JSON.stringify(message)}}`
const ERR_500 = errBody("runner crashed")
const ERR_503 = errBody("server busy, please try again.  maximum pending requests exceeded")

const sendJson = (res: http.ServerResponse, status: number, body: string, head = false): void => {
  res.writeHead(status, { "Content-Type": JSON_CT, "Content-Length": Buffer.byteLength(body) })
  res.end(head ? undefined : body)
}

const sendText = (res: http.ServerResponse, status: number, body: string, head = false): void => {
  res.writeHead(status, { "Content-Type": "text/plain; charset=utf-8", "Content-Length": Buffer.byteLength(body) })
  res.end(head ? undefined : body)
}

/** Go-flavoured message for a JSON syntax error ("invalid character 'x' looking for beginning of value"). */
const goJsonError = (raw: string, e: unknown): string => {
  const msg = e instanceof Error ? e.message : String(e)
  const pos = /position (\d+)/.exec(msg)
  if (pos) {
    const i = Number(pos[1])
    if (i >= raw.trimEnd().length) return "unexpected EOF"
    return `invalid character '${raw[i]}' looking for beginning of value`
  }
  const tok = /Unexpected token '?(.)/.exec(msg)
  if (tok) return `invalid character '${tok[1]}' looking for beginning of value`
  if (/end of (JSON|data)|Unterminated/i.test(msg)) return "unexpected EOF"
  const first = raw.trimStart()[0]
  return `invalid character '${first ?? " "}' looking for beginning of value`
}

const goType = (v: unknown): string =>
  Array.isArray(v) ? "array" : typeof v === "boolean" ? "bool" : typeof v === "number" ? "number" : "string"

/** keep_alive → milliseconds; -1 = forever; undefined = default (5m) or unparseable. */
const parseKeepAlive = (v: unknown): number | undefined => {
  if (typeof v === "number") return v < 0 ? -1 : v * 1000
  if (typeof v !== "string") return undefined
  const s = v.trim()
  if (s === "") return undefined
  if (/^-?\d+(\.\d+)?$/.test(s)) {
    const n = Number(s)
    return n < 0 ? -1 : n * 1000
  }
  const neg = s.startsWith("-")
  const re = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/g
  let ms = 0
  let matched = 0
  for (let m = re.exec(s); m !== null; m = re.exec(s)) {
    matched += m[0].length
    const n = Number(m[1])
    const unit = m[2]
    ms += unit === "h" ? n * 3_600_000 : unit === "m" ? n * 60_000 : unit === "s" ? n * 1000 : unit === "ms" ? n : n / 1e6
  }
  if (matched === 0) return undefined
  return neg ? -1 : ms
}

interface Ctx {
  readonly req: http.IncomingMessage
  readonly res: http.ServerResponse
  readonly mode: FakeMode
  readonly delayMs: number
  readonly chunks: number
  readonly t0: number
  closed: boolean
  timer: ReturnType<typeof setTimeout> | undefined
}

interface Answer {
  readonly stream: boolean
  /** Number of content chunks before the final one (streaming). */
  readonly n: number
  /** Streaming line i (i < n: content; i === n: the final done line), ending in "\n". */
  line(i: number): string
  /** The non-streaming body. */
  whole(): string
  /** Side effects of a successful answer (residency). */
  commit(): void
}

const isInference = (path: string): boolean =>
  path === "/api/generate" || path === "/api/chat" || path === "/api/embed" || path === "/api/embeddings" || path === "/v1/chat/completions"

// ---------------------------------------------------------------------------------------------

export const startFakeOllama = async (opts: FakeOllamaOptions = {}): Promise<FakeOllama> => {
  const hostName = opts.name
  const version = opts.version ?? "0.12.0"
  const record = opts.record ?? true
  let mode: FakeMode = opts.mode ?? "ok"
  let delayMs = opts.delayMs ?? 50
  let chunks = opts.chunks ?? 3

  const installed = new Map<string, ModelEntry>()
  for (const m of opts.models ?? DEFAULT_MODELS) installed.set(m.name, makeEntry(m))
  const find = (name: string): ModelEntry | undefined => {
    const e = installed.get(name)
    if (e !== undefined) return e
    if (name.endsWith(":latest")) return installed.get(name.slice(0, -7))
    if (!name.includes(":")) return installed.get(name + ":latest")
    return undefined
  }

  const tagsBody = JSON.stringify({
    models: [...installed.values()].map((e) => ({
      name: e.name,
      model: e.name,
      modified_at: MODIFIED_AT,
      size: e.size,
      digest: e.digest,
      details: e.details
    }))
  })
  const versionBody = JSON.stringify({ version })

  // Residency: name → expires_at (ISO string)
  const resident = new Map<string, { entry: ModelEntry; expiresAt: string }>()
  let psCache: string | undefined
  // A keep_alive past the last date JavaScript can hold (the fuzz test sends absurd ones) is forever.
  const expiresFor = (keepMs: number | undefined): string => {
    if (keepMs !== undefined && keepMs < 0) return FOREVER
    const at = new Date(Date.now() + (keepMs ?? DEFAULT_KEEP_ALIVE_MS))
    return Number.isNaN(at.getTime()) ? FOREVER : at.toISOString()
  }
  const load = (entry: ModelEntry, keepMs: number | undefined): void => {
    if (keepMs === 0) {
      unload(entry)
      return
    }
    resident.set(entry.name, { entry, expiresAt: expiresFor(keepMs) })
    psCache = undefined
  }
  const unload = (entry: ModelEntry): void => {
    if (resident.delete(entry.name)) psCache = undefined
  }
  const setResident = (models: string[]): void => {
    resident.clear()
    for (const name of models) {
      const entry = find(name) ?? makeEntry({ name })
      resident.set(entry.name, { entry, expiresAt: expiresFor(undefined) })
    }
    psCache = undefined
  }
  setResident(opts.resident ?? [])
  const psBody = (): string => {
    if (psCache === undefined) {
      psCache = JSON.stringify({
        models: [...resident.values()].map(({ entry: e, expiresAt }) => ({
          name: e.name,
          model: e.name,
          size: e.size,
          digest: e.digest,
          details: e.details,
          expires_at: expiresAt,
          size_vram: e.size,
          context_length: 4096
        }))
      })
    }
    return psCache
  }

  // Pre-escaped chunk pieces and whole texts (they depend only on the host name and the count).
  const pieceJson: string[] = []
  const pj = (i: number): string => (pieceJson[i] ??= JSON.stringify(fakePiece(hostName, i)))
  const wholeJson: string[] = []
  const wj = (n: number): string => (wholeJson[n] ??= JSON.stringify(fakeText(hostName, n)))

  const requests: FakeRequest[] = []
  let inFlightN = 0
  let maxInFlightN = 0
  // In flight per requested model (a test gives each lane its own model to see the lanes apart).
  const byModel = new Map<string, { now: number; max: number }>()
  const countModel = (buf: Buffer | undefined, c: Ctx) => {
    let model = "?"
    try {
      model = String((JSON.parse(buf?.toString("utf8") ?? "{}") as { model?: unknown }).model ?? "?")
    } catch { /* counted as "?" */ }
    const m = byModel.get(model) ?? { now: 0, max: 0 }
    byModel.set(model, m)
    if (c.closed) return
    m.now++
    m.max = Math.max(m.max, m.now)
    c.res.once("close", () => void m.now--)
  }

  // ---------------------------------------------------------------------- delivery per mode

  /** Answers waiting out a delay ("slow", a non-streaming "drip"): `finishDelayed` sends them at once. */
  const delayed = new Set<() => void>()
  const after = (ctx: Ctx, ms: number, fn: () => void): void => {
    const fire = () => {
      delayed.delete(fire)
      clearTimeout(ctx.timer)
      ctx.timer = undefined
      if (!ctx.closed) fn()
    }
    delayed.add(fire)
    ctx.timer = setTimeout(fire, ms)
  }

  const sendNormal = (ctx: Ctx, ans: Answer): void => {
    if (ctx.closed) return
    const res = ctx.res
    if (ans.stream) {
      res.writeHead(200, NDJSON_HEADERS)
      res.cork()
      for (let i = 0; i < ans.n; i++) res.write(ans.line(i))
      res.end(ans.line(ans.n))
      res.uncork()
    } else {
      sendJson(res, 200, ans.whole())
    }
    ans.commit()
  }

  const drip = (ctx: Ctx, ans: Answer): void => {
    const res = ctx.res
    res.writeHead(200, NDJSON_HEADERS)
    let i = 0
    const step = (): void => {
      ctx.timer = undefined
      if (ctx.closed) return
      if (i < ans.n) {
        res.write(ans.line(i++))
        ctx.timer = setTimeout(step, ctx.delayMs)
      } else {
        res.end(ans.line(ans.n))
        ans.commit()
      }
    }
    step()
  }

  const deliver = (ctx: Ctx, ans: Answer): void => {
    const { res } = ctx
    switch (ctx.mode) {
      case "ok":
        return sendNormal(ctx, ans)
      case "hang":
        return
      case "slow":
        return after(ctx, ctx.delayMs, () => sendNormal(ctx, ans))
      case "drip":
        if (ans.stream) return drip(ctx, ans)
        return after(ctx, ans.n * ctx.delayMs, () => sendNormal(ctx, ans))
      case "error500":
        return sendJson(res, 500, ERR_500)
      case "busy503":
        return sendJson(res, 503, ERR_503)
      case "resetBeforeFirst":
        ctx.req.socket.destroy()
        return
      case "resetMidStream": {
        if (!ans.stream) {
          ctx.req.socket.destroy()
          return
        }
        res.writeHead(200, NDJSON_HEADERS)
        if (ans.n > 0) {
          res.write(ans.line(0), () => ctx.req.socket.destroy())
        } else {
          res.flushHeaders()
          setImmediate(() => ctx.req.socket.destroy())
        }
        return
      }
      case "malformed": {
        if (!ans.stream) {
          const w = ans.whole()
          res.writeHead(200, { "Content-Type": JSON_CT })
          res.end(w.slice(0, Math.max(1, w.length >> 1)))
          return
        }
        res.writeHead(200, NDJSON_HEADERS)
        res.cork()
        if (ans.n > 0) res.write(ans.line(0))
        res.end(`{"model":"broken","created_at":"${new Date().toISOString()}","response":"\n`)
        res.uncork()
        return
      }
    }
  }

  // ---------------------------------------------------------------------- answers

  const loadNsFor = (entry: ModelEntry): number => (resident.has(entry.name) ? 100_000 : 100_000_000)

  const counters = (ctx: Ctx, promptTokens: number, n: number, loadNs: number): string => {
    const pd = promptTokens * 100_000
    const ed = n * 1_000_000
    const elapsed = Math.round((performance.now() - ctx.t0) * 1e6)
    const total = Math.max(elapsed, loadNs + pd + ed)
    return `"total_duration":${total},"load_duration":${loadNs},"prompt_eval_count":${promptTokens},"prompt_eval_duration":${pd},"eval_count":${n},"eval_duration":${ed}`
  }

  const loadAnswer = (kind: "generate" | "chat", model: string, entry: ModelEntry, keepMs: number | undefined): Answer => {
    const reason = keepMs === 0 ? "unload" : "load"
    const mj = JSON.stringify(model)
    const payload = kind === "generate" ? `"response":""` : `"message":{"role":"assistant","content":""}`
    const whole = (): string =>
      `{"model":${mj},"created_at":"${new Date().toISOString()}",${payload},"done":true,"done_reason":"${reason}"}`
    return {
      stream: false,
      n: 0,
      line: () => whole() + "\n",
      whole,
      commit: () => (keepMs === 0 ? unload(entry) : load(entry, keepMs))
    }
  }

  const textAnswer = (
    ctx: Ctx,
    kind: "generate" | "chat",
    model: string,
    entry: ModelEntry,
    stream: boolean,
    promptTokens: number,
    keepMs: number | undefined,
    numPredict: unknown
  ): Answer => {
    // options.num_predict below the answer's length cuts it short, as Ollama does (done_reason "length").
    const cut = typeof numPredict === "number" && Number.isInteger(numPredict) && numPredict > 0 && numPredict < ctx.chunks
    const n = cut ? numPredict : ctx.chunks
    const mj = JSON.stringify(model)
    const loadNs = loadNsFor(entry)
    const isGen = kind === "generate"
    const reason = cut ? "length" : "stop"
    const tail = isGen ? `"done_reason":"${reason}","context":[1,2,3],` : `"done_reason":"${reason}",`
    return {
      stream,
      n,
      line: (i) => {
        const ts = new Date().toISOString()
        if (i < n) {
          return isGen
            ? `{"model":${mj},"created_at":"${ts}","response":${pj(i)},"done":false}\n`
            : `{"model":${mj},"created_at":"${ts}","message":{"role":"assistant","content":${pj(i)}},"done":false}\n`
        }
        return isGen
          ? `{"model":${mj},"created_at":"${ts}","response":"","done":true,${tail}${counters(ctx, promptTokens, n, loadNs)}}\n`
          : `{"model":${mj},"created_at":"${ts}","message":{"role":"assistant","content":""},"done":true,${tail}${counters(ctx, promptTokens, n, loadNs)}}\n`
      },
      whole: () => {
        const ts = new Date().toISOString()
        return isGen
          ? `{"model":${mj},"created_at":"${ts}","response":${wj(n)},"done":true,${tail}${counters(ctx, promptTokens, n, loadNs)}}`
          : `{"model":${mj},"created_at":"${ts}","message":{"role":"assistant","content":${wj(n)}},"done":true,${tail}${counters(ctx, promptTokens, n, loadNs)}}`
      },
      commit: () => load(entry, keepMs)
    }
  }

  /**
   * A chat answer that calls `tool` (Ollama's shape: arguments as an object, `fakeToolArguments`),
   * streamed as Ollama does: one chunk with the call, then the final chunk.
   */
  const toolCallAnswer = (
    ctx: Ctx,
    model: string,
    entry: ModelEntry,
    stream: boolean,
    promptTokens: number,
    keepMs: number | undefined,
    tool: Record<string, unknown>
  ): Answer => {
    const mj = JSON.stringify(model)
    const fn = (tool.function ?? {}) as Record<string, unknown>
    const calls = JSON.stringify([{ function: { name: fn.name, arguments: fakeToolArguments(fn.parameters) } }])
    const final = (extra: string) =>
      `{"model":${mj},"created_at":"${new Date().toISOString()}","message":{"role":"assistant","content":""${extra}},"done":true,"done_reason":"stop",${counters(ctx, promptTokens, 1, loadNsFor(entry))}}`
    return {
      stream,
      n: 1,
      line: (i) =>
        i === 0
          ? `{"model":${mj},"created_at":"${new Date().toISOString()}","message":{"role":"assistant","content":"","tool_calls":${calls}},"done":false}\n`
          : final("") + "\n",
      whole: () => final(`,"tool_calls":${calls}`),
      commit: () => load(entry, keepMs)
    }
  }

  const jsonAnswer = (body: () => string, commit: () => void): Answer => ({
    stream: false,
    n: 0,
    line: () => body() + "\n",
    whole: body,
    commit
  })

  // ---------------------------------------------------------------------- handlers

  type Body = Record<string, unknown>

  const optionOf = (body: Body, name: string): unknown =>
    typeof body.options === "object" && body.options !== null ? (body.options as Body)[name] : undefined

  /** Common checks: model present and installed. Returns the entry or undefined after answering. */
  const requireModel = (res: http.ServerResponse, model: unknown): ModelEntry | undefined => {
    if (typeof model !== "string" || model === "") {
      sendJson(res, 400, errBody("model is required"))
      return undefined
    }
    const entry = find(model)
    if (entry === undefined) {
      sendJson(res, 404, errBody(`model '${model}' not found`))
      return undefined
    }
    return entry
  }

  const generate = (ctx: Ctx, body: Body): void => {
    const entry = requireModel(ctx.res, body.model)
    if (entry === undefined) return
    const model = body.model as string
    if (!entry.completion) return sendJson(ctx.res, 400, errBody(`"${model}" does not support generate`))
    const keepMs = parseKeepAlive(body.keep_alive)
    const prompt = typeof body.prompt === "string" ? body.prompt : ""
    if (prompt === "") return deliver(ctx, loadAnswer("generate", model, entry, keepMs))
    const system = typeof body.system === "string" ? body.system : ""
    const stream = body.stream !== false
    deliver(ctx, textAnswer(ctx, "generate", model, entry, stream, fakeTokenCount(system + prompt), keepMs, optionOf(body, "num_predict")))
  }

  const chat = (ctx: Ctx, body: Body): void => {
    const entry = requireModel(ctx.res, body.model)
    if (entry === undefined) return
    const model = body.model as string
    const messages = body.messages ?? []
    if (!Array.isArray(messages)) {
      return sendJson(
        ctx.res,
        400,
        errBody(`json: cannot unmarshal ${goType(messages)} into Go struct field ChatRequest.messages of type []api.Message`)
      )
    }
    if (!entry.completion) return sendJson(ctx.res, 400, errBody(`"${model}" does not support chat`))
    const keepMs = parseKeepAlive(body.keep_alive)
    if (messages.length === 0) return deliver(ctx, loadAnswer("chat", model, entry, keepMs))
    let text = ""
    for (const m of messages) {
      const c = m !== null && typeof m === "object" ? (m as Body).content : undefined
      if (typeof c === "string") text += c
    }
    const stream = body.stream !== false
    const promptTokens = Math.max(1, fakeTokenCount(text))
    // Given tools and a user's turn, the fake calls the first tool (a real model would decide).
    const last = messages[messages.length - 1] as Body | undefined
    const tools = Array.isArray(body.tools) ? body.tools as Array<Body> : []
    if (tools.length > 0 && last?.role === "user") {
      return deliver(ctx, toolCallAnswer(ctx, model, entry, stream, promptTokens, keepMs, tools[0]!))
    }
    deliver(ctx, textAnswer(ctx, "chat", model, entry, stream, promptTokens, keepMs, optionOf(body, "num_predict")))
  }

  /**
   * Ollama's OpenAI-compatible chat (`/v1/chat/completions`), non-streaming: what OpenAI-speaking
   * proxies (Portkey's `ollama` provider) call upstream. The same text and counters as /api/chat.
   */
  const openAiChat = (ctx: Ctx, body: Body): void => {
    const entry = requireModel(ctx.res, body.model)
    if (entry === undefined) return
    if (body.stream === true) return sendJson(ctx.res, 400, JSON.stringify({ error: { message: "this fake answers /v1/chat/completions without streaming", type: "invalid_request_error" } }))
    let text = ""
    for (const m of Array.isArray(body.messages) ? body.messages : []) {
      const c = m !== null && typeof m === "object" ? (m as Body).content : undefined
      if (typeof c === "string") text += c
    }
    const promptTokens = Math.max(1, fakeTokenCount(text))
    const n = ctx.chunks
    const model = body.model as string
    const content = fakeText(hostName, n)
    deliver(ctx, jsonAnswer(() => JSON.stringify({
      id: `chatcmpl-${Math.floor(Math.random() * 1000)}`,
      object: "chat.completion",
      created: Math.floor(Date.now() / 1000),
      model,
      system_fingerprint: "fp_ollama",
      choices: [{ index: 0, message: { role: "assistant", content }, finish_reason: "stop" }],
      usage: { prompt_tokens: promptTokens, completion_tokens: n, total_tokens: promptTokens + n }
    }), () => load(entry, parseKeepAlive(body.keep_alive))))
  }

  const embed = (ctx: Ctx, body: Body): void => {
    const entry = requireModel(ctx.res, body.model)
    if (entry === undefined) return
    const model = body.model as string
    const input = body.input
    let inputs: string[]
    if (input === undefined || input === null) inputs = []
    else if (typeof input === "string") inputs = input === "" ? [] : [input]
    else if (Array.isArray(input) && input.every((x) => typeof x === "string")) inputs = input as string[]
    else return sendJson(ctx.res, 400, errBody("invalid input type"))
    const dims = typeof body.dimensions === "number" && body.dimensions > 0 ? Math.floor(body.dimensions) : 8
    const keepMs = parseKeepAlive(body.keep_alive)
    const loadNs = loadNsFor(entry)
    let tokens = 0
    for (const s of inputs) tokens += fakeTokenCount(s)
    const mj = JSON.stringify(model)
    deliver(
      ctx,
      jsonAnswer(
        () => {
          const embeddings = JSON.stringify(inputs.map((s) => fakeEmbedding(model, s, dims)))
          const pd = tokens * 100_000
          const total = Math.max(Math.round((performance.now() - ctx.t0) * 1e6), loadNs + pd)
          return `{"model":${mj},"embeddings":${embeddings},"total_duration":${total},"load_duration":${loadNs},"prompt_eval_count":${tokens}}`
        },
        () => load(entry, keepMs)
      )
    )
  }

  const embeddings = (ctx: Ctx, body: Body): void => {
    const entry = requireModel(ctx.res, body.model)
    if (entry === undefined) return
    const model = body.model as string
    const prompt = typeof body.prompt === "string" ? body.prompt : ""
    const keepMs = parseKeepAlive(body.keep_alive)
    deliver(
      ctx,
      jsonAnswer(
        () => `{"embedding":${prompt === "" ? "[]" : JSON.stringify(fakeEmbedding(model, prompt))}}`,
        () => load(entry, keepMs)
      )
    )
  }

  const show = (res: http.ServerResponse, body: Body): void => {
    const entry = requireModel(res, body.model ?? body.name)
    if (entry === undefined) return
    const f = entry.family
    sendJson(
      res,
      200,
      JSON.stringify({
        license: "",
        modelfile: `# Modelfile generated by "ollama show"\nFROM ${entry.name}\n`,
        parameters: "",
        template: "{{ .Prompt }}",
        details: entry.details,
        model_info: {
          "general.architecture": f,
          "general.parameter_count": entry.paramCount,
          "general.quantization_version": 2,
          [`${f}.context_length`]: 8192,
          [`${f}.embedding_length`]: 2560
        },
        capabilities: entry.capabilities,
        modified_at: MODIFIED_AT
      })
    )
  }

  const notFound = (res: http.ServerResponse, head = false): void => sendText(res, 404, "404 page not found", head)

  const handleGet = (res: http.ServerResponse, path: string, head: boolean): void => {
    switch (path) {
      case "/":
        return sendText(res, 200, ROOT_TEXT, head)
      case "/api/version":
        return sendJson(res, 200, versionBody, head)
      case "/api/tags":
        return sendJson(res, 200, tagsBody, head)
      case "/api/ps":
        return sendJson(res, 200, psBody(), head)
      default:
        return notFound(res, head)
    }
  }

  const handlePost = (req: http.IncomingMessage, res: http.ServerResponse, path: string, raw: string, ctx: Ctx | undefined): void => {
    let body: Body | undefined
    let error: string | undefined
    let recorded: unknown = undefined
    if (raw.length === 0 || raw.trim().length === 0) {
      error = "missing request body"
    } else {
      try {
        const v: unknown = JSON.parse(raw)
        recorded = v
        if (v === null) body = {}
        else if (typeof v === "object" && !Array.isArray(v)) body = v as Body
        else error = `json: cannot unmarshal ${goType(v)} into Go value of type api.Request`
      } catch (e) {
        recorded = raw
        error = goJsonError(raw, e)
      }
    }
    if (record) requests.push({ method: "POST", path, body: recorded, headers: req.headers, at: Date.now() })
    if (path !== "/api/show" && ctx === undefined) return notFound(res)
    if (body === undefined) return sendJson(res, 400, errBody(error ?? "missing request body"))
    switch (path) {
      case "/api/generate":
        return generate(ctx!, body)
      case "/api/chat":
        return chat(ctx!, body)
      case "/api/embed":
        return embed(ctx!, body)
      case "/api/embeddings":
        return embeddings(ctx!, body)
      case "/api/show":
        return show(res, body)
      case "/v1/chat/completions":
        return openAiChat(ctx!, body)
    }
  }

  const onRequest = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const url = req.url ?? "/"
    const q = url.indexOf("?")
    const path = q === -1 ? url : url.slice(0, q)
    const method = req.method ?? "GET"
    if (method !== "POST") {
      req.resume()
      if (record) requests.push({ method, path, body: undefined, headers: req.headers, at: Date.now() })
      if (method === "GET" || method === "HEAD") return handleGet(res, path, method === "HEAD")
      return notFound(res)
    }
    let ctx: Ctx | undefined
    if (isInference(path)) {
      const c: Ctx = {
        req,
        res,
        mode,
        delayMs,
        chunks,
        t0: performance.now(),
        closed: false,
        timer: undefined
      }
      ctx = c
      inFlightN++
      if (inFlightN > maxInFlightN) maxInFlightN = inFlightN
      res.once("close", () => {
        c.closed = true
        if (c.timer !== undefined) clearTimeout(c.timer)
        inFlightN--
      })
    }
    let first: Buffer | undefined
    let more: Buffer[] | undefined
    req.on("data", (chunk: Buffer) => {
      if (first === undefined) first = chunk
      else (more ??= [first]).push(chunk)
    })
    req.once("end", () => {
      const buf = more !== undefined ? Buffer.concat(more) : first
      if (ctx !== undefined) countModel(buf, ctx)
      handlePost(req, res, path, buf === undefined ? "" : buf.toString("utf8"), ctx)
    })
    req.once("error", () => {
      /* socket gone; res "close" does the bookkeeping */
    })
  }

  // ---------------------------------------------------------------------- server lifecycle

  const server = http.createServer({ noDelay: true, keepAliveTimeout: 60_000 }, onRequest)
  server.headersTimeout = 61_000
  const sockets = new Set<Socket>()
  server.on("connection", (s: Socket) => {
    sockets.add(s)
    s.once("close", () => sockets.delete(s))
  })
  server.on("clientError", (_err, socket) => {
    socket.destroy()
  })

  let port = opts.port ?? 0
  let listening = false

  const listen = (p: number): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      const onError = (e: Error) => {
        server.off("listening", onListening)
        reject(e)
      }
      const onListening = () => {
        server.off("error", onError)
        listening = true
        port = (server.address() as AddressInfo).port
        resolve()
      }
      server.once("error", onError)
      server.once("listening", onListening)
      server.listen(p, "127.0.0.1")
    })

  await listen(port)

  const fake: FakeOllama = {
    get url() {
      return `http://127.0.0.1:${port}`
    },
    get port() {
      return port
    },
    name: hostName,
    requests,
    setMode(m, o) {
      mode = m
      if (o?.delayMs !== undefined) delayMs = o.delayMs
      if (o?.chunks !== undefined) chunks = o.chunks
    },
    setResident,
    finishDelayed: () => {
      for (const fire of [...delayed]) fire()
    },
    inFlight: () => inFlightN,
    maxInFlight: () => maxInFlightN,
    maxInFlightOf: (model) => byModel.get(model)?.max ?? 0,
    reset() {
      requests.length = 0
      maxInFlightN = inFlightN
      for (const m of byModel.values()) m.max = m.now
    },
    stop() {
      if (!listening) return Promise.resolve()
      listening = false
      return new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
        for (const s of sockets) s.destroy()
      })
    },
    start() {
      if (listening) return Promise.resolve()
      return listen(port)
    }
  }
  return fake
}

/** Scoped fake: started on acquire, stopped (sockets destroyed, port released) when the scope closes. */
export const FakeOllamaScoped = (opts?: FakeOllamaOptions) =>
  Effect.acquireRelease(
    Effect.promise(() => startFakeOllama(opts)),
    (f) => Effect.promise(() => f.stop())
  )
