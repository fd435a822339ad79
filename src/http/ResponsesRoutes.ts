/**
 * `POST /v1/responses`, OpenAI's Responses API, as an adapter on the shared serve path
 * (ProtocolAdapter.ts): the request becomes the lane's Ollama chat (domain/ResponsesApi.ts), the
 * answer a `response` object with `message` and `function_call` output items and usage.
 *
 * Streaming sends the typed events the SDKs accumulate, each with its `sequence_number`:
 * `response.created`, `response.in_progress`, then per output item `response.output_item.added`,
 * (`response.content_part.added`, `response.output_text.delta`…, `response.output_text.done`,
 * `response.content_part.done`) or (`response.function_call_arguments.delta`, `…done`),
 * `response.output_item.done`, and at the end `response.completed` (`response.incomplete` when
 * max_output_tokens cut it short). A stream that breaks after it started ends with
 * `response.failed` and an `error` event, which makes the SDKs throw.
 */
import { Effect } from "effect"
import { BadRequest } from "../domain/Errors.ts"
import { ChatRequest } from "../domain/OllamaApi.ts"
import {
  ContentParts,
  type ContentPart,
  FunctionTool,
  type InputItem,
  ResponsesItems,
  ResponsesRequest,
  statefulField,
  toOllamaChat
} from "../domain/ResponsesApi.ts"
import { openAiError } from "./OpenAiRoutes.ts"
import {
  count,
  decodeTyped,
  type EventWriter,
  type Json,
  ollamaToolCalls,
  type ProtocolAdapter,
  type RunMeta,
  sse,
  str,
  typeOf
} from "./ProtocolAdapter.ts"
import { decodeBody } from "./RequestBody.ts"

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

const decodeParts = (parts: string | ReadonlyArray<unknown>, at: ReadonlyArray<PropertyKey>) =>
  typeof parts === "string"
    ? Effect.succeed(parts)
    : Effect.forEach(parts, (p, j): Effect.Effect<ContentPart, BadRequest> => decodeTyped(ContentParts, p, [...at, j]))

const decodeItem = (value: unknown, i: number): Effect.Effect<InputItem, BadRequest> =>
  Effect.gen(function*() {
    const item = yield* decodeTyped(ResponsesItems, value, ["input", i], "message")
    switch (item.type) {
      case "function_call":
      case "reasoning":
        return item
      case "function_call_output":
        return { ...item, output: yield* decodeParts(item.output, ["input", i, "output"]) }
      default:
        return { ...item, content: yield* decodeParts(item.content, ["input", i, "content"]) }
    }
  })

const decodeTool = (value: unknown, i: number) =>
  typeOf(value) === "function"
    ? decodeBody(FunctionTool, value, ["tools", i])
    : Effect.fail(new BadRequest({ message: `invalid request: tools.${i}.type: only function tools can be passed to a lane's model, not ${JSON.stringify(typeOf(value) ?? null)}` }))

// ---------------------------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------------------------

const hex = (meta: RunMeta) => meta.runId.replace(/-/g, "")

const usageOf = (chunk: Json) => {
  const input = count(chunk.prompt_eval_count)
  const output = count(chunk.eval_count)
  return {
    input_tokens: input,
    input_tokens_details: { cached_tokens: 0 },
    output_tokens: output,
    output_tokens_details: { reasoning_tokens: 0 },
    total_tokens: input + output
  }
}

type Status = "in_progress" | "completed" | "incomplete" | "failed"

/** The `response` object: the request's settings echoed, the output and usage so far. */
const responseObject = (r: ResponsesRequest, tools: ReadonlyArray<FunctionTool>, meta: RunMeta, model: string, status: Status, output: ReadonlyArray<Json>, usage: Json | null, error: Json | null = null) => ({
  id: `resp_${hex(meta)}`,
  object: "response",
  created_at: meta.created,
  status,
  background: false,
  error,
  incomplete_details: status === "incomplete" ? { reason: "max_output_tokens" } : null,
  instructions: r.instructions ?? null,
  max_output_tokens: r.max_output_tokens ?? null,
  metadata: r.metadata ?? {},
  model,
  output,
  parallel_tool_calls: r.parallel_tool_calls ?? true,
  previous_response_id: null,
  reasoning: { effort: null, summary: null },
  store: false,
  temperature: r.temperature ?? null,
  text: { format: r.text?.format ?? { type: "text" } },
  tool_choice: r.tool_choice ?? "auto",
  tools: tools.map((t) => ({ type: "function", name: t.name, description: t.description ?? null, parameters: t.parameters ?? null, strict: t.strict ?? null })),
  top_p: r.top_p ?? null,
  truncation: "disabled",
  usage
})

const messageItem = (id: string, text: string, status: Status) => ({
  type: "message",
  id,
  status,
  role: "assistant",
  content: [{ type: "output_text", text, annotations: [], logprobs: [] }]
})

const callItem = (meta: RunMeta, n: number, name: string, args: string, status: Status) => ({
  type: "function_call",
  id: `fc_${hex(meta)}_${n}`,
  call_id: `call_${meta.runId.slice(0, 8)}_${n}`,
  name,
  arguments: args,
  status
})

const finalStatus = (chunk: Json): Status => (chunk.done_reason === "length" ? "incomplete" : "completed")

const unary = (r: ResponsesRequest, tools: ReadonlyArray<FunctionTool>) => (answer: Json, meta: RunMeta) => {
  const message = (answer.message ?? {}) as Json
  const status = finalStatus(answer)
  const text = str(message.content)
  const calls = ollamaToolCalls(message)
  const output: Array<Json> = []
  if (text !== "" || calls.length === 0) output.push(messageItem(`msg_${hex(meta)}`, text, status))
  calls.forEach((c, n) => output.push(callItem(meta, n, c.name, JSON.stringify(c.arguments), "completed")))
  return responseObject(r, tools, meta, str(answer.model) || meta.model, status, output, usageOf(answer))
}

/** Ollama chunks → the Responses API's typed events (see the header), one writer per stream. */
class ResponsesEvents implements EventWriter {
  private sequence = 0
  private started = false
  private model: string
  private readonly output: Array<Json> = []
  /** The message item being written, if one is open. */
  private open: { readonly id: string; readonly index: number; text: string } | null = null
  private calls = 0
  constructor(private readonly r: ResponsesRequest, private readonly tools: ReadonlyArray<FunctionTool>, private readonly meta: RunMeta) {
    this.model = meta.model
  }

  private event(type: string, data: Json) {
    return sse(type, { type, sequence_number: this.sequence++, ...data })
  }

  private response(status: Status, usage: Json | null, error: Json | null = null) {
    return responseObject(this.r, this.tools, this.meta, this.model, status, this.output, usage, error)
  }

  private start(): Array<Uint8Array> {
    if (this.started) return []
    this.started = true
    return [this.event("response.created", { response: this.response("in_progress", null) }), this.event("response.in_progress", { response: this.response("in_progress", null) })]
  }

  private openMessage(): Array<Uint8Array> {
    if (this.open !== null) return []
    const index = this.output.length
    const id = `msg_${hex(this.meta)}${index === 0 ? "" : `_${index}`}`
    this.open = { id, index, text: "" }
    this.output.push(messageItem(id, "", "in_progress"))
    return [
      this.event("response.output_item.added", { output_index: index, item: { ...messageItem(id, "", "in_progress"), content: [] } }),
      this.event("response.content_part.added", { item_id: id, output_index: index, content_index: 0, part: { type: "output_text", text: "", annotations: [], logprobs: [] } })
    ]
  }

  private closeMessage(status: Status): Array<Uint8Array> {
    if (this.open === null) return []
    const { id, index, text } = this.open
    this.open = null
    const item = messageItem(id, text, status)
    this.output[index] = item
    return [
      this.event("response.output_text.done", { item_id: id, output_index: index, content_index: 0, text, logprobs: [] }),
      this.event("response.content_part.done", { item_id: id, output_index: index, content_index: 0, part: item.content[0] }),
      this.event("response.output_item.done", { output_index: index, item })
    ]
  }

  private text(text: string): Array<Uint8Array> {
    const out = this.openMessage()
    const open = this.open!
    open.text += text
    out.push(this.event("response.output_text.delta", { item_id: open.id, output_index: open.index, content_index: 0, delta: text, logprobs: [] }))
    return out
  }

  private toolCall(call: { readonly name: string; readonly arguments: Json }): Array<Uint8Array> {
    const index = this.output.length
    const args = JSON.stringify(call.arguments)
    const item = callItem(this.meta, this.calls++, call.name, args, "completed")
    this.output.push(item)
    return [
      this.event("response.output_item.added", { output_index: index, item: { ...item, arguments: "", status: "in_progress" } }),
      this.event("response.function_call_arguments.delta", { item_id: item.id, output_index: index, delta: args }),
      this.event("response.function_call_arguments.done", { item_id: item.id, output_index: index, name: call.name, arguments: args }),
      this.event("response.output_item.done", { output_index: index, item })
    ]
  }

  chunk(c: Json): ReadonlyArray<Uint8Array> {
    if (typeof c.model === "string" && c.model !== "") this.model = c.model
    const out = this.start()
    const message = (c.message ?? {}) as Json
    const text = str(message.content)
    if (text !== "") out.push(...this.text(text))
    const toolCalls = ollamaToolCalls(message)
    if (toolCalls.length > 0) out.push(...this.closeMessage("completed"))
    for (const call of toolCalls) out.push(...this.toolCall(call))
    if (c.done !== true) return out
    const status = finalStatus(c)
    // An answer with neither text nor calls is still one (empty) message, as unary() gives it.
    if (this.output.length === 0) out.push(...this.openMessage())
    out.push(...this.closeMessage(status))
    out.push(this.event(status === "completed" ? "response.completed" : "response.incomplete", { response: this.response(status, usageOf(c)) }))
    return out
  }

  fail(message: string): ReadonlyArray<Uint8Array> {
    const error = { code: "server_error", message }
    return [
      ...this.start(),
      this.event("response.failed", { response: this.response("failed", null, error) }),
      // Documented: code/message/param at the top; OpenAI also sends them as `error`, which the SDKs throw on.
      this.event("error", { code: "server_error", message, param: null, error: { type: "server_error", ...error, param: null } })
    ]
  }
}

const writer = (r: ResponsesRequest, tools: ReadonlyArray<FunctionTool>, meta: RunMeta): EventWriter => new ResponsesEvents(r, tools, meta)

// ---------------------------------------------------------------------------------------------
// The adapter
// ---------------------------------------------------------------------------------------------

const responsesAdapter: ProtocolAdapter = {
  protocol: "openai-responses",
  errorBody: openAiError,
  translate: (raw) =>
    Effect.gen(function*() {
      // A union's own error would only say "Expected string": say what input may be.
      if (raw.input !== undefined && typeof raw.input !== "string" && !Array.isArray(raw.input)) {
        return yield* new BadRequest({ message: "invalid request: input must be a string or a list of input items" })
      }
      const r = yield* decodeBody(ResponsesRequest, raw)
      const stateful = statefulField(r)
      if (stateful !== null) return yield* new BadRequest({ message: stateful })
      if (r.tool_choice != null && r.tool_choice !== "auto" && r.tool_choice !== "none") {
        return yield* new BadRequest({ message: `tool_choice ${JSON.stringify(r.tool_choice)} is not supported: a lane's model cannot be forced to call a tool (use "auto" or "none")` })
      }
      if (r.input.length === 0) return yield* new BadRequest({ message: "invalid request: input must not be empty" })
      const items: ReadonlyArray<InputItem> = typeof r.input === "string"
        ? [{ role: "user", content: r.input }]
        : yield* Effect.forEach(r.input, decodeItem)
      const tools = yield* Effect.forEach(r.tools ?? [], decodeTool)
      const stream = r.stream === true
      const body = toOllamaChat(r, items, tools, stream)
      if ("error" in body && typeof body.error === "string") return yield* new BadRequest({ message: `invalid request: ${body.error}` })
      const decoded = yield* decodeBody(ChatRequest, body)
      return {
        operation: "chat",
        body: decoded,
        stream,
        prompt: { messages: decoded.messages },
        answer: unary(r, tools),
        events: (meta) => writer(r, tools, meta)
      }
    })
}

export const responsesAdapters: Readonly<Record<string, ProtocolAdapter>> = { "/v1/responses": responsesAdapter }
