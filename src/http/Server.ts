/**
 * The HTTP server: the routes, a catch-all that keeps every failure in Ollama's protocol, server
 * timeouts against slow clients, and a graceful drain on shutdown.
 *
 * Three ways in, one listener: the node:http edge for every route that runs on a lane (Edge.ts);
 * HttpApiBuilder for every other route the gateway's HttpApi declares (ApiServer.ts); the
 * platform router for what the HttpApi does not declare (`routerRoutes` below says which, and why).
 */
import { HttpRouter, HttpServer, HttpServerError, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { Cause, Clock, Config, Context, Effect, Fiber, Layer, Ref } from "effect"
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http"
import { RouteNotFound, ShuttingDown } from "../domain/Errors.ts"
import { GatewayConfigTag } from "../config/GatewayConfig.ts"
import * as RequestLog from "../observability/RequestLog.ts"
import { Gateway } from "../routing/Gateway.ts"
import { Drain } from "./Drain.ts"
export { Drain } from "./Drain.ts"
import { makeEdgeHandler } from "./Edge.ts"
import { ollamaAdapters } from "./InferenceRoutes.ts"
import { errorResponse, internalErrorMessage, jsonResponse, ollamaError } from "./ErrorResponse.ts"
import { ollamaRoutes } from "./OllamaRoutes.ts"
import { apiApp } from "./ApiServer.ts"
import { openAiAdapters, openAiRoutes } from "./OpenAiRoutes.ts"
import { onEdgeAll } from "./ProtocolAdapter.ts"
import { responsesAdapters } from "./ResponsesRoutes.ts"
import { messagesAdapters } from "./MessagesRoutes.ts"
import { makeConsoleRoutes } from "../console/ConsoleRoutes.ts"

const withDrain = <E, R>(app: Effect.Effect<HttpServerResponse.HttpServerResponse, E, R>) =>
  Effect.flatMap(Drain, (drain) =>
    Effect.withFiberRuntime<HttpServerResponse.HttpServerResponse, E, R>((fiber) => {
      drain.track(fiber)
      return drain.admit(Effect.sync(() => errorResponse(new ShuttingDown())), app)
    }))

/** The request's log line (RequestLog.ts), with the status of the response it got. */
const withRequestLog = <E, R>(app: Effect.Effect<HttpServerResponse.HttpServerResponse, E, R>) =>
  Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) => {
    let status = 500
    return RequestLog.logged(request.method, request.url.split("?")[0] ?? request.url, (how) => how === "interrupted" ? 499 : status,
      Effect.tap(app, (response) => { status = response.status }))
  })

/**
 * What the HttpApi does not declare, on the platform router:
 * - Ollama's `/` banner (plain text, a liveness probe) and the model-management routes it refuses
 *   (pull, push, create, copy, delete, blobs: always 403 NotManaged; nothing for a typed client);
 * - OpenAI's `/v1/models` (OpenAI's shapes and error bodies, for OpenAI SDKs, not the typed client);
 * - the console (HTML pages, a form login with cookies, server-sent events).
 */
const routerRoutes = Effect.map(makeConsoleRoutes, (consoleRoutes) => HttpRouter.concatAll(ollamaRoutes, openAiRoutes, consoleRoutes))

/** The declared API first; a path it does not declare goes on to the router. */
export const app = Effect.gen(function*() {
  const api = yield* apiApp
  const router = yield* HttpRouter.toHttpApp(yield* routerRoutes)
  // (Typed as never failing, the builder's app does fail with RouteNotFound for a path it does not route.)
  const declared: Effect.Effect<HttpServerResponse.HttpServerResponse, unknown, Effect.Effect.Context<typeof api>> = api
  const routes = Effect.catchIf(declared, (e) => e instanceof HttpServerError.RouteNotFound, () => router)
  return withRequestLog(withDrain(routes).pipe(
    Effect.catchIf((e) => e instanceof HttpServerError.RouteNotFound, () =>
      Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) =>
        Effect.succeed(errorResponse(new RouteNotFound({ method: request.method, path: request.url.split("?")[0] ?? request.url }))))),
    Effect.catchAllCause((cause) =>
      Cause.isInterruptedOnly(cause)
        ? Effect.failCause(cause)
        : Effect.logError("unhandled error in a request", cause).pipe(
          Effect.as(jsonResponse(ollamaError(internalErrorMessage, 500), {}, 500))
        ))
  ))
})

/** On shutdown: refuse new requests, wait (up to drainTimeout) for in-flight ones and open streams. */
const DrainOnShutdown = Layer.scopedDiscard(Effect.gen(function*() {
  const drain = yield* Drain
  const gateway = yield* Gateway
  yield* Effect.addFinalizer(() =>
    Effect.gen(function*() {
      yield* Ref.set(drain.draining, true)
      const started = yield* Clock.currentTimeMillis
      // A request is counted by its HTTP handler and, while it holds a lane admission, by its lane.
      const busy = Effect.gen(function*() {
        let inLanes = 0
        for (const lane of gateway.lanes.values()) inLanes += yield* lane.inFlight
        return Math.max(yield* Ref.get(drain.inFlight), inLanes)
      })
      const pending = yield* busy
      if (pending > 0) yield* Effect.logInfo(`draining ${pending} in-flight request(s)`)
      while ((yield* busy) > 0) {
        if ((yield* Clock.currentTimeMillis) - started > gateway.config.server.drainTimeout) {
          yield* Effect.logWarning(`drain timeout: ${yield* busy} request(s) still in flight are cut off`)
          // Cut them here, while the lanes and the journal still run: each run's interruption
          // journals its terminal event, which the journal's close then flushes.
          yield* Fiber.interruptAll([...drain.requests]).pipe(Effect.timeout("5 seconds"), Effect.ignore)
          break
        }
        yield* Effect.sleep(50)
      }
    })
  )
}))

export const ServerConfig = Config.all({
  port: Config.integer("PORT").pipe(Config.withDefault(11400)),
  host: Config.string("HOST").pipe(Config.withDefault("127.0.0.1"))
})

/** The node:http server instance, shared by the platform's HttpServer (address, lifecycle) and our handler. */
export class NodeServer extends Context.Tag("awooop/NodeServer")<NodeServer, Server>() {}

/** The node:http server with timeouts that cut off slow-loris clients. */
export const nodeServerLayer = (options: { port: number; host: string }) =>
  Layer.unwrapEffect(Effect.map(GatewayConfigTag, (config) => {
    const server = createServer({
      requestTimeout: config.server.requestTimeout,
      headersTimeout: config.server.headersTimeout,
      keepAliveTimeout: 5_000,
      // Node checks the two timeouts above on this interval (default 30 s, too coarse to matter).
      connectionsCheckingInterval: Math.min(1_000, config.server.headersTimeout)
    })
    return Layer.merge(NodeHttpServer.layer(() => server, options), Layer.succeed(NodeServer, server))
  }))

/** One request listener: the edge for every route that runs on a lane, the platform router for everything else. */
const Serve = Layer.scopedDiscard(Effect.gen(function*() {
  const server = yield* NodeServer
  const platform = yield* NodeHttpServer.makeHandler(yield* app)
  // Ollama's inference routes, and OpenAI's and Anthropic's protocols translated onto the same lanes.
  const edge = yield* makeEdgeHandler({ ...ollamaAdapters, ...onEdgeAll({ ...openAiAdapters, ...responsesAdapters, ...messagesAdapters }) })
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    if (!edge(req, res)) platform(req, res)
  }
  server.on("request", handler)
  yield* Effect.addFinalizer(() => Effect.sync(() => server.off("request", handler)))
}))

// Built after the listener, so its finalizer (the drain) runs before the listener is removed.
const ServeWithDrain = DrainOnShutdown.pipe(Layer.provide(Serve))

export const HttpLive = Layer.unwrapEffect(Effect.map(ServerConfig, (options) =>
  ServeWithDrain.pipe(
    HttpServer.withLogAddress,
    Layer.provide(nodeServerLayer(options))
  )))

/** For tests: the same server on 127.0.0.1 port 0; read the address from HttpServer. */
export const HttpTest = ServeWithDrain.pipe(Layer.provideMerge(nodeServerLayer({ port: 0, host: "127.0.0.1" })))
