/** Launches the gateway: config → storage (migrated) → journal → actors → HTTP. */
import { NodeRuntime } from "@effect/platform-node"
import { Layer } from "effect"
import { GatewayConfigTag } from "./config/GatewayConfig.ts"
import { Drain, HttpLive } from "./http/Server.ts"
import { Journal, JournalConfigFromEnv } from "./journal/Journal.ts"
import { Gateway } from "./routing/Gateway.ts"
import { DatabaseLive } from "./storage/Database.ts"
import { MigrationsLive } from "./storage/Migrations.ts"

const Storage = Layer.provideMerge(MigrationsLive, DatabaseLive)

const JournalLive = Journal.Default.pipe(Layer.provide(JournalConfigFromEnv), Layer.provide(Storage))

export const MainLive = HttpLive.pipe(
  Layer.provide(Drain.Default),
  Layer.provide(Gateway.Default),
  Layer.provide(JournalLive),
  Layer.provide(GatewayConfigTag.fromEnv)
)

Layer.launch(MainLive).pipe(NodeRuntime.runMain)
