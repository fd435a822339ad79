/** Launches the gateway: config → storage (migrated) → journal → actors → operations → HTTP. */
// First: sets V8's heap growing factor before anything else loads (config/HeapGrowth.ts).
import { heapGrowth } from "./config/HeapGrowth.ts"
import { NodeRuntime } from "@effect/platform-node"
import { ConfigError, Effect, Layer } from "effect"
import { GatewayConfigTag } from "./config/GatewayConfig.ts"
import { Drain, HttpLive } from "./http/Server.ts"
import { Journal, JournalConfigFromEnv } from "./journal/Journal.ts"
import * as Logging from "./observability/Logging.ts"
import * as Tracing from "./observability/Tracing.ts"
import { ClusterLive } from "./cluster/ClusterRole.ts"
import { ProjectorConfigLive, ProjectorSingletonLive } from "./cluster/ProjectorSingleton.ts"
import { Projector } from "./projections/Projector.ts"
import { ReadModel } from "./projections/ReadModel.ts"
import { OperationsLive } from "./operations/Operations.ts"
import { Gateway } from "./routing/Gateway.ts"
import { DatabaseLive } from "./storage/Database.ts"
import { MigrationsLive } from "./storage/Migrations.ts"

const Storage = Layer.provideMerge(MigrationsLive, DatabaseLive)

const JournalLive = Journal.Default.pipe(Layer.provide(JournalConfigFromEnv), Layer.provide(Storage))

// Keeps run_state, cost_ledger and metrics current from the journal; serves the run/trace/cost API.
// In a cluster the projecting loop is a singleton (cluster/ProjectorSingleton.ts).
const ProjectionsLive = ProjectorSingletonLive.pipe(
  Layer.provideMerge(Layer.merge(Projector.Default.pipe(Layer.provide(ProjectorConfigLive)), ReadModel.Default))
)

export const MainLive = HttpLive.pipe(
  Layer.provide(Drain.Default),
  // Keep-warm, shadow mode, async runs: built on the actors, closed before them.
  Layer.provide(OperationsLive),
  Layer.provide(Gateway.Default),
  Layer.provide(ProjectionsLive),
  Layer.provide(JournalLive),
  // With AWOOOP_RUNNER_PORT: this process as a runner of the cluster (cluster/ClusterRole.ts); built before and closed after the rest.
  Layer.provide(ClusterLive),
  Layer.provide(Storage), // the budget ledger (paid providers) reads and locks its tables directly
  Layer.provide(GatewayConfigTag.fromEnv),
  // Built first and closed last: spans of the drained requests are flushed. Nothing without OTEL_EXPORTER_OTLP_ENDPOINT.
  Layer.provide(Tracing.layerFromEnv),
  // A bad AWOOOP_HEAP_GROWING_PERCENT (not applied at import) stops the start like any bad setting.
  Layer.provide(Layer.effectDiscard(heapGrowth.error === undefined ? Effect.void : Effect.fail(ConfigError.InvalidData([], heapGrowth.error))))
)

// runMain interrupts the service on the first SIGINT/SIGTERM (the layers' finalizers drain the HTTP
// server, then flush the journal; the process exits when they are done) and then stops listening.
// A second signal would then kill the process mid-drain with Node's default action — and one always
// comes: Ctrl-C reaches every process of the terminal's group, and `npm start` forwards its own copy.
// So keep a listener: later signals are logged and change nothing (drainTimeout bounds the stop;
// SIGKILL forces it).
let stopping = false
const onSignal = (signal: NodeJS.Signals) => {
  const message = stopping
    ? `${signal} again: already stopping (in-flight requests drain, then the journal is flushed; SIGKILL forces)`
    : `${signal}: stopping — new requests get 503, in-flight ones drain, then the journal is flushed`
  stopping = true
  Effect.runFork(Logging.withLoggingFromEnv(Effect.logInfo(message).pipe(Effect.annotateLogs({ event: "Stopping", signal }))))
}
process.on("SIGINT", onSignal)
process.on("SIGTERM", onSignal)

const service = Layer.launch(MainLive).pipe(
  // After every finalizer: the drain, the listener's close, the journal's flush.
  Effect.onInterrupt(() => Effect.logInfo("stopped: requests drained, journal flushed").pipe(Effect.annotateLogs({ event: "Stopped" })))
)

Logging.withLoggingFromEnv(service).pipe(NodeRuntime.runMain({ disablePrettyLogger: true, disableErrorReporting: true }))
