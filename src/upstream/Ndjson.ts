/**
 * Splits an NDJSON byte stream into whole lines without copying when a chunk holds whole lines, so
 * the gateway can forward each line unchanged yet still see errors, the final `done` chunk and
 * malformed output before they reach the caller.
 */
const NEWLINE = 10
const decoder = new TextDecoder("utf-8", { fatal: true })

export class LineSplitter {
  private pending: Uint8Array | null = null

  /** Whole lines (each including its trailing "\n") completed by this chunk. */
  push(chunk: Uint8Array): Array<Uint8Array> {
    const lines: Array<Uint8Array> = []
    let start = 0
    if (this.pending !== null) {
      const nl = chunk.indexOf(NEWLINE)
      if (nl < 0) {
        this.pending = concat(this.pending, chunk)
        return lines
      }
      lines.push(concat(this.pending, chunk.subarray(0, nl + 1)))
      this.pending = null
      start = nl + 1
    }
    for (;;) {
      const nl = chunk.indexOf(NEWLINE, start)
      if (nl < 0) break
      lines.push(chunk.subarray(start, nl + 1))
      start = nl + 1
    }
    if (start < chunk.length) this.pending = chunk.slice(start)
    return lines
  }

  /** What is left when the stream ends: a last line without "\n", or null. */
  rest(): Uint8Array | null {
    const p = this.pending
    this.pending = null
    return p !== null && p.some((b) => b !== 32 && b !== 9 && b !== 13 && b !== 10) ? p : null
  }

  get bufferedBytes(): number {
    return this.pending?.length ?? 0
  }
}

const concat = (a: Uint8Array, b: Uint8Array): Uint8Array => {
  const out = new Uint8Array(a.length + b.length)
  out.set(a, 0)
  out.set(b, a.length)
  return out
}

export type ParsedLine =
  | { readonly _tag: "Chunk"; readonly value: Record<string, unknown> }
  | { readonly _tag: "Blank" }
  | { readonly _tag: "Malformed"; readonly message: string }

export const parseLine = (line: Uint8Array): ParsedLine => {
  let text: string
  try {
    text = decoder.decode(line)
  } catch {
    return { _tag: "Malformed", message: "invalid UTF-8 in a stream line" }
  }
  if (text.trim() === "") return { _tag: "Blank" }
  try {
    const value: unknown = JSON.parse(text)
    return typeof value === "object" && value !== null && !Array.isArray(value)
      ? { _tag: "Chunk", value: value as Record<string, unknown> }
      : { _tag: "Malformed", message: "a stream line is not a JSON object" }
  } catch {
    return { _tag: "Malformed", message: `a stream line is not valid JSON: ${JSON.stringify(text.slice(0, 80))}` }
  }
}

const encoder = new TextEncoder()
export const encodeLine = (value: unknown): Uint8Array => encoder.encode(JSON.stringify(value) + "\n")

/**
 * Whole lines that arrived together, as one chunk: relayed with one write instead of one per line
 * (each write is a syscall), still without waiting for anything that has not arrived.
 */
export const joinLines = (lines: ReadonlyArray<Uint8Array>): Uint8Array =>
  lines.length === 1 ? lines[0]! : Buffer.concat(lines as Array<Uint8Array>)
