/**
 * A lane's mode cell (routing/LaneMode.ts), without Postgres (its in-memory store, a memory journal):
 * the operator's switch and its removal are journaled once each, a repeat is no change, and a poll
 * read before this replica's own change does not undo it (the next poll's read does apply).
 */
import { assert, describe, it } from "@effect/vitest"
import { Clock, Effect } from "effect"
import * as LaneMode from "../src/routing/LaneMode.ts"
import { makeMemoryJournal } from "./support/MemoryJournal.ts"

describe("a lane's mode at runtime", () => {
  it.live("set, repeat, reset; journaled once each on lane-<name>", () =>
    Effect.gen(function*() {
      const journal = yield* makeMemoryJournal
      const mode = yield* LaneMode.make("alert-fast", "active", { journal })
      assert.deepStrictEqual(mode.current(), { mode: "active", source: "config", operator: null })

      const set = yield* mode.set("shadow", "rollback", "admin API")
      assert.isTrue(set.changed)
      assert.strictEqual(set.previous, "active")
      assert.deepInclude(mode.current(), { mode: "shadow", source: "operator" })
      assert.isFalse((yield* mode.set("shadow", "again", "admin API")).changed)
      assert.strictEqual(mode.current().operator?.reason, "rollback")

      const reset = yield* mode.reset("done", "admin API")
      assert.deepStrictEqual([reset.changed, reset.previous, reset.state.source], [true, "shadow", "config"])
      assert.isFalse((yield* mode.reset("again", "admin API")).changed)

      yield* journal.flush
      const events = journal.events().filter((e) => e.streamId === "lane-alert-fast")
      assert.deepStrictEqual(events.map((e) => [e.streamPosition, e.type, e.data]), [
        [0, "LaneModeChanged", { lane: "alert-fast", mode: "shadow", previous: "active", source: "operator", reason: "rollback", by: "admin API" }],
        [1, "LaneModeChanged", { lane: "alert-fast", mode: "active", previous: "shadow", source: "config", reason: "done", by: "admin API" }]
      ])
    }))

  it.live("a read older than this replica's own change is ignored; a later one is taken on", () =>
    Effect.gen(function*() {
      const journal = yield* makeMemoryJournal
      const mode = yield* LaneMode.make("code-review", "shadow", { journal })
      const readBefore = (yield* Clock.currentTimeMillis) - 1
      yield* mode.set("active", "stage 4", "admin API")
      // A poll that read the table before the change (nothing stored yet) must not put it back in shadow.
      yield* mode.adopt(null, readBefore)
      assert.deepInclude(mode.current(), { mode: "active", source: "operator" })
      // Another replica removed the pin since: a later read says so.
      yield* mode.adopt(null, (yield* Clock.currentTimeMillis) + 1)
      assert.deepStrictEqual(mode.current(), { mode: "shadow", source: "config", operator: null })
      const pin = { mode: "active" as const, reason: "from another replica", by: "admin API", changedAt: 1 }
      yield* mode.adopt(pin, (yield* Clock.currentTimeMillis) + 1)
      assert.deepStrictEqual(mode.current(), { mode: "active", source: "operator", operator: pin })
    }))
})
