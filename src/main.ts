/** Launches the gateway: config → storage (migrated) → journal → actors → HTTP. */
import { NodeRuntime } from "@effect/platform-node"
import { Layer } from "effect"
import { GatewayConfigTag } from "./config/GatewayConfig.ts"
import { Drain, HttpLive } from "./http/Server.ts"
import { Journal, JournalConfigFromEnv } from "./journal/Journal.ts"
import * as Tracing from "./observability/Tracing.ts"
import { Projector, ProjectorConfigFromEnv } from "./projections/Projector.ts"
import { ReadModel } from "./projections/ReadModel.ts"
import { Gateway } from "./routing/Gateway.ts"
import { DatabaseLive } from "./storage/Database.ts"
import { MigrationsLive } from "./storage/Migrations.ts"

const Storage = Layer.provideMerge(MigrationsLive, DatabaseLive)

const JournalLive = Journal.Default.pipe(Layer.provide(JournalConfigFromEnv), Layer.provide(Storage))

// Keeps run_state, cost_ledger and metrics current from the journal; serves the run/trace/cost API.
const ProjectionsLive = Layer.merge(Projector.Default.pipe(Layer.provide(ProjectorConfigFromEnv)), ReadModel.Default)

export const MainLive = HttpLive.pipe(
  Layer.provide(Drain.Default),
  Layer.provide(Gateway.Default),
  Layer.provide(ProjectionsLive),
  Layer.provide(JournalLive),
  Layer.provide(Storage), // the budget ledger (paid providers) reads and locks its tables directly
  Layer.provide(GatewayConfigTag.fromEnv),
  // Built first and closed last: spans of the drained requests are flushed. Nothing without OTEL_EXPORTER_OTLP_ENDPOINT.
  Layer.provide(Tracing.layerFromEnv)
)

Layer.launch(MainLive).pipe(NodeRuntime.runMain)
