import type { Price } from "../config/GatewayConfig.ts"
import type { PaidUsage } from "../providers/Translate.ts"

/** The real cost, or null (unknown) when the provider did not report both counts. */
export const costOf = (usage: PaidUsage | null, price: Price): number | null =>
  usage === null || usage.inputTokens === null || usage.outputTokens === null
    ? null
    : usage.inputTokens * price.inputPerToken + usage.outputTokens * price.outputPerToken
