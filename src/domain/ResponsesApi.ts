/**
 * OpenAI's Responses API (`POST /v1/responses`) request bodies, as the official SDKs send them, and
 * their translation into the Ollama chat the lane routes (decoded by OllamaApi's ChatRequest again).
 *
 * `input` items are decoded one by one by their `type` (`ResponsesItems`), so a refusal names the
 * item and field at fault (`input.2.call_id`). The gateway keeps no conversation state: `store:
 * true`, `previous_response_id`, `conversation`, `background` and stored prompts are refused, and a
 * conversation is carried by the caller as message, function_call and function_call_output items.
 */
import { Schema } from "effect"
import { imageOf, optionsOf, parseArguments } from "./OpenAiApi.ts"

const Model = Schema.String.pipe(Schema.minLength(1, { message: () => "model is required" }), Schema.maxLength(256))
const OptionalNumber = Schema.optional(Schema.NullOr(Schema.Number.pipe(Schema.finite())))
const JsonObject = Schema.Record({ key: Schema.String, value: Schema.Unknown })

const InputText = Schema.Struct({ type: Schema.Literal("input_text", "output_text"), text: Schema.String })
const InputImage = Schema.Struct({
  type: Schema.Literal("input_image"),
  image_url: Schema.optional(Schema.NullOr(Schema.String)),
  file_id: Schema.optional(Schema.NullOr(Schema.String)),
  detail: Schema.optional(Schema.String)
})
const Refusal = Schema.Struct({ type: Schema.Literal("refusal"), refusal: Schema.String })

/** Parts of a message item's content, by `type`. */
export const ContentParts = {
  input_text: InputText,
  output_text: InputText,
  input_image: InputImage,
  refusal: Refusal
} as const
export type ContentPart = typeof InputText.Type | typeof InputImage.Type | typeof Refusal.Type

const MessageItem = Schema.Struct({
  type: Schema.optional(Schema.Literal("message")),
  role: Schema.Literal("user", "assistant", "system", "developer"),
  content: Schema.Union(Schema.String, Schema.Array(Schema.Unknown))
})
const FunctionCallItem = Schema.Struct({
  type: Schema.Literal("function_call"),
  call_id: Schema.String,
  name: Schema.String,
  arguments: Schema.String
})
const FunctionCallOutputItem = Schema.Struct({
  type: Schema.Literal("function_call_output"),
  call_id: Schema.String,
  output: Schema.Union(Schema.String, Schema.Array(Schema.Unknown))
})
/** Reasoning items a caller hands back: they carry nothing an Ollama model can read, and are dropped. */
const ReasoningItem = Schema.Struct({ type: Schema.Literal("reasoning") })

/** The input items the gateway translates, by `type` (a message item may leave `type` out). */
export const ResponsesItems = {
  message: MessageItem,
  function_call: FunctionCallItem,
  function_call_output: FunctionCallOutputItem,
  reasoning: ReasoningItem
} as const

/** A message item, its content parts decoded (a string content stays a string). */
export type MessageInput = Omit<typeof MessageItem.Type, "content"> & { readonly content: string | ReadonlyArray<ContentPart> }
export type FunctionCallOutputInput = Omit<typeof FunctionCallOutputItem.Type, "output"> & { readonly output: string | ReadonlyArray<ContentPart> }
export type InputItem = MessageInput | typeof FunctionCallItem.Type | FunctionCallOutputInput | typeof ReasoningItem.Type

export const FunctionTool = Schema.Struct({
  type: Schema.Literal("function"),
  name: Schema.String.pipe(Schema.minLength(1, { message: () => "a function tool needs a name" })),
  description: Schema.optional(Schema.NullOr(Schema.String)),
  parameters: Schema.optional(Schema.NullOr(JsonObject)),
  strict: Schema.optional(Schema.NullOr(Schema.Boolean))
})
export type FunctionTool = typeof FunctionTool.Type

const TextFormat = Schema.Union(
  Schema.Struct({ type: Schema.Literal("text") }),
  Schema.Struct({ type: Schema.Literal("json_object") }),
  Schema.Struct({
    type: Schema.Literal("json_schema"),
    name: Schema.optional(Schema.String),
    schema: JsonObject,
    description: Schema.optional(Schema.NullOr(Schema.String)),
    strict: Schema.optional(Schema.NullOr(Schema.Boolean))
  })
)
export type TextFormat = typeof TextFormat.Type

const ToolChoice = Schema.Union(
  Schema.Literal("auto", "none", "required"),
  Schema.Struct({ type: Schema.String, name: Schema.optional(Schema.String) })
)

/** What would need state the gateway does not keep, each refused with a 400 that says so. */
const Stateful = {
  store: Schema.optional(Schema.NullOr(Schema.Boolean)),
  previous_response_id: Schema.optional(Schema.NullOr(Schema.String)),
  conversation: Schema.optional(Schema.Unknown),
  background: Schema.optional(Schema.NullOr(Schema.Boolean)),
  prompt: Schema.optional(Schema.Unknown)
}

export const ResponsesRequest = Schema.Struct({
  model: Model,
  /** A string, or items decoded one by one (ResponsesItems). */
  input: Schema.Union(Schema.String, Schema.Array(Schema.Unknown)),
  instructions: Schema.optional(Schema.NullOr(Schema.String)),
  max_output_tokens: Schema.optional(Schema.NullOr(Schema.Int.pipe(Schema.positive()))),
  temperature: OptionalNumber,
  top_p: OptionalNumber,
  stream: Schema.optional(Schema.NullOr(Schema.Boolean)),
  text: Schema.optional(Schema.NullOr(Schema.Struct({ format: Schema.optional(Schema.NullOr(TextFormat)) }))),
  /** Decoded one by one (only function tools can be passed to Ollama). */
  tools: Schema.optional(Schema.NullOr(Schema.Array(Schema.Unknown))),
  tool_choice: Schema.optional(Schema.NullOr(ToolChoice)),
  parallel_tool_calls: Schema.optional(Schema.NullOr(Schema.Boolean)),
  metadata: Schema.optional(Schema.NullOr(Schema.Record({ key: Schema.String, value: Schema.String }))),
  ...Stateful
})
export type ResponsesRequest = typeof ResponsesRequest.Type

/** The reason a request needs conversation state, or null. */
export const statefulField = (r: ResponsesRequest): string | null => {
  const why = "the gateway keeps no conversation state; send the whole conversation as input items"
  if (r.store === true) return `store: true is not supported: ${why} (leave store out or set it to false)`
  if (r.previous_response_id != null) return `previous_response_id is not supported: ${why}`
  if (r.conversation != null) return `conversation is not supported: ${why}`
  if (r.background === true) return "background: true is not supported: responses are answered while the caller waits"
  if (r.prompt != null) return "prompt (a stored prompt template) is not supported: send instructions and input instead"
  return null
}

// ---------------------------------------------------------------------------------------------
// Translation to the Ollama chat
// ---------------------------------------------------------------------------------------------

type Message = Record<string, unknown>

/** A content list's text and images; an image that is not a data: URL is refused. */
const partsOf = (parts: string | ReadonlyArray<ContentPart>, field: string): { text: string; images: Array<string> } | { readonly error: string } => {
  if (typeof parts === "string") return { text: parts, images: [] }
  let text = ""
  const images: Array<string> = []
  for (const [j, part] of parts.entries()) {
    switch (part.type) {
      case "input_text":
      case "output_text":
        text += part.text
        break
      case "refusal":
        text += part.refusal
        break
      case "input_image": {
        if (part.image_url == null) return { error: `${field}.${j}: only image_url (a data: URL) is supported for input_image, not file_id` }
        const image = imageOf(part.image_url, `${field}.${j}.image_url`)
        if (typeof image !== "string") return image
        images.push(image)
      }
    }
  }
  return { text, images }
}

/** Appends one function call: calls made in one turn are one assistant message (with the text it said before them). */
const appendCall = (messages: Array<Message>, call: unknown): void => {
  const last = messages[messages.length - 1]
  if (last !== undefined && last.role === "assistant") last.tool_calls = [...(last.tool_calls as Array<unknown> | undefined ?? []), call]
  else messages.push({ role: "assistant", content: "", tool_calls: [call] })
}

/** The Ollama messages of the instructions and the input items, or the message of a 400. */
const messagesOf = (r: ResponsesRequest, items: ReadonlyArray<InputItem>): Array<Message> | { readonly error: string } => {
  const messages: Array<Message> = []
  if (r.instructions != null && r.instructions !== "") messages.push({ role: "system", content: r.instructions })
  // A function_call_output names only its call: the tool's name comes from the call before it.
  const toolNames = new Map<string, string>()
  for (const [i, item] of items.entries()) {
    switch (item.type) {
      case "reasoning":
        break
      case "function_call": {
        const parsed = parseArguments(item.arguments, `input.${i}.arguments`)
        if ("error" in parsed) return parsed
        toolNames.set(item.call_id, item.name)
        appendCall(messages, { function: { name: item.name, arguments: parsed.args } })
        break
      }
      case "function_call_output": {
        const output = partsOf(item.output, `input.${i}.output`)
        if ("error" in output) return output
        const name = toolNames.get(item.call_id)
        messages.push({ role: "tool", content: output.text, ...(name === undefined ? {} : { tool_name: name }) })
        break
      }
      default: {
        const content = partsOf(item.content, `input.${i}.content`)
        if ("error" in content) return content
        messages.push({
          role: item.role === "developer" ? "system" : item.role,
          content: content.text,
          ...(content.images.length > 0 ? { images: content.images } : {})
        })
      }
    }
  }
  return messages
}

/** Ollama's `tools` for the request's function tools: none when there are none or `tool_choice` is "none". */
const toolsOf = (r: ResponsesRequest, tools: ReadonlyArray<FunctionTool>): { readonly tools?: ReadonlyArray<unknown> } =>
  tools.length === 0 || r.tool_choice === "none"
    ? {}
    : {
      tools: tools.map((t) => ({
        type: "function",
        function: {
          name: t.name,
          ...(t.description == null ? {} : { description: t.description }),
          parameters: t.parameters ?? { type: "object", properties: {} }
        }
      }))
    }

/** The Ollama /api/chat body for a Responses request (items already decoded), or the message of a 400. */
export const toOllamaChat = (
  r: ResponsesRequest,
  items: ReadonlyArray<InputItem>,
  tools: ReadonlyArray<FunctionTool>,
  stream: boolean
): Record<string, unknown> | { readonly error: string } => {
  const messages = messagesOf(r, items)
  if ("error" in messages) return messages
  const format = r.text?.format
  return {
    model: r.model,
    messages,
    stream,
    ...optionsOf({ temperature: r.temperature, top_p: r.top_p }, r.max_output_tokens),
    ...(format == null || format.type === "text" ? {} : { format: format.type === "json_object" ? "json" : format.schema }),
    ...toolsOf(r, tools)
  }
}
