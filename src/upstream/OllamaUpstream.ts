/**
 * Talking to one Ollama host: a unary call (non-streaming generate/chat, embed, tags, ps, show) or a
 * streaming call that is handed back only once its first NDJSON line has arrived, so a failure before
 * the first token can still fail over to the next host.
 */
import { HttpClient, HttpClientRequest, type HttpClientResponse } from "@effect/platform"
import { NodeHttpClient } from "@effect/platform-node"
import { Data, Effect, Exit, Option, Scope, Stream } from "effect"
import type { Usage } from "../domain/OllamaApi.ts"
import { LineSplitter, parseLine } from "./Ndjson.ts"

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
  /** The remaining lines; fails with UpstreamFailure on a mid-stream break, stall or garbage. */
  readonly rest: Stream.Stream<Uint8Array, UpstreamFailure>
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

const errorCode = (cause: unknown): string | undefined => {
  let current: unknown = cause
  for (let depth = 0; depth < 5 && typeof current === "object" && current !== null; depth++) {
    const code = (current as { code?: unknown }).code
    if (typeof code === "string") return code
    current = (current as { cause?: unknown }).cause
  }
  return undefined
}

const transportFailure = (host: string, cause: unknown): UpstreamFailure => {
  const code = errorCode(cause)
  const refused = code === "ECONNREFUSED" || code === "EHOSTUNREACH" || code === "ENOTFOUND" || code === "EAI_AGAIN"
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

export class OllamaUpstream extends Effect.Service<OllamaUpstream>()("awooop/OllamaUpstream", {
  effect: Effect.gen(function*() {
    const client = yield* HttpClient.HttpClient
    const scopedClient = HttpClient.withScope(client)

    const post = (target: HostTarget, path: string, body: Uint8Array) =>
      HttpClientRequest.post(target.url.replace(/\/$/, "") + path).pipe(
        HttpClientRequest.bodyUint8Array(body, "application/json")
      )

    const checkStatus = (target: HostTarget, response: HttpClientResponse.HttpClientResponse) =>
      response.status >= 200 && response.status < 300
        ? Effect.succeed(response)
        : response.text.pipe(
          Effect.orElseSucceed(() => ""),
          Effect.flatMap((text) => Effect.fail(statusFailure(target.name, response.status, text)))
        )

    /** One JSON request/answer within `timeoutMs` (connect, headers and body). */
    const unary = (target: HostTarget, method: "GET" | "POST", path: string, body: Uint8Array | null, timeoutMs: number) =>
      Effect.gen(function*() {
        const request = method === "POST" && body !== null
          ? post(target, path, body)
          : HttpClientRequest.get(target.url.replace(/\/$/, "") + path)
        const response = yield* client.execute(request).pipe(
          Effect.mapError((e) => transportFailure(target.name, e.cause ?? e))
        )
        yield* checkStatus(target, response)
        const buffer = yield* response.arrayBuffer.pipe(Effect.mapError((e) => transportFailure(target.name, e.cause ?? e)))
        const bytes = new Uint8Array(buffer)
        const parsed = parseLine(bytes)
        if (parsed._tag !== "Chunk") {
          return yield* new UpstreamFailure({ host: target.name, kind: "malformed", status: null, message: parsed._tag === "Malformed" ? parsed.message : "empty answer" })
        }
        if (typeof parsed.value.error === "string") {
          return yield* new UpstreamFailure({ host: target.name, kind: "server-error", status: response.status, message: parsed.value.error })
        }
        return { bytes, json: parsed.value } satisfies UnaryResult
      }).pipe(
        Effect.timeoutFail({ duration: timeoutMs, onTimeout: () => timeoutFailure(target.name, timeoutMs, "answer") })
      )

    /**
     * A streaming call. Succeeds once the first line is in (within `timeoutMs`); after that each
     * further line must arrive within `timeoutMs` of the one before, or the rest fails with a timeout.
     */
    const openStream = (target: HostTarget, path: string, body: Uint8Array, timeoutMs: number) =>
      Effect.gen(function*() {
        const scope = yield* Scope.make()
        const close = Scope.close(scope, Exit.void)
        const splitter = new LineSplitter()
        let usage: Usage | null = null
        let done = false
        const queued: Array<Uint8Array> = []

        // Hand every whole line through; stop reading at `done:true` like the ollama client does.
        const accept = (line: Uint8Array): Effect.Effect<boolean, UpstreamFailure> => {
          const parsed = parseLine(line)
          switch (parsed._tag) {
            case "Blank": return Effect.succeed(false)
            case "Malformed":
              return Effect.fail(new UpstreamFailure({ host: target.name, kind: "malformed", status: null, message: parsed.message }))
            case "Chunk": {
              if (typeof parsed.value.error === "string") {
                return Effect.fail(new UpstreamFailure({ host: target.name, kind: "server-error", status: 200, message: parsed.value.error }))
              }
              queued.push(line)
              if (parsed.value.done === true) {
                done = true
                usage = usageOf(parsed.value)
              }
              return Effect.succeed(true)
            }
          }
        }

        const opened = Effect.gen(function*() {
          const response = yield* scopedClient.execute(post(target, path, body)).pipe(
            Effect.mapError((e) => transportFailure(target.name, e.cause ?? e)),
            Scope.extend(scope)
          )
          yield* checkStatus(target, response)
          const pull = yield* Stream.toPull(response.stream).pipe(Scope.extend(scope))
          // Pull raw chunks until the given number of lines has been queued (or the body ends).
          const nextLines = Effect.gen(function*() {
            while (queued.length === 0 && !done) {
              const chunk = yield* pull.pipe(
                Effect.map(Option.some),
                Effect.catchAll((e) => Option.isNone(e) ? Effect.succeed(Option.none()) : Effect.fail(transportFailure(target.name, e.value.cause ?? e.value)))
              )
              if (Option.isNone(chunk)) {
                const last = splitter.rest()
                if (last !== null) yield* accept(last)
                if (queued.length === 0 && !done) {
                  return yield* new UpstreamFailure({ host: target.name, kind: "truncated", status: null, message: "the stream ended without a done chunk" })
                }
                break
              }
              for (const c of chunk.value) {
                for (const line of splitter.push(c)) {
                  if (!done) yield* accept(line)
                }
              }
            }
            return queued.splice(0, queued.length)
          })
          return nextLines
        })

        const nextLines = yield* opened.pipe(
          Effect.timeoutFail({ duration: timeoutMs, onTimeout: () => timeoutFailure(target.name, timeoutMs, "response") }),
          Effect.onError(() => close)
        )
        const head = yield* nextLines.pipe(
          Effect.timeoutFail({ duration: timeoutMs, onTimeout: () => timeoutFailure(target.name, timeoutMs, "first chunk") }),
          Effect.onError(() => close)
        )
        let finished = done
        const rest: Stream.Stream<Uint8Array, UpstreamFailure> = Stream.repeatEffectOption(
          Effect.suspend(() => {
            if (finished) return Effect.fail(Option.none())
            return nextLines.pipe(
              Effect.timeoutFail({ duration: timeoutMs, onTimeout: () => timeoutFailure(target.name, timeoutMs, "next chunk") }),
              Effect.tap(() => { finished = done }),
              Effect.mapError(Option.some)
            )
          })
        ).pipe(Stream.flattenIterables)
        return { head, rest, usage: () => usage, close } satisfies OpenStream
      })

    return { unary, openStream } as const
  }),
  dependencies: [NodeHttpClient.layerUndici]
}) {}
