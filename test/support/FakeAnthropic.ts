/**
 * A fake Anthropic Messages API on 127.0.0.1, speaking its wire format:
 *
 *   POST /v1/messages (also ?beta=true)            → a Message (JSON)
 *   POST /v1/messages with "stream": true          → SSE: message_start, content_block_start, ping,
 *        content_block_delta (text_delta) …, content_block_stop, message_delta (stop_reason, usage),
 *        message_stop — each as `event: <type>\ndata: <json>\n\n`
 *
 * The key travels in `x-api-key` (and `anthropic-version` is required); a wrong or missing one gets
 * 401 authentication_error. Answers are deterministic: `reply` (default "[claude] hello from claude"),
 * one text_delta per word; usage counts are ceil(chars / 4) of the prompt and one token per word, and
 * `max_tokens` cuts the answer with stop_reason "max_tokens".
 *
 * Modes: ok, slow (delayMs before answering), hang, error500 (api_error), overloaded (529),
 * midStreamError (an `event: error` after the first delta).
 */
import * as http from "node:http"
import type { AddressInfo, Socket } from "node:net"

export type FakeAnthropicMode = "ok" | "slow" | "hang" | "error500" | "overloaded" | "midStreamError"

export interface FakeAnthropicRequest {
  readonly path: string
  readonly stream: boolean
  readonly apiKey: string | null
  readonly version: string | null
  readonly body: Record<string, unknown>
}

export interface FakeAnthropic {
  readonly url: string
  readonly requests: Array<FakeAnthropicRequest>
  setMode(mode: FakeAnthropicMode, opts?: { readonly delayMs?: number }): void
  inFlight(): number
  stop(): Promise<void>
}

export interface FakeAnthropicOptions {
  readonly apiKey: string
  readonly mode?: FakeAnthropicMode
  readonly delayMs?: number
  readonly reply?: string
}

const tokens = (text: string) => (text.length === 0 ? 0 : Math.ceil(text.length / 4))

const anthropicError = (type: string, message: string) =>
  JSON.stringify({ type: "error", error: { type, message }, request_id: "req_fake" })

const promptText = (body: Record<string, unknown>): string => {
  const texts: Array<string> = []
  if (typeof body.system === "string") texts.push(body.system)
  for (const m of (body.messages as Array<{ content?: unknown }> | undefined) ?? []) {
    if (typeof m.content === "string") texts.push(m.content)
    else if (Array.isArray(m.content)) {
      for (const block of m.content as Array<{ type?: unknown; text?: unknown }>) if (block.type === "text" && typeof block.text === "string") texts.push(block.text)
    }
  }
  return texts.join("\n")
}

export const startFakeAnthropic = async (options: FakeAnthropicOptions): Promise<FakeAnthropic> => {
  let mode: FakeAnthropicMode = options.mode ?? "ok"
  let delayMs = options.delayMs ?? 200
  const reply = options.reply ?? "[claude] hello from claude"
  const requests: Array<FakeAnthropicRequest> = []
  const sockets = new Set<Socket>()
  let active = 0
  let counter = 0

  const server = http.createServer((req, res) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => {
      const url = new URL(req.url ?? "/", "http://fake")
      const send = (status: number, body: string) => {
        res.writeHead(status, { "content-type": "application/json", "request-id": "req_fake" })
        res.end(body)
      }
      if (req.method !== "POST" || url.pathname !== "/v1/messages") return send(404, anthropicError("not_found_error", `Not found: ${url.pathname}`))
      let body: Record<string, unknown>
      try {
        body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as Record<string, unknown>
      } catch {
        return send(400, anthropicError("invalid_request_error", "There was an issue with the format of your request: invalid JSON"))
      }
      const apiKey = typeof req.headers["x-api-key"] === "string" ? req.headers["x-api-key"] : null
      const version = typeof req.headers["anthropic-version"] === "string" ? req.headers["anthropic-version"] : null
      const stream = body.stream === true
      requests.push({ path: req.url ?? "", stream, apiKey, version, body })
      if (apiKey !== options.apiKey) return send(401, anthropicError("authentication_error", "invalid x-api-key"))
      if (version === null) return send(400, anthropicError("invalid_request_error", "anthropic-version: header is required"))
      if (typeof body.max_tokens !== "number" || !Array.isArray(body.messages) || typeof body.model !== "string") {
        return send(400, anthropicError("invalid_request_error", "model, max_tokens and messages are required"))
      }

      active++
      res.on("close", () => active--)
      if (mode === "hang") return
      const answer = () => {
        if (mode === "error500") return send(500, anthropicError("api_error", "Internal server error"))
        if (mode === "overloaded") return send(529, anthropicError("overloaded_error", "Overloaded"))
        const words = reply.split(/(?<= )/)
        const max = body.max_tokens as number
        const emitted = words.slice(0, Math.min(words.length, max))
        const stopReason = emitted.length < words.length ? "max_tokens" : "end_turn"
        const inputTokens = tokens(promptText(body))
        const id = `msg_fake${++counter}`
        const usage = (output: number) => ({
          input_tokens: inputTokens,
          cache_creation_input_tokens: 0,
          cache_read_input_tokens: 0,
          cache_creation: { ephemeral_5m_input_tokens: 0, ephemeral_1h_input_tokens: 0 },
          output_tokens: output,
          service_tier: "standard"
        })
        if (!stream) {
          return send(200, JSON.stringify({
            id,
            type: "message",
            role: "assistant",
            model: body.model,
            content: [{ type: "text", text: emitted.join("") }],
            stop_reason: stopReason,
            stop_sequence: null,
            usage: usage(emitted.length)
          }))
        }
        res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache" })
        const event = (type: string, data: unknown) => res.write(`event: ${type}\ndata: ${JSON.stringify(data)}\n\n`)
        event("message_start", {
          type: "message_start",
          message: { id, type: "message", role: "assistant", model: body.model, content: [], stop_reason: null, stop_sequence: null, usage: usage(1) }
        })
        event("content_block_start", { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } })
        event("ping", { type: "ping" })
        for (const [i, word] of emitted.entries()) {
          if (mode === "midStreamError" && i === 1) {
            event("error", { type: "error", error: { type: "overloaded_error", message: "Overloaded" } })
            return res.end()
          }
          event("content_block_delta", { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: word } })
        }
        event("content_block_stop", { type: "content_block_stop", index: 0 })
        event("message_delta", { type: "message_delta", delta: { stop_reason: stopReason, stop_sequence: null }, usage: { output_tokens: emitted.length } })
        event("message_stop", { type: "message_stop" })
        res.end()
      }
      if (mode === "slow") setTimeout(answer, delayMs)
      else answer()
    })
  })
  server.on("connection", (s: Socket) => {
    sockets.add(s)
    s.on("close", () => sockets.delete(s))
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const port = (server.address() as AddressInfo).port
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    setMode: (m, opts) => {
      mode = m
      if (opts?.delayMs !== undefined) delayMs = opts.delayMs
    },
    inFlight: () => active,
    stop: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      })
  }
}
