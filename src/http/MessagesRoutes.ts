/**
 * `POST /v1/messages`, Anthropic's Messages API, as an adapter on the shared serve path
 * (ProtocolAdapter.ts): the request becomes the lane's Ollama chat (domain/AnthropicMessagesApi.ts),
 * the answer a `message` with text and tool_use blocks, a stop_reason and usage.
 *
 * Streaming: `message_start`, `ping`, then per block `content_block_start`, `content_block_delta`
 * (`text_delta`, or the tool call's arguments as one `input_json_delta`), `content_block_stop`, and
 * at the end `message_delta` (stop_reason, usage with input and output tokens — Ollama counts the
 * prompt only at the end, so message_start says 0) and `message_stop`. A stream that breaks after
 * it started ends with an `error` event, which makes the SDK throw.
 *
 * Refusals are Anthropic's `{"type":"error","error":{"type","message"}}` with the gateway's status.
 * stop_reason: tool calls → `tool_use`, Ollama's `length` → `max_tokens`, otherwise `end_turn`
 * (Ollama does not say whether a stop sequence ended the answer, so `stop_sequence` is not given).
 */
import { Effect } from "effect"
import {
  type Block,
  type MessageInput,
  MessageBlocks,
  MessagesRequest,
  ResultBlocks,
  toOllamaChat
} from "../domain/AnthropicMessagesApi.ts"
import { BadRequest } from "../domain/Errors.ts"
import { ChatRequest } from "../domain/OllamaApi.ts"
import { count, decodeTyped, type EventWriter, type Json, ollamaToolCalls, type ProtocolAdapter, type RunMeta, sse, str } from "./ProtocolAdapter.ts"
import { decodeBody } from "./RequestBody.ts"

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/** Anthropic's error types by status (those its SDK and docs name). */
export const anthropicErrorType = (status: number): string => {
  switch (status) {
    case 400:
    case 409:
    case 422: return "invalid_request_error"
    case 401: return "authentication_error"
    case 403: return "permission_error"
    case 404: return "not_found_error"
    case 413: return "request_too_large"
    case 429: return "rate_limit_error"
    case 503:
    case 529: return "overloaded_error"
    case 504: return "timeout_error"
    default: return "api_error"
  }
}

export const anthropicError = (message: string, status: number) => ({
  type: "error",
  error: { type: anthropicErrorType(status), message }
})

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

const decodeMessage = (m: { readonly role: "user" | "assistant"; readonly content: string | ReadonlyArray<unknown> }, i: number) =>
  Effect.gen(function*() {
    if (typeof m.content === "string") return m as MessageInput
    const blocks: Array<Block> = []
    for (const [j, raw] of m.content.entries()) {
      const at = ["messages", i, "content", j]
      const block = yield* decodeTyped(MessageBlocks, raw, at)
      if (block.type === "tool_use" && m.role !== "assistant") return yield* new BadRequest({ message: `invalid request: ${at.join(".")}: tool_use blocks belong in assistant messages` })
      if (block.type === "tool_result") {
        if (m.role !== "user") return yield* new BadRequest({ message: `invalid request: ${at.join(".")}: tool_result blocks belong in user messages` })
        const content = block.content === undefined || typeof block.content === "string"
          ? block.content
          : yield* Effect.forEach(block.content, (b, k) => decodeTyped(ResultBlocks, b, [...at, "content", k]))
        blocks.push({ ...block, content })
      } else blocks.push(block)
    }
    return { role: m.role, content: blocks } satisfies MessageInput
  })

// ---------------------------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------------------------

const messageId = (meta: RunMeta) => `msg_${meta.runId.replace(/-/g, "")}`
const toolUseId = (meta: RunMeta, n: number) => `toolu_${meta.runId.replace(/-/g, "").slice(0, 16)}_${n}`

const stopReason = (chunk: Json, toolCalls: boolean): string =>
  toolCalls ? "tool_use" : chunk.done_reason === "length" ? "max_tokens" : "end_turn"

const usageOf = (chunk: Json) => ({
  input_tokens: count(chunk.prompt_eval_count),
  output_tokens: count(chunk.eval_count),
  cache_creation_input_tokens: 0,
  cache_read_input_tokens: 0
})

const unary = (answer: Json, meta: RunMeta) => {
  const message = (answer.message ?? {}) as Json
  const text = str(message.content)
  const calls = ollamaToolCalls(message)
  return {
    id: messageId(meta),
    type: "message",
    role: "assistant",
    model: str(answer.model) || meta.model,
    content: [
      ...(text !== "" || calls.length === 0 ? [{ type: "text", text }] : []),
      ...calls.map((c, n) => ({ type: "tool_use", id: toolUseId(meta, n), name: c.name, input: c.arguments }))
    ],
    stop_reason: stopReason(answer, calls.length > 0),
    stop_sequence: null,
    usage: usageOf(answer)
  }
}

/** Ollama chunks → Anthropic's stream events (see the header). */
const writer = (meta: RunMeta): EventWriter => {
  let started = false
  let blocks = 0
  let textOpen = false
  let calls = 0
  const event = (type: string, data: Json = {}) => sse(type, { type, ...data })
  const start = (model: string): Array<Uint8Array> => {
    if (started) return []
    started = true
    return [
      event("message_start", {
        message: { id: messageId(meta), type: "message", role: "assistant", model, content: [], stop_reason: null, stop_sequence: null, usage: { input_tokens: 0, output_tokens: 0 } }
      }),
      event("ping")
    ]
  }
  const closeText = (): Array<Uint8Array> => {
    if (!textOpen) return []
    textOpen = false
    return [event("content_block_stop", { index: blocks - 1 })]
  }
  return {
    chunk: (c) => {
      const out = start(str(c.model) || meta.model)
      const message = (c.message ?? {}) as Json
      const text = str(message.content)
      if (text !== "") {
        if (!textOpen) {
          textOpen = true
          out.push(event("content_block_start", { index: blocks++, content_block: { type: "text", text: "" } }))
        }
        out.push(event("content_block_delta", { index: blocks - 1, delta: { type: "text_delta", text } }))
      }
      const toolCalls = ollamaToolCalls(message)
      if (toolCalls.length > 0) out.push(...closeText())
      for (const call of toolCalls) {
        const index = blocks++
        out.push(
          event("content_block_start", { index, content_block: { type: "tool_use", id: toolUseId(meta, calls++), name: call.name, input: {} } }),
          event("content_block_delta", { index, delta: { type: "input_json_delta", partial_json: JSON.stringify(call.arguments) } }),
          event("content_block_stop", { index })
        )
      }
      if (c.done !== true) return out
      return [
        ...out,
        ...closeText(),
        event("message_delta", { delta: { stop_reason: stopReason(c, calls > 0), stop_sequence: null }, usage: usageOf(c) }),
        event("message_stop")
      ]
    },
    fail: (message) => [event("error", { error: { type: "api_error", message } })]
  }
}

// ---------------------------------------------------------------------------------------------
// The adapter
// ---------------------------------------------------------------------------------------------

const messagesAdapter: ProtocolAdapter = {
  protocol: "anthropic-messages",
  errorBody: anthropicError,
  translate: (raw) =>
    Effect.gen(function*() {
      const r = yield* decodeBody(MessagesRequest, raw)
      if (r.tool_choice !== undefined && (r.tool_choice.type === "any" || r.tool_choice.type === "tool")) {
        return yield* new BadRequest({ message: `tool_choice ${JSON.stringify(r.tool_choice.type)} is not supported: a lane's model cannot be forced to call a tool (use "auto" or "none")` })
      }
      const messages = yield* Effect.forEach(r.messages, decodeMessage)
      const stream = r.stream === true
      const decoded = yield* decodeBody(ChatRequest, toOllamaChat(r, messages, stream))
      return {
        operation: "chat",
        body: decoded,
        stream,
        prompt: { messages: decoded.messages },
        answer: unary,
        events: writer
      }
    })
}

export const messagesAdapters: Readonly<Record<string, ProtocolAdapter>> = { "/v1/messages": messagesAdapter }
