/**
 * What a failed connection says about itself: the system error code (ECONNREFUSED, ETIMEDOUT, …)
 * somewhere down its `cause` chain — undici, fetch and the SDKs wrap the socket's error one or more
 * times. Ollama hosts and paid providers read it the same way, so "refused" means the same thing
 * in every attempt's journal entry.
 */

/** The first string `code` on the error or its causes (at most six deep: a cyclic chain must end). */
export const errorCode = (cause: unknown): string | undefined => {
  let current: unknown = cause
  for (let depth = 0; depth < 6 && typeof current === "object" && current !== null; depth++) {
    const code = (current as { code?: unknown }).code
    if (typeof code === "string") return code
    current = (current as { cause?: unknown }).cause
  }
  return undefined
}

/** The host did not take the connection (nothing was sent): safe to try the next one. */
export const isRefusedCode = (code: string | undefined) =>
  code === "ECONNREFUSED" || code === "EHOSTUNREACH" || code === "ENOTFOUND" || code === "EAI_AGAIN"
