import { ParseResult, Schema } from "effect"

// Config durations are strings like "500ms", "45s", "2m", "1h"; internally they are milliseconds.
const pattern = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/
const unitMs = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 } as const

export const parseDurationMs = (text: string): number | undefined => {
  const match = pattern.exec(text.trim())
  if (!match) return undefined
  return Math.round(Number(match[1]) * unitMs[match[2] as keyof typeof unitMs])
}

export const formatDurationMs = (ms: number): string =>
  ms % 3_600_000 === 0 && ms > 0 ? `${ms / 3_600_000}h`
  : ms % 60_000 === 0 && ms > 0 ? `${ms / 60_000}m`
  : ms % 1_000 === 0 ? `${ms / 1_000}s`
  : `${ms}ms`

/** A duration string decoded to a positive number of milliseconds. */
export const DurationMs = Schema.transformOrFail(Schema.String, Schema.Number, {
  strict: true,
  decode: (text, _, ast) => {
    const ms = parseDurationMs(text)
    return ms === undefined || ms <= 0
      ? ParseResult.fail(new ParseResult.Type(ast, text, `expected a duration like "500ms", "45s", "2m" or "1h", got ${JSON.stringify(text)}`))
      : ParseResult.succeed(ms)
  },
  encode: (ms) => ParseResult.succeed(formatDurationMs(ms))
})
