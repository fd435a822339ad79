/**
 * An OllamaUpstream whose hosts follow a script, on Effect's Clock: a reply's delay is an
 * `Effect.sleep` and a step's timeout an `Effect.timeoutFail`, so a routing scenario with 300 ms step
 * timeouts runs under `TestClock` in no real time at all. The production upstream keeps its single
 * setTimeout per call (the hot path, upstream/OllamaUpstream.ts); what routing does with a timeout,
 * a refusal or a 503 is the same whichever upstream reported it.
 *
 *   const upstream = makeScriptedUpstream(["gcp-a", "gcp-b"])
 *   upstream.host("gcp-a").script({ _tag: "Hang" })
 *   Layer.succeed(OllamaUpstream, upstream.service)
 */
import { Effect } from "effect"
import { type FailureKind, type HostTarget, OllamaUpstream, UpstreamFailure, usageOf } from "../../src/upstream/OllamaUpstream.ts"
import { DEFAULT_MODELS, fakeText } from "./FakeOllama.ts"

/** What a host does with the next inference call. */
export type Reply =
  /** Answers "[host] hello world" (`chunks` stream lines, `gapMs` apart) after `afterMs`. */
  | { readonly _tag: "Answer"; readonly afterMs?: number; readonly chunks?: number; readonly gapMs?: number }
  /** Never answers: only the step's timeout (or an interruption) ends the call. */
  | { readonly _tag: "Hang" }
  /** Fails before any byte, as the real upstream reports it (e.g. "busy" for a 503, "refused"). */
  | { readonly _tag: "Fail"; readonly kind: FailureKind; readonly status?: number; readonly afterMs?: number }

export interface ScriptedHost {
  readonly name: string
  /** The reply to every following inference call. */
  readonly script: (reply: Reply) => void
  /** Inference calls (POSTs) it received, in order. */
  readonly requests: () => ReadonlyArray<{ readonly path: string; readonly body: Record<string, unknown> }>
  readonly inFlight: () => number
  readonly maxInFlight: () => number
  /** Polls (/api/tags, /api/ps, /api/version) fail as refused while it is down. */
  readonly setDown: (down: boolean) => void
}

const ok: Reply = { _tag: "Answer", afterMs: 0 }

const makeHost = (name: string): ScriptedHost & {
  readonly reply: () => Reply
  readonly enter: (path: string, body: Uint8Array | null) => Effect.Effect<void>
  readonly leave: Effect.Effect<void>
  readonly down: () => boolean
} => {
  let reply: Reply = ok
  let down = false
  let inFlight = 0
  let maxInFlight = 0
  const requests: Array<{ readonly path: string; readonly body: Record<string, unknown> }> = []
  return {
    name,
    script: (r) => (reply = r),
    requests: () => requests,
    inFlight: () => inFlight,
    maxInFlight: () => maxInFlight,
    setDown: (d) => (down = d),
    reply: () => reply,
    down: () => down,
    enter: (path, body) =>
      Effect.sync(() => {
        requests.push({ path, body: body === null ? {} : JSON.parse(Buffer.from(body).toString("utf8")) as Record<string, unknown> })
        inFlight++
        maxInFlight = Math.max(maxInFlight, inFlight)
      }),
    leave: Effect.sync(() => void inFlight--)
  }
}

const encode = (json: Record<string, unknown>) => Buffer.from(JSON.stringify(json) + "\n")

const pollAnswer = (path: string): Record<string, unknown> =>
  path === "/api/tags"
    ? { models: DEFAULT_MODELS.map((m) => ({ name: m.name, model: m.name, details: { parameter_size: m.parameterSize, family: m.family } })) }
    : path === "/api/ps"
    ? { models: [] }
    : { version: "0.0.0-scripted" }

const failure = (host: string, reply: Extract<Reply, { _tag: "Fail" }>) =>
  new UpstreamFailure({ host, kind: reply.kind, status: reply.status ?? null, message: `${reply.status ?? reply.kind}: scripted ${reply.kind}` })

/** Waits as the script says; fails as the script says; never returns for Hang. */
const delay = (host: string, reply: Reply): Effect.Effect<void, UpstreamFailure> =>
  reply._tag === "Hang"
    ? Effect.never
    : Effect.zipRight(Effect.sleep(reply.afterMs ?? 0), reply._tag === "Fail" ? Effect.fail(failure(host, reply)) : Effect.void)

const deadline = (host: string, ms: number, what: string) => <A>(effect: Effect.Effect<A, UpstreamFailure>) =>
  Effect.timeoutFail(effect, {
    duration: ms,
    onTimeout: () => new UpstreamFailure({ host, kind: "timeout", status: null, message: `no ${what} within ${ms / 1000}s` })
  })

export const makeScriptedUpstream = (names: ReadonlyArray<string>) => {
  const hosts = new Map(names.map((n) => [n, makeHost(n)] as const))
  const host = (name: string) => {
    const h = hosts.get(name)
    if (h === undefined) throw new Error(`no scripted host ${name}`)
    return h
  }
  const lines = (target: HostTarget, body: Uint8Array, chunks: number): Array<Uint8Array> => {
    const model = (JSON.parse(Buffer.from(body).toString("utf8")) as { model?: string }).model ?? ""
    const text = fakeText(target.name, chunks)
    const pieces = Array.from({ length: chunks }, (_, i) => fakeText(target.name, i + 1).slice(fakeText(target.name, i).length))
    return chunks === 0
      ? [encode({ model, response: text, done: true, done_reason: "stop", prompt_eval_count: 1, eval_count: 0 })]
      : pieces.map((p, i) => encode({ model, response: p, done: i === chunks - 1, ...(i === chunks - 1 ? { done_reason: "stop", prompt_eval_count: 1, eval_count: chunks } : {}) }))
  }

  const unary = (target: HostTarget, method: "GET" | "POST", path: string, body: Uint8Array | null, timeoutMs: number) => {
    const h = host(target.name)
    if (method === "GET") {
      return h.down()
        ? Effect.fail(new UpstreamFailure({ host: target.name, kind: "refused", status: null, message: "connection refused (ECONNREFUSED)" }))
        : Effect.succeed({ bytes: encode(pollAnswer(path)), json: pollAnswer(path) })
    }
    const reply = h.reply()
    const answer = Effect.suspend(() => {
      const model = (JSON.parse(Buffer.from(body!).toString("utf8")) as { model?: string }).model ?? ""
      const json = { model, response: fakeText(target.name, reply._tag === "Answer" ? reply.chunks ?? 3 : 3), done: true, done_reason: "stop", prompt_eval_count: 1, eval_count: 3 }
      return Effect.succeed({ bytes: encode(json), json })
    })
    return Effect.zipRight(h.enter(path, body), Effect.zipRight(delay(target.name, reply), answer)).pipe(
      deadline(target.name, timeoutMs, "answer"),
      Effect.ensuring(h.leave)
    )
  }

  const openStream = (target: HostTarget, path: string, body: Uint8Array, timeoutMs: number) => {
    const h = host(target.name)
    const reply = h.reply()
    const all = lines(target, body, reply._tag === "Answer" ? reply.chunks ?? 3 : 3)
    const gapMs = reply._tag === "Answer" ? reply.gapMs ?? 0 : 0
    let next = 1
    let closed = false
    const close: Effect.Effect<undefined> = Effect.suspend(() => {
      if (closed) return Effect.void
      closed = true
      return h.leave
    }).pipe(Effect.as(undefined))
    const pull: Effect.Effect<Uint8Array | null, UpstreamFailure> = Effect.suspend(() =>
      next >= all.length ? Effect.succeed(null) : Effect.as(Effect.sleep(gapMs), all[next++]!).pipe(deadline(target.name, timeoutMs, "next chunk")))
    return Effect.zipRight(h.enter(path, body), delay(target.name, reply)).pipe(
      deadline(target.name, timeoutMs, "first chunk"),
      Effect.onError(() => close),
      Effect.as({ head: [all[0]!] as Array<Uint8Array>, pull, usage: () => (next >= all.length ? usageOf(JSON.parse(Buffer.from(all.at(-1)!).toString("utf8")) as Record<string, unknown>) : null), close })
    )
  }

  return { host, service: OllamaUpstream.make({ unary, openStream }) }
}
