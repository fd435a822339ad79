/**
 * A fake Gemini API (generativelanguage.googleapis.com) on 127.0.0.1, speaking its wire format:
 *
 *   POST /v1beta/models/{model}:generateContent               → one GenerateContentResponse (JSON)
 *   POST /v1beta/models/{model}:streamGenerateContent?alt=sse → `data: {GenerateContentResponse}\r\n\r\n` events
 *   (and the same under /v1/)
 *
 * The key travels in `x-goog-api-key` (or `?key=`); a wrong one gets Google's 400 INVALID_ARGUMENT,
 * a missing one 403 PERMISSION_DENIED. Answers are deterministic: the text is `reply` (default
 * "[gemini] hello from gemini"), streamed as one event per word; usage counts are ceil(chars / 4) of
 * the prompt and one token per answer word, and `maxOutputTokens` cuts the answer with MAX_TOKENS.
 *
 * Modes (switchable at run time): ok, slow (delayMs before answering), hang (accept, never answer),
 * error500, error429, noUsage (no usageMetadata), midStreamError (one event, then an error event),
 * stallAfterFirst (streams: one event, then nothing until the caller hangs up), gate (hold every answer
 * until `openGate()`),
 * echoKey (an error whose message quotes the caller's key back, as a hostile upstream might).
 */
import * as http from "node:http"
import type { AddressInfo, Socket } from "node:net"

export type FakeGeminiMode = "ok" | "slow" | "hang" | "error500" | "error429" | "noUsage" | "midStreamError" | "stallAfterFirst" | "gate" | "echoKey"

export interface FakeGeminiRequest {
  readonly path: string
  readonly model: string
  readonly stream: boolean
  readonly apiKey: string | null
  readonly body: Record<string, unknown>
}

export interface FakeGemini {
  readonly url: string
  readonly requests: Array<FakeGeminiRequest>
  setMode(mode: FakeGeminiMode, opts?: { readonly delayMs?: number }): void
  /** Answers every request held by "gate" mode, and answers normally from then on. */
  openGate(): void
  /** Answers currently being produced (hanging ones included). */
  inFlight(): number
  stop(): Promise<void>
}

export interface FakeGeminiOptions {
  readonly apiKey: string
  readonly mode?: FakeGeminiMode
  readonly delayMs?: number
  readonly reply?: string
}

const tokens = (text: string) => (text.length === 0 ? 0 : Math.ceil(text.length / 4))

const googleError = (code: number, status: string, message: string) => JSON.stringify({ error: { code, message, status } })

/** All prompt text of a request (system instruction and contents). */
const promptText = (body: Record<string, unknown>): string => {
  const texts: Array<string> = []
  const collect = (content: unknown) => {
    const parts = (content as { parts?: Array<{ text?: unknown }> } | undefined)?.parts ?? []
    for (const p of parts) if (typeof p.text === "string") texts.push(p.text)
  }
  collect(body.systemInstruction)
  for (const c of (body.contents as Array<unknown> | undefined) ?? []) collect(c)
  return texts.join("\n")
}

export const startFakeGemini = async (options: FakeGeminiOptions): Promise<FakeGemini> => {
  let mode: FakeGeminiMode = options.mode ?? "ok"
  let delayMs = options.delayMs ?? 200
  const reply = options.reply ?? "[gemini] hello from gemini"
  const requests: Array<FakeGeminiRequest> = []
  const sockets = new Set<Socket>()
  let active = 0
  const held: Array<() => void> = []

  const server = http.createServer((req, res) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => {
      const url = new URL(req.url ?? "/", "http://fake")
      const match = /^\/v1(?:beta)?\/models\/([^/:]+):(generateContent|streamGenerateContent)$/.exec(url.pathname)
      const send = (status: number, body: string) => {
        res.writeHead(status, { "content-type": "application/json; charset=UTF-8" })
        res.end(body)
      }
      if (req.method !== "POST" || match === null) return send(404, googleError(404, "NOT_FOUND", `no route ${req.method} ${url.pathname}`))
      let body: Record<string, unknown>
      try {
        body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as Record<string, unknown>
      } catch {
        return send(400, googleError(400, "INVALID_ARGUMENT", "Invalid JSON payload received."))
      }
      const headerKey = req.headers["x-goog-api-key"]
      const apiKey = typeof headerKey === "string" ? headerKey : url.searchParams.get("key")
      const stream = match[2] === "streamGenerateContent"
      requests.push({ path: url.pathname, model: match[1]!, stream, apiKey, body })

      if (apiKey === null) return send(403, googleError(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API."))
      if (mode === "echoKey") return send(500, googleError(500, "INTERNAL", `internal error while serving key ${apiKey}`))
      if (apiKey !== options.apiKey) return send(400, googleError(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key."))
      if (stream && url.searchParams.get("alt") !== "sse") return send(400, googleError(400, "INVALID_ARGUMENT", "this fake speaks only alt=sse streams"))

      active++
      res.on("close", () => active--)
      if (mode === "hang") return
      const answer = () => {
        if (mode === "error500") return send(500, googleError(500, "INTERNAL", "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting"))
        if (mode === "error429") return send(429, googleError(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."))
        const config = (body.generationConfig ?? {}) as { maxOutputTokens?: number }
        const words = reply.split(/(?<= )/)
        const max = typeof config.maxOutputTokens === "number" ? config.maxOutputTokens : Infinity
        const emitted = words.slice(0, Math.min(words.length, max))
        const finishReason = emitted.length < words.length ? "MAX_TOKENS" : "STOP"
        const usage = {
          promptTokenCount: tokens(promptText(body)),
          candidatesTokenCount: emitted.length,
          totalTokenCount: tokens(promptText(body)) + emitted.length,
          promptTokensDetails: [{ modality: "TEXT", tokenCount: tokens(promptText(body)) }]
        }
        const responseId = `fake-${requests.length}`
        const candidate = (text: string, finish?: string) => ({
          content: { parts: [{ text }], role: "model" },
          ...(finish !== undefined ? { finishReason: finish } : {}),
          index: 0
        })
        if (!stream) {
          return send(200, JSON.stringify({
            candidates: [candidate(emitted.join(""), finishReason)],
            ...(mode === "noUsage" ? {} : { usageMetadata: usage }),
            modelVersion: match[1],
            responseId
          }))
        }
        res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" })
        emitted.forEach((word, i) => {
          const last = i === emitted.length - 1
          if (mode === "midStreamError" && i === 1) {
            res.write(`data: ${googleError(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")}\r\n\r\n`)
            return
          }
          if (mode === "midStreamError" && i > 1) return
          if (mode === "stallAfterFirst" && i > 0) return
          const event = {
            candidates: [candidate(word, last ? finishReason : undefined)],
            ...(mode === "noUsage" ? {} : { usageMetadata: last ? usage : { promptTokenCount: usage.promptTokenCount, totalTokenCount: usage.promptTokenCount } }),
            modelVersion: match[1],
            responseId
          }
          res.write(`data: ${JSON.stringify(event)}\r\n\r\n`)
        })
        if (mode !== "stallAfterFirst") res.end()
      }
      if (mode === "slow") setTimeout(answer, delayMs)
      else if (mode === "gate") held.push(answer)
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
    openGate: () => {
      mode = "ok"
      for (const answer of held.splice(0)) answer()
    },
    inFlight: () => active,
    stop: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      })
  }
}
