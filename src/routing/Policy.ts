/**
 * Host policy: protected hosts (GCP-A/B) deny heavy models (14B/32B class) unless an operator opened
 * maintenance, so a big model can never evict the alert lane's model there.
 */

/** "14.8B" → 14.8, "567M" → 0.567, "1.2T" → 1200; null when unreadable. */
export const parseParameterSize = (text: string | undefined | null): number | null => {
  if (!text) return null
  const match = /^\s*(\d+(?:\.\d+)?)\s*([KMBT])\s*$/i.exec(text)
  if (!match) return null
  const n = Number(match[1])
  switch (match[2]!.toUpperCase()) {
    case "K": return n / 1_000_000
    case "M": return n / 1_000
    case "B": return n
    default: return n * 1_000
  }
}

/**
 * The size a model's tag states: "qwen2.5:14b" → 14, "llama3:70b-instruct-q4" → 70,
 * "mixtral:8x7b" → 56, "gemma3:4b" → 4, "bge-m3" → null. Only the tag after ':' is read, so a
 * family name such as "qwen2.5" or "bge-m3" is never mistaken for a size.
 */
export const parameterSizeFromTag = (model: string): number | null => {
  const colon = model.lastIndexOf(":")
  if (colon < 0) return null
  const tag = model.slice(colon + 1).toLowerCase()
  const moe = /(?:^|[-_])(\d+)x(\d+(?:\.\d+)?)b(?:$|[-_])/.exec(tag)
  if (moe) return Number(moe[1]) * Number(moe[2])
  const plain = /(?:^|[-_])(\d+(?:\.\d+)?)([bm])(?:$|[-_])/.exec(tag)
  if (!plain) return null
  return plain[2] === "m" ? Number(plain[1]) / 1_000 : Number(plain[1])
}

/** The host's own report wins over the tag (a custom tag may say nothing about size). */
export const modelSizeB = (model: string, hostReportedSize: string | null | undefined): number | null =>
  parseParameterSize(hostReportedSize) ?? parameterSizeFromTag(model)

export const isHeavy = (sizeB: number | null, minParamsB: number): boolean => sizeB !== null && sizeB >= minParamsB
