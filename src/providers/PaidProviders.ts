/**
 * The configured paid providers, built once at startup. Each API key is read from the environment
 * variable the config names, as a `Redacted` (Config.redacted): it is handed to the provider client and
 * nowhere else. A provider whose variable is unset stays listed but unconfigured: it is skipped
 * without a reservation or a call, and the startup log says which variable is missing.
 */
import { NodeHttpClient } from "@effect/platform-node"
import { Config, Effect, Option, Redacted } from "effect"
import { GatewayConfigTag } from "../config/GatewayConfig.ts"
import * as Anthropic from "./Anthropic.ts"
import * as Gemini from "./Gemini.ts"
import type { PaidProvider } from "./PaidProvider.ts"

export class PaidProviders extends Effect.Service<PaidProviders>()("awooop/PaidProviders", {
  scoped: Effect.gen(function*() {
    const config = yield* GatewayConfigTag
    const providers = new Map<string, PaidProvider>()
    for (const [name, provider] of Object.entries(config.providers)) {
      const key = yield* Config.option(Config.redacted(provider.apiKeyEnv)).pipe(
        Effect.map(Option.filter((k) => Redacted.value(k).trim() !== "")),
        Effect.orElseSucceed(() => Option.none<Redacted.Redacted<string>>())
      )
      if (Option.isNone(key)) {
        yield* Effect.logWarning(`paid provider ${name}: environment variable ${provider.apiKeyEnv} is not set; ${name} will be skipped`)
      }
      providers.set(name, provider.kind === "gemini" ? yield* Gemini.make(name, provider, key) : yield* Anthropic.make(name, provider, key))
    }
    return { get: (name: string): PaidProvider | undefined => providers.get(name), all: providers as ReadonlyMap<string, PaidProvider> } as const
  }),
  dependencies: [NodeHttpClient.layerUndici]
}) {}
