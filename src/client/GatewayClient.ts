/**
 * The typed Effect client for internal callers, derived from the gateway's HttpApi (domain/Api.ts):
 * the request types are the server's own request schemas, so a schema change that breaks a caller
 * breaks it at compile time.
 *
 *   const program = Effect.gen(function*() {
 *     const gateway = yield* GatewayClient
 *     const answer = yield* gateway.generate({ model: "gemma3:4b", prompt: "why?" }, { lane: "alert-fast", intent: "DIAGNOSE" })
 *   }).pipe(Effect.provide(GatewayClient.layer({ baseUrl: "http://gateway:11400" })), Effect.provide(FetchHttpClient.layer))
 *
 * - Lane, project, trace and intent are typed options (sent as the X-AwoooP-* headers, validated
 *   before anything is sent); `defaults` in the layer apply to every call.
 * - The gateway's refusals arrive as the tagged errors of domain/Errors.ts (LaneSaturated,
 *   AllHostsUnavailable, …) in the error channel, rebuilt from the X-AwoooP-Error header; refusals
 *   without one are GatewayResponseError with their status.
 * - `generateStream` / `chatStream` are Streams of typed chunks; a stream that fails after it started
 *   (an `{"error"}` line) or ends without its final chunk fails with StreamFailed.
 * - `setLaneMode` / `resetLaneMode` take the operator's admin token (AWOOOP_ADMIN_TOKEN) per call.
 * - Every other endpoint of the API is on `api` (e.g. `api.operations.shadowReport`, `api.admin.budget`
 *   with `headers: { authorization: "Bearer <admin token>" }`).
 */
import { HttpApiClient, HttpClient, type HttpClientError, HttpClientRequest, HttpClientResponse } from "@effect/platform"
import { Context, Effect, Either, Encoding, Layer, type ParseResult, Redacted, Schema, Stream } from "effect"
import {
  type Accepted,
  AwooopHeaders,
  ChatChunk,
  GatewayApi,
  type GatewayRefusal,
  GatewayResponseError,
  GenerateChunk,
  RequestAccepted,
  type RunSubmission,
  StreamFailed
} from "../domain/Api.ts"
import { HeaderNames } from "../domain/CallerContext.ts"
import { errorHeaderName, GatewayErrorSchema } from "../domain/ErrorWire.ts"
import { ChatRequest, type EmbedRequest, GenerateRequest } from "../domain/OllamaApi.ts"

/** Who is calling, per call (or as `defaults` for all calls). */
export interface CallOptions {
  /** X-AwoooP-Lane: the lane to run on (without it the gateway's legacy rules pick one by model). */
  readonly lane?: string
  /** X-AwoooP-Project-ID */
  readonly project?: string
  /** X-AwoooP-Trace-ID: 32 lowercase hex digits; the journal and the spans use it. */
  readonly trace?: string
  /** X-AwoooP-Intent, e.g. "DIAGNOSE" */
  readonly intent?: string
  /** W3C traceparent of the caller's span (the gateway's span becomes its child). */
  readonly traceparent?: string
}

export interface GatewayClientConfig {
  /** e.g. "http://127.0.0.1:11400" */
  readonly baseUrl: string
  readonly defaults?: CallOptions
  /** The caller's key (config `callers:`), sent as `Authorization: Bearer <key>` on every call but the admin ones (their token instead). */
  readonly apiKey?: Redacted.Redacted<string>
}

/** Everything a call can fail with: the gateway's refusals, a broken stream, transport and decoding. */
export type GatewayClientError = GatewayRefusal | StreamFailed | RequestAccepted | HttpClientError.HttpClientError | ParseResult.ParseError

/** The admin routes' header: `Authorization: Bearer <AWOOOP_ADMIN_TOKEN>`. */
const adminHeaders = (token: Redacted.Redacted<string>) => ({ authorization: `Bearer ${Redacted.value(token)}` })

const headersOf = (defaults: CallOptions | undefined, options: CallOptions | undefined): AwooopHeaders => {
  const o = { ...defaults, ...options }
  return {
    ...(o.lane === undefined ? {} : { [HeaderNames.lane]: o.lane }),
    ...(o.project === undefined ? {} : { [HeaderNames.projectId]: o.project }),
    ...(o.trace === undefined ? {} : { [HeaderNames.traceId]: o.trace }),
    ...(o.intent === undefined ? {} : { [HeaderNames.intent]: o.intent }),
    ...(o.traceparent === undefined ? {} : { [HeaderNames.traceparent]: o.traceparent })
  }
}

const json = (value: unknown, response: HttpClientResponse.HttpClientResponse) =>
  HttpClientResponse.fromWeb(
    response.request,
    new Response(JSON.stringify(value), { status: response.status, headers: { "content-type": "application/json" } })
  )

const messageOf = (text: string): string => {
  try {
    const body = JSON.parse(text) as { error?: unknown }
    if (typeof body.error === "string") return body.error
    if (typeof body.error === "object" && body.error !== null && typeof (body.error as { message?: unknown }).message === "string") {
      return (body.error as { message: string }).message
    }
  } catch {
    // not JSON: the text itself
  }
  return text
}

/**
 * A refusal's body becomes the tagged error it names (from X-AwoooP-Error), or a GatewayResponseError,
 * so the HttpApi client decodes it into the class registered for its status.
 */
const retag = (response: HttpClientResponse.HttpClientResponse): Effect.Effect<HttpClientResponse.HttpClientResponse> => {
  if (response.status < 400) return Effect.succeed(response)
  const header = response.headers[errorHeaderName]
  const tagged = header === undefined ? undefined : Either.getOrUndefined(Encoding.decodeBase64UrlString(header))
  if (tagged !== undefined) {
    return Effect.succeed(HttpClientResponse.fromWeb(
      response.request,
      new Response(tagged, { status: response.status, headers: { "content-type": "application/json" } })
    ))
  }
  return response.text.pipe(
    Effect.orElseSucceed(() => ""),
    Effect.map((text) => json({ _tag: "GatewayResponseError", status: response.status, message: messageOf(text) || `HTTP ${response.status}` }, response))
  )
}

const Refusal = Schema.Union(GatewayErrorSchema, GatewayResponseError)
const decodeRefusal = Schema.decodeUnknown(Schema.parseJson(Refusal))

const StreamErrorLine = Schema.Struct({ error: Schema.String })

/** An answer, or RequestAccepted when the gateway queued the request as a run (or only decided it). */
const answered = <A extends { readonly done: boolean }>(value: A | Accepted): Effect.Effect<A, RequestAccepted> =>
  "done" in value && typeof value.done === "boolean" ? Effect.succeed(value as A) : Effect.fail(new RequestAccepted({ accepted: value as Accepted }))

export const make = (config: GatewayClientConfig) =>
  Effect.gen(function*() {
    const httpClient = (yield* HttpClient.HttpClient).pipe(
      HttpClient.mapRequest(HttpClientRequest.prependUrl(config.baseUrl)),
      // The caller's key, unless the call names its own Authorization (the admin calls' token).
      HttpClient.mapRequest((request) =>
        config.apiKey === undefined || request.headers["authorization"] !== undefined ? request : HttpClientRequest.bearerToken(request, config.apiKey)
      ),
      HttpClient.transformResponse(Effect.flatMap(retag))
    )
    /** The client HttpApiClient derives from the API, for calls this module does not wrap. */
    const api = yield* HttpApiClient.makeWith(GatewayApi, { httpClient })
    const headers = (options?: CallOptions) => headersOf(config.defaults, options)
    // The HttpClient propagates the current span as traceparent (so the gateway joins the caller's
    // trace); a traceparent the caller names itself must not be overwritten.
    const explicitParent = (options?: CallOptions) => (options?.traceparent ?? config.defaults?.traceparent) !== undefined
    const call = <A, E, R>(effect: Effect.Effect<A, E, R>, options?: CallOptions): Effect.Effect<A, E, R> =>
      explicitParent(options) ? Effect.locally(effect, HttpClient.currentTracerPropagation, false) : effect

    /** POST a streaming request and decode its NDJSON lines as `chunk` until the final one. */
    const stream = <P, PI, C extends { readonly done: boolean }, CI>(
      path: string,
      payloadSchema: Schema.Schema<P, PI>,
      payload: P,
      chunk: Schema.Schema<C, CI>,
      options?: CallOptions
    ): Stream.Stream<C, GatewayClientError> =>
      Stream.unwrap(Effect.gen(function*() {
        const encodedHeaders = yield* Schema.encode(AwooopHeaders)(headers(options))
        const request = yield* HttpClientRequest.post(path).pipe(
          HttpClientRequest.setHeaders(encodedHeaders as Record<string, string>),
          HttpClientRequest.schemaBodyJson(payloadSchema)(payload),
          Effect.orDie // the schema already validated the payload; a body that cannot be serialised is a bug
        )
        const response = yield* call(httpClient.execute(request), options)
        if (response.status >= 400) {
          const refusal = yield* Effect.flatMap(response.text, decodeRefusal)
          return yield* Effect.fail(refusal)
        }
        const line = Schema.decodeUnknown(Schema.parseJson(Schema.Union(StreamErrorLine, chunk)))
        let finished = false
        return response.stream.pipe(
          Stream.decodeText(),
          Stream.splitLines,
          Stream.filter((l) => l.trim() !== ""),
          Stream.mapEffect((text) =>
            Effect.flatMap(line(text), (value): Effect.Effect<C, StreamFailed> =>
              "error" in value && typeof value.error === "string" && !("done" in value)
                ? Effect.fail(new StreamFailed({ message: value.error }))
                : Effect.succeed(value as C))
          ),
          Stream.takeUntil((c) => (finished = c.done)),
          Stream.concat(Stream.suspend(() =>
            finished ? Stream.empty : Stream.fail(new StreamFailed({ message: "the stream ended without its final chunk" }))
          ))
        )
      }))

    return {
      api,
      /** POST /api/generate, one answer. */
      generate: (request: Omit<GenerateRequest, "stream">, options?: CallOptions) =>
        call(api.ollama.generate({ payload: { ...request, stream: false }, headers: headers(options) }), options).pipe(Effect.flatMap(answered)),
      /** POST /api/generate, streamed: the chunks, the last one with `done: true` and the counters. */
      generateStream: (request: Omit<GenerateRequest, "stream">, options?: CallOptions) =>
        stream("/api/generate", GenerateRequest, { ...request, stream: true }, GenerateChunk, options),
      /** POST /api/chat, one answer. */
      chat: (request: Omit<ChatRequest, "stream">, options?: CallOptions) =>
        call(api.ollama.chat({ payload: { ...request, stream: false }, headers: headers(options) }), options).pipe(Effect.flatMap(answered)),
      /** POST /api/chat, streamed. */
      chatStream: (request: Omit<ChatRequest, "stream">, options?: CallOptions) =>
        stream("/api/chat", ChatRequest, { ...request, stream: true }, ChatChunk, options),
      /** POST /api/embed */
      embed: (request: EmbedRequest, options?: CallOptions) => call(api.ollama.embed({ payload: request, headers: headers(options) }), options),
      /** GET /api/tags: every model installed on any host, with the hosts that have it. */
      tags: api.ollama.tags(),
      /** GET /api/ps: the models resident in memory, per host. */
      ps: api.ollama.ps(),
      /** POST /api/show: the model's details from the first host that has it (`awooop_host`). */
      show: (model: string) => api.ollama.show({ payload: { model } }),
      /** POST /awooop/runs: an async run (202); poll `runStatus` with its id. */
      submitRun: (request: RunSubmission, options?: CallOptions) =>
        // The endpoint takes the headers as any string (the gateway refuses a malformed one itself):
        // validated here, so invalid options still never leave the client.
        Effect.flatMap(Schema.validate(AwooopHeaders)(headers(options)), (validated) =>
          // (Narrowed per operation: the derived request type is a union of one request per payload member.)
          request.operation === "generate"
            ? call(api.runs.submit({ payload: request, headers: validated }), options)
            : call(api.runs.submit({ payload: request, headers: validated }), options)),
      /** GET /awooop/runs/:id */
      runStatus: (runId: string) => api.runs.status({ path: { id: runId } }),
      /** DELETE /awooop/runs/:id */
      cancelRun: (runId: string) => api.runs.cancel({ path: { id: runId } }),
      /** GET /awooop/traces/:traceId: the trace's runs and events (of the caller's project). */
      trace: (traceId: string) => api.runs.trace({ path: { traceId } }),
      /** GET /awooop/cost: cost ledger totals, `groupBy` comma-separated (project, lane, provider, model, day, caller). */
      cost: (query: { readonly from?: string; readonly to?: string; readonly groupBy?: string } = {}) => api.runs.cost({ urlParams: query }),
      /** GET /awooop/health */
      health: api.operations.health(),
      /**
       * PUT /awooop/admin/lanes/:lane/mode: pins the lane to "shadow" (decide and journal, execute
       * nothing) or "active", with the reason journaled; `changed: false` when it was pinned so already.
       */
      setLaneMode: (lane: string, mode: "active" | "shadow", reason: string, adminToken: Redacted.Redacted<string>) =>
        api.admin.setLaneMode({ path: { lane }, headers: adminHeaders(adminToken), payload: { mode, reason } }),
      /** DELETE /awooop/admin/lanes/:lane/mode: removes the pin, the config's mode applies again. */
      resetLaneMode: (lane: string, adminToken: Redacted.Redacted<string>, reason?: string) =>
        api.admin.resetLaneMode({
          path: { lane },
          urlParams: {},
          headers: adminHeaders(adminToken),
          payload: reason === undefined ? {} : { reason }
        })
    }
  })


export type GatewayClientService = Effect.Effect.Success<ReturnType<typeof make>>

export class GatewayClient extends Context.Tag("awooop/GatewayClient")<GatewayClient, GatewayClientService>() {
  /** Needs an HttpClient (FetchHttpClient.layer, NodeHttpClient.layerUndici, …). */
  static readonly layer = (config: GatewayClientConfig): Layer.Layer<GatewayClient, never, HttpClient.HttpClient> =>
    Layer.effect(GatewayClient, make(config))
}
