/**
 * Ollama ⇄ paid provider shapes. An Ollama generate or chat body becomes a provider-neutral
 * `PaidRequest` (each provider module maps it onto its own wire format); the provider's answer comes
 * back as Ollama objects: chunks `{model, created_at, response|message, done:false}` and a final
 * `done:true` object with `done_reason` and the counters `prompt_eval_count` / `eval_count`.
 */
import type { Usage } from "../domain/OllamaApi.ts"

export interface PaidMessage {
  readonly role: "user" | "assistant"
  readonly text: string
  /** Base64 images, as Ollama takes them. */
  readonly images: ReadonlyArray<string>
}

export type PaidFormat =
  | { readonly _tag: "json" }
  | { readonly _tag: "schema"; readonly schema: Readonly<Record<string, unknown>> }

export interface PaidRequest {
  readonly operation: "generate" | "chat"
  readonly system: string | null
  readonly messages: ReadonlyArray<PaidMessage>
  readonly temperature: number | null
  readonly topP: number | null
  readonly topK: number | null
  readonly seed: number | null
  /** num_predict capped by the provider's maxOutputTokens: the most output the call may bill. */
  readonly maxOutputTokens: number
  readonly stop: ReadonlyArray<string>
  readonly format: PaidFormat | null
}

/** What the provider reported. A count it did not report stays null (unknown), never 0. */
export interface PaidUsage {
  readonly inputTokens: number | null
  readonly outputTokens: number | null
}

export type DoneReason = "stop" | "length"

/** One step of a provider's stream, provider-neutral. */
export type ProviderEvent =
  | { readonly _tag: "Text"; readonly text: string }
  | { readonly _tag: "Usage"; readonly usage: PaidUsage }
  | { readonly _tag: "Finish"; readonly doneReason: DoneReason; readonly providerReason: string | null }

export interface ProviderAnswer {
  readonly text: string
  readonly usage: PaidUsage
  readonly doneReason: DoneReason
  readonly providerReason: string | null
}

const num = (v: unknown): number | null => (typeof v === "number" && Number.isFinite(v) ? v : null)

const stringList = (v: unknown): Array<string> =>
  typeof v === "string" ? [v] : Array.isArray(v) ? v.filter((s): s is string => typeof s === "string") : []

const formatOf = (format: unknown): PaidFormat | null => {
  if (format === "json") return { _tag: "json" }
  if (typeof format === "object" && format !== null && !Array.isArray(format)) {
    return { _tag: "schema", schema: format as Record<string, unknown> }
  }
  return null // "" or absent: free text
}

/**
 * The provider-neutral request, or why this request cannot go to a paid provider (the caller then
 * keeps the Ollama error). `defaultMaxOutputTokens` caps the output when num_predict does not.
 */
export const toPaidRequest = (
  operation: string,
  body: Readonly<Record<string, unknown>>,
  defaultMaxOutputTokens: number
): PaidRequest | { readonly unsupported: string; readonly load?: true } => {
  if (operation !== "generate" && operation !== "chat") {
    return { unsupported: `paid providers serve generate and chat, not ${operation}` }
  }
  const options = (typeof body.options === "object" && body.options !== null ? body.options : {}) as Record<string, unknown>
  const numPredict = num(options.num_predict)
  const common = {
    temperature: num(options.temperature),
    topP: num(options.top_p),
    topK: num(options.top_k),
    seed: num(options.seed),
    // num_predict -1 / -2 (Ollama: unlimited / fill the context) and absent mean "the provider's cap".
    maxOutputTokens: numPredict !== null && numPredict > 0 ? Math.min(Math.floor(numPredict), defaultMaxOutputTokens) : defaultMaxOutputTokens,
    stop: stringList(options.stop).filter((s) => s !== ""),
    format: formatOf(body.format)
  }
  if (operation === "generate") {
    const prompt = typeof body.prompt === "string" ? body.prompt : ""
    const images = stringList(body.images)
    if (prompt === "" && images.length === 0) return { unsupported: "a load or unload request (no prompt) has nothing to ask a paid provider", load: true }
    if (typeof body.suffix === "string" && body.suffix !== "") return { unsupported: "fill-in-the-middle (suffix) is not translated to paid providers" }
    return {
      operation,
      system: typeof body.system === "string" && body.system !== "" ? body.system : null,
      messages: [{ role: "user", text: prompt, images }],
      ...common
    }
  }
  if (Array.isArray(body.tools) && body.tools.length > 0) {
    return { unsupported: "tool calls are not translated to paid providers" }
  }
  const raw = Array.isArray(body.messages) ? body.messages as ReadonlyArray<Record<string, unknown>> : []
  const system: Array<string> = []
  const messages: Array<PaidMessage> = []
  for (const m of raw) {
    const text = typeof m.content === "string" ? m.content : ""
    const images = stringList(m.images)
    switch (m.role) {
      case "system":
        if (text !== "") system.push(text)
        break
      case "assistant":
        if (text !== "") messages.push({ role: "assistant", text, images: [] })
        break
      case "tool":
        messages.push({ role: "user", text: `Tool result${typeof m.tool_name === "string" ? ` (${m.tool_name})` : ""}:\n${text}`, images: [] })
        break
      default:
        messages.push({ role: "user", text, images })
    }
  }
  if (messages.length === 0) return { unsupported: "a load or unload request (no messages) has nothing to ask a paid provider", load: true }
  return { operation, system: system.length > 0 ? system.join("\n\n") : null, messages, ...common }
}

/**
 * The prompt's size in tokens, from above: a token is at least one UTF-8 byte for the providers'
 * tokenizers, so bytes bound text (plus a little per message for the role framing); an image is
 * taken at the larger providers' per-image charge (the one estimate that can be beaten, by a very
 * large image — the settlement then records the real, higher cost).
 */
export const IMAGE_TOKEN_ESTIMATE = 2_000
const encoder = new TextEncoder()
export const estimateInputTokens = (request: PaidRequest): number => {
  let tokens = request.system === null ? 0 : encoder.encode(request.system).length + 8
  for (const m of request.messages) tokens += encoder.encode(m.text).length + 8 + m.images.length * IMAGE_TOKEN_ESTIMATE
  // A JSON format costs the schema (Gemini) or the instruction that carries it (Claude): count the larger.
  if (request.format !== null) tokens += encoder.encode(jsonInstruction(request.format)).length
  return tokens + 16
}

/** Text for providers without a JSON mode: the instruction that asks for JSON (and the schema). */
export const jsonInstruction = (format: PaidFormat): string =>
  format._tag === "json"
    ? "Respond with one valid JSON value only: no prose, no Markdown code fences."
    : `Respond with one valid JSON value only, matching this JSON schema: ${JSON.stringify(format.schema)}. No prose, no Markdown code fences.`

/** The MIME type of a base64 image, from its first bytes (Ollama does not send one). */
export const imageMimeType = (base64: string): string => {
  if (base64.startsWith("/9j/")) return "image/jpeg"
  if (base64.startsWith("iVBORw0KGgo")) return "image/png"
  if (base64.startsWith("R0lGOD")) return "image/gif"
  if (base64.startsWith("UklGR")) return "image/webp"
  return "image/png"
}

// ---------------------------------------------------------------------------------------------
// Back to Ollama

const contentOf = (operation: "generate" | "chat", text: string) =>
  operation === "generate" ? { response: text } : { message: { role: "assistant", content: text } }

/** A streamed Ollama chunk carrying `text`. */
export const ollamaChunk = (operation: "generate" | "chat", model: string, createdAt: string, text: string) => ({
  model,
  created_at: createdAt,
  ...contentOf(operation, text),
  done: false
})

/**
 * The final Ollama object (`done:true`). Counters the provider did not report are left out, as Ollama
 * itself leaves out zero-valued counters; durations are in nanoseconds.
 */
export const ollamaFinal = (
  operation: "generate" | "chat",
  model: string,
  createdAt: string,
  text: string,
  doneReason: DoneReason,
  usage: PaidUsage,
  totalDurationMs: number
) => ({
  model,
  created_at: createdAt,
  ...contentOf(operation, text),
  done: true,
  done_reason: doneReason,
  total_duration: Math.round(totalDurationMs * 1e6),
  load_duration: 0,
  ...(usage.inputTokens !== null ? { prompt_eval_count: usage.inputTokens } : {}),
  ...(usage.outputTokens !== null ? { eval_count: usage.outputTokens } : {})
})

export const usageForJournal = (usage: PaidUsage | null, doneReason: string | null): Usage => ({
  inputTokens: usage?.inputTokens ?? null,
  outputTokens: usage?.outputTokens ?? null,
  doneReason
})
