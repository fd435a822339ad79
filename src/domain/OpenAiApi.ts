/**
 * OpenAI-compatible request bodies (`/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`), as
 * the official SDKs send them, and their translation into the Ollama requests the lanes route. The
 * translation yields bodies of the Ollama schemas in OllamaApi.ts (they are decoded by them again),
 * so a lane, a host and a paid provider see exactly what an Ollama caller would have sent.
 */
import { Schema } from "effect"

const Model = Schema.String.pipe(Schema.minLength(1, { message: () => "model is required" }), Schema.maxLength(256))
const OptionalNumber = Schema.optional(Schema.NullOr(Schema.Number.pipe(Schema.finite())))
const OptionalInt = Schema.optional(Schema.NullOr(Schema.Int))
const Stop = Schema.optional(Schema.NullOr(Schema.Union(Schema.String, Schema.Array(Schema.String))))
const StreamOptions = Schema.optional(Schema.NullOr(Schema.Struct({ include_usage: Schema.optional(Schema.NullOr(Schema.Boolean)) })))
/** More than one choice is not offered: a lane answers once. */
const N = Schema.optional(Schema.NullOr(Schema.Literal(1)))

const TextPart = Schema.Struct({ type: Schema.Literal("text"), text: Schema.String })
const ImagePart = Schema.Struct({
  type: Schema.Literal("image_url"),
  image_url: Schema.Union(Schema.String, Schema.Struct({ url: Schema.String, detail: Schema.optional(Schema.String) }))
})
const ContentPart = Schema.Union(TextPart, ImagePart)

const ToolCall = Schema.Struct({
  id: Schema.optional(Schema.String),
  type: Schema.optional(Schema.Literal("function")),
  function: Schema.Struct({ name: Schema.String, arguments: Schema.String })
})

export const OpenAiMessage = Schema.Struct({
  role: Schema.Literal("system", "developer", "user", "assistant", "tool"),
  content: Schema.optional(Schema.NullOr(Schema.Union(Schema.String, Schema.Array(ContentPart)))),
  name: Schema.optional(Schema.String),
  tool_calls: Schema.optional(Schema.NullOr(Schema.Array(ToolCall))),
  tool_call_id: Schema.optional(Schema.String)
})
export type OpenAiMessage = typeof OpenAiMessage.Type

const Tool = Schema.Struct({
  type: Schema.Literal("function"),
  function: Schema.Struct({
    name: Schema.String,
    description: Schema.optional(Schema.String),
    parameters: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.Unknown }))
  })
})

const ResponseFormat = Schema.Union(
  Schema.Struct({ type: Schema.Literal("text") }),
  Schema.Struct({ type: Schema.Literal("json_object") }),
  Schema.Struct({
    type: Schema.Literal("json_schema"),
    json_schema: Schema.Struct({
      name: Schema.optional(Schema.String),
      schema: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.Unknown })),
      strict: Schema.optional(Schema.NullOr(Schema.Boolean))
    })
  })
)

const Sampling = {
  temperature: OptionalNumber,
  top_p: OptionalNumber,
  frequency_penalty: OptionalNumber,
  presence_penalty: OptionalNumber,
  seed: OptionalInt,
  stop: Stop,
  max_tokens: OptionalInt,
  stream: Schema.optional(Schema.NullOr(Schema.Boolean)),
  stream_options: StreamOptions,
  n: N
}

export const ChatCompletionRequest = Schema.Struct({
  model: Model,
  messages: Schema.Array(OpenAiMessage).pipe(Schema.minItems(1, { message: () => "messages must not be empty" })),
  max_completion_tokens: OptionalInt,
  response_format: Schema.optional(Schema.NullOr(ResponseFormat)),
  tools: Schema.optional(Schema.NullOr(Schema.Array(Tool))),
  ...Sampling
})
export type ChatCompletionRequest = typeof ChatCompletionRequest.Type

export const CompletionRequest = Schema.Struct({
  model: Model,
  prompt: Schema.Union(Schema.String, Schema.Array(Schema.String).pipe(Schema.itemsCount(1, { message: () => "only one prompt per request is supported" }))),
  suffix: Schema.optional(Schema.NullOr(Schema.String)),
  ...Sampling
})
export type CompletionRequest = typeof CompletionRequest.Type

export const EmbeddingRequest = Schema.Struct({
  model: Model,
  input: Schema.Union(Schema.String, Schema.Array(Schema.String).pipe(Schema.minItems(1, { message: () => "input must not be empty" }))),
  encoding_format: Schema.optional(Schema.Literal("float", "base64")),
  dimensions: Schema.optional(Schema.Int.pipe(Schema.positive()))
})
export type EmbeddingRequest = typeof EmbeddingRequest.Type

// ---------------------------------------------------------------------------------------------
// Translation to Ollama requests
// ---------------------------------------------------------------------------------------------

/** Sampling settings as Ollama `options`. */
export const optionsOf = (r: {
  readonly temperature?: number | null | undefined
  readonly top_p?: number | null | undefined
  readonly frequency_penalty?: number | null | undefined
  readonly presence_penalty?: number | null | undefined
  readonly seed?: number | null | undefined
  readonly stop?: string | ReadonlyArray<string> | null | undefined
  readonly max_tokens?: number | null | undefined
}, maxTokens: number | null | undefined) => {
  const options: Record<string, number | ReadonlyArray<string>> = {}
  if (r.temperature != null) options.temperature = r.temperature
  if (r.top_p != null) options.top_p = r.top_p
  if (r.frequency_penalty != null) options.frequency_penalty = r.frequency_penalty
  if (r.presence_penalty != null) options.presence_penalty = r.presence_penalty
  if (r.seed != null) options.seed = r.seed
  if (r.stop != null) options.stop = typeof r.stop === "string" ? [r.stop] : r.stop
  if (maxTokens != null) options.num_predict = maxTokens
  return Object.keys(options).length === 0 ? {} : { options }
}

/** A data: URL's base64 payload (Ollama takes images as base64); other URLs are refused. */
export const imageOf = (url: string, field = "image_url"): string | { readonly error: string } => {
  const match = /^data:[^;,]*;base64,(.*)$/s.exec(url)
  return match === null ? { error: `only data: URLs (base64) are supported for ${field}` } : match[1]!
}

/** A tool call's arguments (a JSON object in a string), or the message of a 400 naming `field`. */
export const parseArguments = (
  text: string,
  field = "tool_calls[].function.arguments"
): { readonly args: Record<string, unknown> } | { readonly error: string } => {
  try {
    const value: unknown = JSON.parse(text)
    return typeof value === "object" && value !== null && !Array.isArray(value)
      ? { args: value as Record<string, unknown> }
      : { error: `${field} must be a JSON object` }
  } catch {
    return { error: `${field} is not valid JSON` }
  }
}

/** The Ollama /api/chat body for a chat completion request, or the message of a 400. */
export const toOllamaChat = (r: ChatCompletionRequest, stream: boolean): Record<string, unknown> | { readonly error: string } => {
  const toolNames = new Map<string, string>()
  const messages: Array<Record<string, unknown>> = []
  for (const m of r.messages) {
    let content = ""
    const images: Array<string> = []
    if (typeof m.content === "string") content = m.content
    else if (m.content != null) {
      for (const part of m.content) {
        if (part.type === "text") content += part.text
        else {
          const image = imageOf(typeof part.image_url === "string" ? part.image_url : part.image_url.url)
          if (typeof image !== "string") return image
          images.push(image)
        }
      }
    }
    const message: Record<string, unknown> = { role: m.role === "developer" ? "system" : m.role, content }
    if (images.length > 0) message.images = images
    if (m.tool_calls != null && m.tool_calls.length > 0) {
      const calls: Array<Record<string, unknown>> = []
      for (const call of m.tool_calls) {
        const parsed = parseArguments(call.function.arguments)
        if ("error" in parsed) return parsed
        if (call.id !== undefined) toolNames.set(call.id, call.function.name)
        calls.push({ function: { name: call.function.name, arguments: parsed.args } })
      }
      message.tool_calls = calls
    }
    if (m.role === "tool") {
      const name = m.name ?? (m.tool_call_id === undefined ? undefined : toolNames.get(m.tool_call_id))
      if (name !== undefined) message.tool_name = name
    }
    messages.push(message)
  }
  const format = r.response_format == null || r.response_format.type === "text"
    ? {}
    : r.response_format.type === "json_object"
    ? { format: "json" }
    : { format: r.response_format.json_schema.schema ?? "json" }
  return {
    model: r.model,
    messages,
    stream,
    ...optionsOf(r, r.max_completion_tokens ?? r.max_tokens),
    ...format,
    ...(r.tools == null || r.tools.length === 0 ? {} : { tools: r.tools })
  }
}

/** The Ollama /api/generate body for a legacy completion request. */
export const toOllamaGenerate = (r: CompletionRequest, stream: boolean): Record<string, unknown> => ({
  model: r.model,
  prompt: typeof r.prompt === "string" ? r.prompt : r.prompt[0]!,
  ...(r.suffix == null ? {} : { suffix: r.suffix }),
  stream,
  ...optionsOf(r, r.max_tokens)
})

/** The Ollama /api/embed body for an embeddings request. */
export const toOllamaEmbed = (r: EmbeddingRequest): Record<string, unknown> => ({
  model: r.model,
  input: r.input,
  ...(r.dimensions === undefined ? {} : { dimensions: r.dimensions })
})
