/**
 * Talking to one Ollama host: a unary call (non-streaming generate/chat, embed, tags, ps, show) or a
 * streaming call that is handed back only once its first NDJSON line has arrived, so a failure before
 * the first token can still fail over to the next host.
 */
import { Data, Effect, Exit } from "effect"
import { EventEmitter } from "node:events"
import { Agent, type Dispatcher, request } from "undici"
import type { Usage } from "../domain/OllamaApi.ts"
import { errorCode, isRefusedCode } from "./ErrorCode.ts"
import { joinLines, LineSplitter, parseLine } from "./Ndjson.ts"

export type FailureKind =
  | "timeout"       // no answer (or no next chunk) within the step's timeout
  | "refused"       // connection refused: the host is down
  | "reset"         // the connection broke
  | "busy"          // 503: Ollama's queue is full
  | "server-error"  // other 5xx, or an {"error"} line in place of the first chunk
  | "not-found"     // 404: the model is not on this host
  | "rejected"      // other 4xx: the request itself is at fault, so no failover
  | "malformed"     // the host sent something that is not Ollama's wire format
  | "truncated"     // the stream ended without a done chunk

export class UpstreamFailure extends Data.TaggedError("UpstreamFailure")<{
  readonly host: string
  readonly kind: FailureKind
  readonly status: number | null
  readonly message: string
}> {}

/** Failures that say the host could not take the request at all (what `when: unavailable` waits for). */
export const isUnavailableFailure = (f: UpstreamFailure) => f.kind === "refused" || f.kind === "busy"

export interface HostTarget {
  readonly name: string
  readonly url: string
}

export interface UnaryResult {
  readonly bytes: Uint8Array
  readonly json: Record<string, unknown>
}

export interface OpenStream {
  /** Lines already received (at least one, the first chunk), each ending with "\n". */
  readonly head: ReadonlyArray<Uint8Array>
  /**
   * The next whole lines that arrived together (one chunk), or null once the answer is over; fails
   * with UpstreamFailure on a mid-stream break, stall or garbage.
   */
  readonly pull: Effect.Effect<Uint8Array | null, UpstreamFailure>
  /** The final chunk's counters once `done:true` went by, else null. */
  readonly usage: () => Usage | null
  /** Aborts the upstream request and frees its connection; idempotent. */
  readonly close: Effect.Effect<void>
}

export const usageOf = (chunk: Record<string, unknown>): Usage => ({
  inputTokens: typeof chunk.prompt_eval_count === "number" ? chunk.prompt_eval_count : null,
  outputTokens: typeof chunk.eval_count === "number" ? chunk.eval_count : null,
  doneReason: typeof chunk.done_reason === "string" ? chunk.done_reason : null
})

const transportFailure = (host: string, cause: unknown): UpstreamFailure => {
  const code = errorCode(cause)
  const refused = isRefusedCode(code)
  return new UpstreamFailure({
    host,
    kind: refused ? "refused" : "reset",
    status: null,
    message: refused ? `connection refused (${code})` : `connection failed${code ? ` (${code})` : ""}: ${String((cause as Error)?.message ?? cause)}`
  })
}

const statusFailure = (host: string, status: number, body: string): UpstreamFailure => {
  let message = body.slice(0, 500)
  try {
    const parsed = JSON.parse(body) as { error?: unknown }
    if (typeof parsed.error === "string") message = parsed.error
  } catch { /* not JSON: keep the text */ }
  const kind: FailureKind = status === 503 ? "busy" : status === 404 ? "not-found" : status >= 500 ? "server-error" : "rejected"
  return new UpstreamFailure({ host, kind, status, message: `${status}: ${message}` })
}

const timeoutFailure = (host: string, ms: number, what: string) =>
  new UpstreamFailure({ host, kind: "timeout", status: null, message: `no ${what} within ${ms / 1000}s` })

/**
 * A request's abort switch. undici accepts an EventEmitter as `signal`; an AbortController per call
 * costs ~15 µs of EventTarget machinery on the hot path, this costs next to nothing.
 */
class Abort extends EventEmitter {
  aborted = false
  abort() {
    if (this.aborted) return
    this.aborted = true
    this.emit("abort")
  }
}

/**
 * Runs `run` (which never rejects) under one timer: whichever comes first, its answer or the
 * deadline, resumes the fiber; the timer is cleared, and on a timeout or an interruption the request
 * is aborted. One timer and one callback per call: `Effect.timeoutFail` would fork two fibers and
 * costs ten times as much on the hot path (BENCHMARKS.md).
 */
const withDeadline = <A>(
  ms: number,
  onTimeout: () => UpstreamFailure,
  run: (signal: Abort) => Promise<Exit.Exit<A, UpstreamFailure>>,
  cancel: () => void = () => {}
): Effect.Effect<A, UpstreamFailure> =>
  Effect.async<A, UpstreamFailure>((resume) => {
    const controller = new Abort()
    let live = true
    const stop = () => {
      controller.abort()
      cancel()
    }
    const timer = setTimeout(() => {
      if (!live) return
      live = false
      stop()
      resume(Exit.fail(onTimeout()))
    }, ms)
    const settle = (exit: Exit.Exit<A, UpstreamFailure>) => {
      if (!live) return
      live = false
      clearTimeout(timer)
      resume(exit)
    }
    // `run` turns every failure it expects into an Exit; anything it throws is a bug: a defect.
    run(controller).then(settle, (defect) => settle(Exit.die(defect)))
    return Effect.sync(() => {
      if (!live) return
      live = false
      clearTimeout(timer)
      stop()
    })
  })

/**
 * undici directly rather than the platform HttpClient: this is the hot path, and the plain client
 * keeps the gateway's added latency small (BENCHMARKS.md). Interruption aborts the request.
 */
export class OllamaUpstream extends Effect.Service<OllamaUpstream>()("awooop/OllamaUpstream", {
  scoped: Effect.gen(function*() {
    const agent = yield* Effect.acquireRelease(
      Effect.sync(() => new Agent({ keepAliveTimeout: 30_000, connections: 256, headersTimeout: 0, bodyTimeout: 0 })),
      (a) => Effect.promise(() => a.destroy())
    )
    const headers = { "content-type": "application/json" }

    /** The response with a 2xx status, or the failure it stands for (never rejects). */
    const send = async (
      target: HostTarget,
      method: "GET" | "POST",
      path: string,
      body: Uint8Array | null,
      signal: Abort
    ): Promise<Dispatcher.ResponseData | UpstreamFailure> => {
      let response: Dispatcher.ResponseData
      try {
        response = await request(target.url.replace(/\/$/, "") + path, {
          method,
          dispatcher: agent,
          headers: body === null ? {} : headers,
          body,
          signal
        })
      } catch (error) {
        return transportFailure(target.name, error)
      }
      if (response.statusCode >= 200 && response.statusCode < 300) return response
      return statusFailure(target.name, response.statusCode, await response.body.text().catch(() => ""))
    }

    /** One JSON request/answer within `timeoutMs` (connect, headers and body). */
    const unary = (target: HostTarget, method: "GET" | "POST", path: string, body: Uint8Array | null, timeoutMs: number) =>
      withDeadline<UnaryResult>(timeoutMs, () => timeoutFailure(target.name, timeoutMs, "answer"), async (signal) => {
        const response = await send(target, method, path, method === "POST" ? body : null, signal)
        if (response instanceof UpstreamFailure) return Exit.fail(response)
        let bytes: Uint8Array
        try {
          bytes = new Uint8Array(await response.body.arrayBuffer())
        } catch (error) {
          return Exit.fail(transportFailure(target.name, error))
        }
        const parsed = parseLine(bytes)
        if (parsed._tag !== "Chunk") {
          return Exit.fail(new UpstreamFailure({ host: target.name, kind: "malformed", status: null, message: parsed._tag === "Malformed" ? parsed.message : "empty answer" }))
        }
        if (typeof parsed.value.error === "string") {
          return Exit.fail(new UpstreamFailure({ host: target.name, kind: "server-error", status: response.statusCode, message: parsed.value.error }))
        }
        return Exit.succeed({ bytes, json: parsed.value })
      })

    /**
     * A streaming call. Succeeds once the first line is in (within `timeoutMs`); after that each
     * further line must arrive within `timeoutMs` of the one before, or the rest fails with a timeout.
     */
    const openStream = (target: HostTarget, path: string, body: Uint8Array, timeoutMs: number) =>
      Effect.gen(function*() {
        const splitter = new LineSplitter()
        let usage: Usage | null = null
        let done = false
        const queued: Array<Uint8Array> = []
        let response: Dispatcher.ResponseData | null = null
        let iterator: AsyncIterator<Buffer> | null = null
        const destroy = () => {
          response?.body.destroy()
          response = null
        }
        // After the done line Ollama ends the body at once: reading that end keeps the keep-alive
        // connection for the next call, where destroying the body would close the socket (and
        // build an abort error with a stack trace) on every stream. A host that sends more than
        // a little, or does not end within a second, is cut off.
        const finish = () => {
          const opened = response
          const it = iterator
          response = null
          if (opened === null) return
          if (!done || it === null) return void opened.body.destroy()
          const timer = setTimeout(() => opened.body.destroy(), 1_000)
          void (async () => {
            let bytes = 0
            try {
              for (;;) {
                const next = await it.next()
                if (next.done) break
                bytes += next.value.length
                if (bytes > 64 * 1024) {
                  opened.body.destroy()
                  break
                }
              }
            } catch { /* destroyed or broken: nothing to keep */ }
            clearTimeout(timer)
          })()
        }
        const close = Effect.sync(finish)

        // Hand every whole line through; stop reading at `done:true` like the ollama client does.
        const accept = (line: Uint8Array): UpstreamFailure | null => {
          const parsed = parseLine(line)
          switch (parsed._tag) {
            case "Blank": return null
            case "Malformed":
              return new UpstreamFailure({ host: target.name, kind: "malformed", status: null, message: parsed.message })
            case "Chunk": {
              if (typeof parsed.value.error === "string") {
                return new UpstreamFailure({ host: target.name, kind: "server-error", status: 200, message: parsed.value.error })
              }
              queued.push(line)
              if (parsed.value.done === true) {
                done = true
                usage = usageOf(parsed.value)
              }
              return null
            }
          }
        }

        // Reads raw chunks until at least one whole line is queued (or the body ends); never rejects.
        const nextLines = async (): Promise<Exit.Exit<Array<Uint8Array>, UpstreamFailure>> => {
          while (queued.length === 0 && !done) {
            let chunk: IteratorResult<Buffer>
            try {
              chunk = await iterator!.next()
            } catch (error) {
              return Exit.fail(transportFailure(target.name, error))
            }
            if (chunk.done) {
              const last = splitter.rest()
              const failure = last === null ? null : accept(last)
              if (failure !== null) return Exit.fail(failure)
              if (queued.length === 0 && !done) {
                return Exit.fail(new UpstreamFailure({ host: target.name, kind: "truncated", status: null, message: "the stream ended without a done chunk" }))
              }
              break
            }
            for (const line of splitter.push(chunk.value)) {
              if (done) break
              const failure = accept(line)
              if (failure !== null) return Exit.fail(failure)
            }
          }
          return Exit.succeed(queued.splice(0, queued.length))
        }

        const head = yield* withDeadline(timeoutMs, () => timeoutFailure(target.name, timeoutMs, "first chunk"), async (signal) => {
          const opened = await send(target, "POST", path, body, signal)
          if (opened instanceof UpstreamFailure) return Exit.fail(opened)
          response = opened
          iterator = opened.body[Symbol.asyncIterator]()
          return nextLines()
        }, destroy).pipe(
          Effect.onExit((exit) => Exit.isSuccess(exit) ? Effect.void : close)
        )
        let finished = done
        const pull: Effect.Effect<Uint8Array | null, UpstreamFailure> = Effect.suspend(() => {
          if (finished) return Effect.succeed(null)
          return Effect.map(
            withDeadline(timeoutMs, () => timeoutFailure(target.name, timeoutMs, "next chunk"), nextLines, destroy),
            (lines) => {
              finished = done
              return lines.length === 0 ? null : joinLines(lines)
            }
          )
        })
        return { head, pull, usage: () => usage, close } satisfies OpenStream
      })

    return { unary, openStream } as const
  })
}) {}
