/**
 * Maintenance windows in Postgres (operations/MaintenanceWindows.ts, migration 009), seen by every
 * replica: two host actors for one host on one database stand for two replicas (each with its own
 * writer of the host's stream, cluster/SharedStreamWriter.ts), a third one for a replica started later.
 * - a window opened on one is taken on by the other, closing it on the other closes it on both;
 * - at `until` both close it, and MaintenanceClosed is journaled once;
 * - a replica (re)started afterwards finds the open window; no event of the host's stream is lost.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import { Clock, Effect, Layer } from "effect"
import { makeSharedStreamWriter } from "../src/cluster/SharedStreamWriter.ts"
import { Journal } from "../src/journal/Journal.ts"
import * as MaintenanceWindows from "../src/operations/MaintenanceWindows.ts"
import * as Host from "../src/routing/Host.ts"
import { OllamaUpstream } from "../src/upstream/OllamaUpstream.ts"
import { FakeOllamaScoped } from "./support/FakeOllama.ts"
import { TestDatabaseLive } from "./support/TestDatabase.ts"

const services = Layer.mergeAll(Journal.Default, OllamaUpstream.Default).pipe(Layer.provideMerge(TestDatabaseLive))

/** One replica's actor for host gcp-a, following the stored windows every 100 ms. */
const replica = (url: string) =>
  Effect.gen(function*() {
    const journal = yield* Journal
    const sql = yield* SqlClient.SqlClient
    const host = yield* Host.make("gcp-a", { url, slots: 2, protected: true }, {}, {
      journal,
      upstream: yield* OllamaUpstream,
      breaker: { consecutiveTimeouts: 2, cooldownMs: 30_000 },
      pollIntervalMs: 3_600_000,
      probeTimeoutMs: 5_000,
      windows: MaintenanceWindows.makeStore(sql),
      sharedWriter: (base) => makeSharedStreamWriter(journal, sql, base)
    })
    yield* MaintenanceWindows.follow(sql, new Map([["gcp-a", host]]), 100)
    return host
  })

const maintenanceEvents = Effect.gen(function*() {
  const journal = yield* Journal
  yield* journal.flush
  return (yield* journal.readStream("host-gcp-a")).filter((e) => e.type.startsWith("Maintenance"))
})

// Side by side: each test has its own database (TestDatabaseLive), fake host and replicas, and most
// of each is waiting for the replicas' 100 ms follow loop and a window's `until`.
describe.concurrent("maintenance windows shared by replicas and kept across restarts", () => {
  it.scopedLive("open on one replica, seen and closed on the other; journaled once each; found by a later replica", () =>
    Effect.gen(function*() {
      const fake = yield* FakeOllamaScoped({ name: "gcp-a" })
      const a = yield* replica(fake.url)
      const b = yield* replica(fake.url)
      const now = yield* Clock.currentTimeMillis

      yield* a.openMaintenance("driver upgrade", now + 600_000)
      yield* Effect.sleep("400 millis")
      assert.deepStrictEqual(yield* b.maintenance, { open: true, reason: "driver upgrade", until: now + 600_000 })

      // A replica started now (or after a restart) finds it before serving.
      const later = yield* replica(fake.url)
      assert.deepStrictEqual(yield* later.maintenance, { open: true, reason: "driver upgrade", until: now + 600_000 })

      assert.isTrue(yield* b.closeMaintenance("done early"))
      assert.isFalse(yield* a.closeMaintenance("again"))
      yield* Effect.sleep("400 millis")
      assert.isFalse((yield* a.maintenance).open)
      assert.isFalse((yield* later.maintenance).open)

      const events = yield* maintenanceEvents
      assert.deepStrictEqual(events.map((e) => [e.type, (e.data as { reason: string }).reason]), [
        ["MaintenanceOpened", "driver upgrade"],
        ["MaintenanceClosed", "done early"]
      ])
      // Three writers of one stream (each replica's poller journaled HostUp and residency too): every
      // position taken once, none lost.
      const all = yield* (yield* Journal).readStream("host-gcp-a")
      assert.deepStrictEqual(all.map((e) => e.streamPosition).sort((x, y) => x - y), all.map((_, i) => i))
      assert.strictEqual(all.filter((e) => e.type === "HostUp").length, 3)
    }).pipe(Effect.scoped, Effect.provide(services)), 30_000)

  it.scopedLive("at `until` every replica closes the window and MaintenanceClosed is journaled once", () =>
    Effect.gen(function*() {
      const fake = yield* FakeOllamaScoped({ name: "gcp-a" })
      const a = yield* replica(fake.url)
      const b = yield* replica(fake.url)
      const until = (yield* Clock.currentTimeMillis) + 1_500
      yield* a.openMaintenance("short", until)
      yield* Effect.sleep("500 millis")
      assert.isTrue((yield* b.maintenance).open)
      yield* Effect.sleep("1500 millis")
      assert.isFalse((yield* a.maintenance).open)
      assert.isFalse((yield* b.maintenance).open)
      const events = yield* maintenanceEvents
      assert.deepStrictEqual(events.map((e) => e.type), ["MaintenanceOpened", "MaintenanceClosed"])
      assert.deepInclude(events[1]!.data as object, { expired: true, openReason: "short" })
      const rows = yield* (yield* SqlClient.SqlClient)`SELECT host FROM host_maintenance`
      assert.strictEqual(rows.length, 0)
    }).pipe(Effect.scoped, Effect.provide(services)), 30_000)
})
