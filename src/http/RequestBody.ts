/**
 * Reading a request body: a size limit (413), JSON that parses (400 naming the problem), and a
 * schema that names the field at fault.
 */
import { HttpServerRequest } from "@effect/platform"
import { NodeHttpServerRequest } from "@effect/platform-node"
import { Effect, Either, Option, ParseResult, Schema } from "effect"
import type { IncomingMessage, ServerResponse } from "node:http"
import { BadRequest, BodyTooLarge, InFlightBytesExceeded } from "../domain/Errors.ts"
import { Gateway } from "../routing/Gateway.ts"
import { lingerAfterAnswer } from "./LingeringClose.ts"
import { type BodyBudget, defaultJsonLimits, type JsonLimits, scanJson, shapeProblem, tooDeep, tooManyMessages } from "./RequestLimits.ts"

const decoder = new TextDecoder("utf-8", { fatal: true })

/**
 * The platform router's JSON body: read from the node request like the fast path's (so a too-large
 * chunked body gets its 413 and `Connection: close`, not a reset), within the in-flight limits and
 * the JSON limits of the gateway's config when there is one.
 */
export const readJson = (maxBytes: number) =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const gateway = yield* Effect.serviceOption(Gateway)
    const bytes = yield* readBody(NodeHttpServerRequest.toIncomingMessage(request), maxBytes, {
      res: NodeHttpServerRequest.toServerResponse(request),
      ...(Option.isSome(gateway) ? { bodies: gateway.value.bodies } : {})
    })
    return yield* parseJsonObject(bytes, Option.isSome(gateway) ? gateway.value.config.server : defaultJsonLimits)
  })

type BodyRefusal = BodyTooLarge | InFlightBytesExceeded

/** Which in-flight limit a chunk the budget would not take passes. */
const inFlightRefusal = (bodies: BodyBudget, n: number): InFlightBytesExceeded =>
  bodies.inFlight + n > bodies.limits.maxInFlightBodyBytes
    ? new InFlightBytesExceeded({ limit: "server.maxInFlightBodyBytes", bytes: bodies.limits.maxInFlightBodyBytes })
    : new InFlightBytesExceeded({ limit: "server.maxInFlightBodyBytesPerClient", bytes: bodies.limits.maxInFlightBodyBytesPerClient })

/**
 * Reads the body up to `max` bytes; a larger one is refused (BodyTooLarge) without buffering it.
 * With `bodies`, the bytes count against the in-flight limits while they arrive (503 beyond them).
 * A refused body is not kept: `res` (when given) gets `Connection: close`, and the rest of the body
 * is read and dropped until the socket ends after the answer (LingeringClose.ts).
 */
export const readBody = (
  req: IncomingMessage,
  max: number,
  options: { readonly res?: ServerResponse; readonly bodies?: BodyBudget } = {}
) =>
  Effect.async<Uint8Array, BodyRefusal | BadRequest>((resume) => {
    const refuse = (error: BodyRefusal) => {
      if (!req.complete && options.res !== undefined && !options.res.headersSent) {
        // The socket ends after the answer; what the caller still sends is dropped until then.
        options.res.setHeader("connection", "close")
        lingerAfterAnswer(req)
      } else {
        req.pause()
      }
      resume(Effect.fail(error))
    }
    const declared = Number(req.headers["content-length"])
    if (Number.isFinite(declared) && declared > max) return refuse(new BodyTooLarge({ limit: max }))
    const bodies = options.bodies
    const client = req.socket.remoteAddress ?? "unknown"
    const chunks: Array<Buffer> = []
    let size = 0
    let held = 0
    const cleanup = () => {
      req.off("data", onData)
      req.off("end", onEnd)
      req.off("error", onError)
      req.off("close", onClose)
      bodies?.give(client, held)
      held = 0
    }
    const stop = (error: BodyRefusal | BadRequest) => {
      cleanup()
      return error._tag === "BadRequest" ? resume(Effect.fail(error)) : refuse(error)
    }
    const onData = (chunk: Buffer) => {
      size += chunk.length
      if (size > max) return stop(new BodyTooLarge({ limit: max }))
      if (bodies !== undefined) {
        if (!bodies.take(client, chunk.length)) {
          cleanup() // first: the limit named is the one passed with this body's own bytes given back
          return refuse(inFlightRefusal(bodies, chunk.length))
        }
        held += chunk.length
      }
      chunks.push(chunk)
    }
    const onEnd = () => {
      cleanup()
      resume(Effect.succeed(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size)))
    }
    const onError = (e: Error) => stop(new BadRequest({ message: `could not read the request body: ${e.message}` }))
    // A client gone before the end: its bytes go back to the in-flight budget whatever else happens.
    const onClose = () => stop(new BadRequest({ message: "the client closed the connection before the request body ended" }))
    req.on("data", onData)
    req.on("end", onEnd)
    req.on("error", onError)
    req.on("close", onClose)
    return Effect.sync(cleanup)
  })

/** A request body as a JSON object, or a BadRequest saying what is wrong with it. */
export const parseJsonObject = (bytes: Uint8Array, limits: JsonLimits = defaultJsonLimits) =>
  Effect.gen(function*() {
    // Before JSON.parse: nothing recursive (stringify, the schema, error formatting) ever sees it.
    const scan = scanJson(bytes, limits)
    if (scan._tag === "TooDeep") return yield* tooDeep(limits.maxJsonDepth)
    if (scan._tag === "TooManyMessages") return yield* tooManyMessages(`more than ${limits.maxMessages}`, limits.maxMessages)
    const text = yield* Effect.try({
      try: () => decoder.decode(bytes),
      catch: () => new BadRequest({ message: "request body is not valid UTF-8" })
    })
    if (text.trim() === "") return yield* new BadRequest({ message: "request body is empty: expected a JSON object" })
    const value = yield* Effect.try({
      try: () => JSON.parse(text) as unknown,
      catch: (e) => new BadRequest({ message: `request body is not valid JSON: ${(e as Error).message}` })
    })
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      return yield* new BadRequest({ message: "request body must be a JSON object" })
    }
    const problem = shapeProblem(value as Record<string, unknown>, limits)
    if (problem !== null) return yield* problem
    return value as Record<string, unknown>
  })

/**
 * Decodes with the schema; the error names the first field at fault, the way Ollama's do. `at` is
 * where `value` sits in the body (a part decoded on its own, e.g. `["input", 2]`).
 */
export const decodeBody = <A, I>(schema: Schema.Schema<A, I>, value: unknown, at: ReadonlyArray<PropertyKey> = []) => {
  const result = Schema.decodeUnknownEither(schema, { onExcessProperty: "ignore" })(value)
  if (Either.isRight(result)) return Effect.succeed(result.right)
  const [first] = ParseResult.ArrayFormatter.formatErrorSync(result.left)
  const field = [...at, ...(first?.path ?? [])].map(String).join(".")
  const message = field === "model" && first?.message.includes("model is required")
    ? "model is required"
    : field === "model" && first?._tag === "Missing"
    ? "model is required"
    : `invalid request: ${field === "" ? "" : `${field}: `}${first?.message ?? "does not match the expected shape"}`
  return Effect.fail(new BadRequest({ message }))
}
