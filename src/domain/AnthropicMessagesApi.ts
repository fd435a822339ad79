/**
 * Anthropic's Messages API (`POST /v1/messages`) request bodies, as `@anthropic-ai/sdk` sends them,
 * and their translation into the Ollama chat the lane routes (decoded by OllamaApi's ChatRequest
 * again). Content blocks are decoded one by one by their `type` (`MessageBlocks`), so a refusal names
 * the block and field at fault (`messages.0.content.1.source.data`).
 *
 * Mapping: `system` → a system message; text blocks → the message's content, base64 image blocks →
 * its images; an assistant's `tool_use` blocks → Ollama tool_calls; a user's `tool_result` blocks →
 * `tool` messages (before the rest of that user turn, where Anthropic requires them);
 * `max_tokens` → num_predict, `stop_sequences` → stop, `temperature`/`top_p`/`top_k` → options;
 * tools → Ollama function tools (their `input_schema` as parameters). Thinking blocks an assistant
 * turn carries back are dropped (an Ollama model cannot read their signatures).
 */
import { Schema } from "effect"

const Model = Schema.String.pipe(Schema.minLength(1, { message: () => "model is required" }), Schema.maxLength(256))
const JsonObject = Schema.Record({ key: Schema.String, value: Schema.Unknown })

const TextBlock = Schema.Struct({ type: Schema.Literal("text"), text: Schema.String })
const ImageBlock = Schema.Struct({
  type: Schema.Literal("image"),
  source: Schema.Struct({
    type: Schema.Literal("base64").annotations({ message: () => "only base64 image sources are supported (not url or file)" }),
    media_type: Schema.String,
    data: Schema.String.pipe(Schema.minLength(1, { message: () => "image data must not be empty" }))
  })
})
const ToolUseBlock = Schema.Struct({ type: Schema.Literal("tool_use"), id: Schema.String, name: Schema.String, input: JsonObject })
const ToolResultBlock = Schema.Struct({
  type: Schema.Literal("tool_result"),
  tool_use_id: Schema.String,
  /** A string, or text and image blocks (decoded as ResultBlocks). */
  content: Schema.optional(Schema.Union(Schema.String, Schema.Array(Schema.Unknown))),
  is_error: Schema.optional(Schema.Boolean)
})
const ThinkingBlock = Schema.Struct({ type: Schema.Literal("thinking", "redacted_thinking") })

/** The blocks a message may hold, by `type`. */
export const MessageBlocks = {
  text: TextBlock,
  image: ImageBlock,
  tool_use: ToolUseBlock,
  tool_result: ToolResultBlock,
  thinking: ThinkingBlock,
  redacted_thinking: ThinkingBlock
} as const

/** The blocks a tool_result's content may hold. */
export const ResultBlocks = { text: TextBlock, image: ImageBlock } as const

type ResultBlock = typeof TextBlock.Type | typeof ImageBlock.Type
export type ToolResult = Omit<typeof ToolResultBlock.Type, "content"> & { readonly content?: string | ReadonlyArray<ResultBlock> }
export type Block = typeof TextBlock.Type | typeof ImageBlock.Type | typeof ToolUseBlock.Type | ToolResult | typeof ThinkingBlock.Type

const Message = Schema.Struct({
  role: Schema.Literal("user", "assistant"),
  /** A string, or blocks decoded one by one (MessageBlocks). */
  content: Schema.Union(Schema.String, Schema.Array(Schema.Unknown))
})
export interface MessageInput {
  readonly role: "user" | "assistant"
  readonly content: string | ReadonlyArray<Block>
}

const Tool = Schema.Struct({
  // First, so a server tool (web_search, …) is refused for what it is rather than for a missing input_schema.
  type: Schema.optional(Schema.NullOr(Schema.Literal("custom").annotations({ message: () => "only custom tools (name, input_schema) can be passed to a lane's model" }))),
  name: Schema.String.pipe(Schema.minLength(1, { message: () => "a tool needs a name" })),
  description: Schema.optional(Schema.String),
  input_schema: JsonObject
})

const ToolChoice = Schema.Struct({ type: Schema.Literal("auto", "any", "tool", "none"), name: Schema.optional(Schema.String) })

const UnitInterval = Schema.Number.pipe(Schema.finite(), Schema.between(0, 1))

export const MessagesRequest = Schema.Struct({
  model: Model,
  max_tokens: Schema.Int.pipe(Schema.positive({ message: () => "max_tokens must be a positive integer" })),
  messages: Schema.Array(Message).pipe(Schema.minItems(1, { message: () => "messages must not be empty" })),
  system: Schema.optional(Schema.Union(Schema.String, Schema.Array(TextBlock))),
  stop_sequences: Schema.optional(Schema.Array(Schema.String)),
  temperature: Schema.optional(UnitInterval),
  top_p: Schema.optional(UnitInterval),
  top_k: Schema.optional(Schema.Int.pipe(Schema.nonNegative())),
  stream: Schema.optional(Schema.Boolean),
  tools: Schema.optional(Schema.Array(Tool)),
  tool_choice: Schema.optional(ToolChoice),
  metadata: Schema.optional(Schema.Unknown)
})
export type MessagesRequest = typeof MessagesRequest.Type

type OllamaMessage = Record<string, unknown>

const textAndImages = (blocks: string | ReadonlyArray<Block>) => {
  if (typeof blocks === "string") return { text: blocks, images: [] as Array<string> }
  let text = ""
  const images: Array<string> = []
  for (const b of blocks) {
    if (b.type === "text") text += b.text
    else if (b.type === "image") images.push(b.source.data)
  }
  return { text, images }
}

const withImages = (message: OllamaMessage, images: ReadonlyArray<string>): OllamaMessage =>
  images.length === 0 ? message : { ...message, images }

/** The Ollama /api/chat body for a Messages request (blocks already decoded). */
export const toOllamaChat = (r: MessagesRequest, messages: ReadonlyArray<MessageInput>, stream: boolean): Record<string, unknown> => {
  const out: Array<OllamaMessage> = []
  const system = r.system === undefined ? "" : typeof r.system === "string" ? r.system : r.system.map((b) => b.text).join("\n\n")
  if (system !== "") out.push({ role: "system", content: system })
  const toolNames = new Map<string, string>()
  for (const m of messages) {
    const blocks = typeof m.content === "string" ? [] : m.content
    if (m.role === "assistant") {
      const calls = blocks.flatMap((b) => (b.type === "tool_use" ? [b] : []))
      for (const c of calls) toolNames.set(c.id, c.name)
      const { text, images } = textAndImages(m.content)
      out.push(withImages({
        role: "assistant",
        content: text,
        ...(calls.length === 0 ? {} : { tool_calls: calls.map((c) => ({ function: { name: c.name, arguments: c.input } })) })
      }, images))
      continue
    }
    for (const b of blocks) {
      if (b.type !== "tool_result") continue
      const result = textAndImages(b.content ?? "")
      const name = toolNames.get(b.tool_use_id)
      // Ollama has no error flag on a tool message: the text says it.
      out.push(withImages({
        role: "tool",
        content: b.is_error === true ? `Error: ${result.text}` : result.text,
        ...(name === undefined ? {} : { tool_name: name })
      }, result.images))
    }
    const { text, images } = textAndImages(m.content)
    if (typeof m.content === "string" || text !== "" || images.length > 0) out.push(withImages({ role: "user", content: text }, images))
  }
  const options: Record<string, number | ReadonlyArray<string>> = { num_predict: r.max_tokens }
  if (r.temperature !== undefined) options.temperature = r.temperature
  if (r.top_p !== undefined) options.top_p = r.top_p
  if (r.top_k !== undefined) options.top_k = r.top_k
  if (r.stop_sequences !== undefined && r.stop_sequences.length > 0) options.stop = r.stop_sequences
  const tools = r.tool_choice?.type === "none" ? [] : r.tools ?? []
  return {
    model: r.model,
    messages: out,
    stream,
    options,
    ...(tools.length === 0
      ? {}
      : {
        tools: tools.map((t) => ({
          type: "function",
          function: { name: t.name, ...(t.description === undefined ? {} : { description: t.description }), parameters: t.input_schema }
        }))
      })
  }
}
