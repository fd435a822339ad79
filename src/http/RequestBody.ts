/**
 * Reading a request body: a size limit (413), JSON that parses (400 naming the problem), and a
 * schema that names the field at fault.
 */
import { HttpIncomingMessage, HttpServerRequest } from "@effect/platform"
import { Effect, Either, Option, ParseResult, Schema } from "effect"
import { BadRequest, BodyTooLarge } from "../domain/Errors.ts"

const decoder = new TextDecoder("utf-8", { fatal: true })

export const readJson = (maxBytes: number) =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const declared = Number(request.headers["content-length"] ?? "0")
    if (Number.isFinite(declared) && declared > maxBytes) return yield* new BodyTooLarge({ limit: maxBytes })
    const bytes = yield* request.arrayBuffer.pipe(
      HttpIncomingMessage.withMaxBodySize(Option.some(maxBytes)),
      Effect.mapError((e) =>
        /max|size|large|limit/i.test(String((e.cause as Error | undefined)?.message ?? e.message))
          ? new BodyTooLarge({ limit: maxBytes })
          : new BadRequest({ message: `could not read the request body: ${e.message}` })
      )
    )
    if (bytes.byteLength > maxBytes) return yield* new BodyTooLarge({ limit: maxBytes })
    return yield* parseJsonObject(new Uint8Array(bytes))
  })

/** A request body as a JSON object, or a BadRequest saying what is wrong with it. */
export const parseJsonObject = (bytes: Uint8Array) =>
  Effect.gen(function*() {
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
