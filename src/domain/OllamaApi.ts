/**
 * Ollama request bodies the gateway accepts. Decoding drops unknown fields (Ollama ignores them too)
 * and checks the types of known ones, so nothing unvalidated reaches a host or the journal.
 */
import { Schema } from "effect"

const FiniteNumber = Schema.Number.pipe(Schema.finite())
const OptionValue = Schema.Union(FiniteNumber, Schema.String, Schema.Boolean, Schema.Array(Schema.String), Schema.Null)
export const Options = Schema.Record({ key: Schema.String, value: OptionValue })

const KeepAlive = Schema.Union(FiniteNumber, Schema.String)
const Format = Schema.Union(Schema.String, Schema.Record({ key: Schema.String, value: Schema.Unknown }))
const Think = Schema.Union(Schema.Boolean, Schema.Literal("low", "medium", "high"))
const Model = Schema.String.pipe(Schema.minLength(1, { message: () => "model is required" }), Schema.maxLength(256))

export const GenerateRequest = Schema.Struct({
  model: Model,
  prompt: Schema.optional(Schema.String),
  suffix: Schema.optional(Schema.String),
  system: Schema.optional(Schema.String),
  template: Schema.optional(Schema.String),
  context: Schema.optional(Schema.Array(Schema.Int)),
  stream: Schema.optional(Schema.Boolean),
  raw: Schema.optional(Schema.Boolean),
  format: Schema.optional(Format),
  keep_alive: Schema.optional(KeepAlive),
  images: Schema.optional(Schema.Array(Schema.String)),
  options: Schema.optional(Options),
  think: Schema.optional(Think),
  truncate: Schema.optional(Schema.Boolean),
  shift: Schema.optional(Schema.Boolean),
  logprobs: Schema.optional(Schema.Boolean),
  top_logprobs: Schema.optional(Schema.Int.pipe(Schema.between(0, 20)))
})
export type GenerateRequest = typeof GenerateRequest.Type

export const ChatMessage = Schema.Struct({
  role: Schema.Literal("system", "user", "assistant", "tool"),
  content: Schema.optionalWith(Schema.String, { default: () => "" }),
  images: Schema.optional(Schema.Array(Schema.String)),
  tool_calls: Schema.optional(Schema.Array(Schema.Record({ key: Schema.String, value: Schema.Unknown }))),
  tool_name: Schema.optional(Schema.String),
  thinking: Schema.optional(Schema.String)
})

export const ChatRequest = Schema.Struct({
  model: Model,
  messages: Schema.optionalWith(Schema.Array(ChatMessage), { default: () => [] }),
  tools: Schema.optional(Schema.Array(Schema.Record({ key: Schema.String, value: Schema.Unknown }))),
  format: Schema.optional(Format),
  options: Schema.optional(Options),
  stream: Schema.optional(Schema.Boolean),
  keep_alive: Schema.optional(KeepAlive),
  think: Schema.optional(Think),
  logprobs: Schema.optional(Schema.Boolean),
  top_logprobs: Schema.optional(Schema.Int.pipe(Schema.between(0, 20)))
})
export type ChatRequest = typeof ChatRequest.Type

export const EmbedRequest = Schema.Struct({
  model: Model,
  input: Schema.Union(Schema.String, Schema.Array(Schema.String)),
  truncate: Schema.optional(Schema.Boolean),
  dimensions: Schema.optional(Schema.Int.pipe(Schema.positive())),
  keep_alive: Schema.optional(KeepAlive),
  options: Schema.optional(Options)
})
export type EmbedRequest = typeof EmbedRequest.Type

export const EmbeddingsRequest = Schema.Struct({
  model: Model,
  prompt: Schema.String,
  keep_alive: Schema.optional(KeepAlive),
  options: Schema.optional(Options)
})
export type EmbeddingsRequest = typeof EmbeddingsRequest.Type

export const ShowRequest = Schema.Struct({
  model: Schema.optional(Model),
  /** Older clients send `name`. */
  name: Schema.optional(Model),
  verbose: Schema.optional(Schema.Boolean)
})

/**
 * Ollama's naming rule: a model without a tag is `<name>:latest` (`ollama pull bge-m3` is listed by
 * /api/tags as "bge-m3:latest"). Compare model names only through this.
 */
export const canonicalModel = (name: string): string => {
  const slash = name.lastIndexOf("/")
  return name.indexOf(":", slash + 1) < 0 ? `${name}:latest` : name
}
export const sameModel = (a: string, b: string): boolean => a === b || canonicalModel(a) === canonicalModel(b)

/** The operations the gateway routes; each is one Ollama endpoint. */
export type Operation = "generate" | "chat" | "embed" | "embeddings"

/**
 * A decoded Ollama request, by operation: what a lane runs (decoded once, where its body is parsed:
 * the Ollama routes, the protocol adapters, the async-run routes).
 */
export type OllamaRequest =
  | { readonly operation: "generate"; readonly body: GenerateRequest }
  | { readonly operation: "chat"; readonly body: ChatRequest }
  | { readonly operation: "embed"; readonly body: EmbedRequest }
  | { readonly operation: "embeddings"; readonly body: EmbeddingsRequest }
export const operationPath: Record<Operation, string> = {
  generate: "/api/generate",
  chat: "/api/chat",
  embed: "/api/embed",
  embeddings: "/api/embeddings"
}

/** Counters from a final Ollama chunk (or a whole non-streaming answer). */
export interface Usage {
  readonly inputTokens: number | null
  readonly outputTokens: number | null
  readonly doneReason: string | null
}
