import { assert, describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Option } from "effect"
import * as fc from "fast-check"
import * as Slots from "../src/routing/Slots.ts"

// gcp-a: 4 slots, alert-fast reserves 2 → 2 shared.
const gcpA = () => Slots.make(4, { "alert-fast": 2 })

const take = (slots: Slots.Slots, lane: string) =>
  Effect.map(slots.tryAcquire(lane), Option.getOrUndefined)

describe("Slots", () => {
  it.effect("a lane takes its reserved slots first, then shared ones, then nothing", () =>
    Effect.gen(function*() {
      const slots = yield* gcpA()
      const pools: Array<string | undefined> = []
      for (let i = 0; i < 5; i++) pools.push((yield* take(slots, "alert-fast"))?.pool)
      expect(pools).toEqual(["reserved", "reserved", "shared", "shared", undefined])
      expect(yield* slots.snapshot).toEqual({
        total: 4,
        inUse: 4,
        shared: { total: 2, inUse: 2 },
        reserved: { "alert-fast": { total: 2, inUse: 2 } }
      })
    }))

  it.effect("reserved slots are never lent: a flood on another lane gets the shared pool only", () =>
    Effect.gen(function*() {
      const slots = yield* gcpA()
      const flood: Array<string | undefined> = []
      for (let i = 0; i < 10; i++) flood.push((yield* take(slots, "code-review"))?.pool)
      expect(flood.filter((p) => p !== undefined)).toEqual(["shared", "shared"])
      expect(yield* slots.freeFor("code-review")).toBe(0)
      // alert-fast still has both of its slots.
      expect(yield* slots.freeFor("alert-fast")).toBe(2)
      expect((yield* take(slots, "alert-fast"))?.pool).toBe("reserved")
      expect((yield* take(slots, "alert-fast"))?.pool).toBe("reserved")
      expect(yield* take(slots, "alert-fast")).toBeUndefined()
    }))

  it.effect("the shared pool is shared: alert-fast's overflow and other lanes compete for it", () =>
    Effect.gen(function*() {
      const slots = yield* gcpA()
      yield* take(slots, "alert-fast")
      yield* take(slots, "alert-fast")
      assert.strictEqual((yield* take(slots, "alert-fast"))?.pool, "shared")
      assert.strictEqual((yield* take(slots, "embedding"))?.pool, "shared")
      assert.isUndefined(yield* take(slots, "embedding"))
      assert.isUndefined(yield* take(slots, "alert-fast"))
    }))

  it.effect("release is idempotent: a permit is returned once however many paths release it", () =>
    Effect.gen(function*() {
      const slots = yield* gcpA()
      const a = (yield* take(slots, "code-review"))!
      const b = (yield* take(slots, "code-review"))!
      yield* a.release
      yield* a.release
      yield* a.release
      expect((yield* slots.snapshot).shared.inUse).toBe(1)
      // A double release must not mint a third shared slot.
      yield* take(slots, "code-review")
      expect(yield* take(slots, "code-review")).toBeUndefined()
      yield* b.release
      expect((yield* slots.snapshot).inUse).toBe(1)
    }))

  it.effect("a release completes the `changed` signal, and a fresh one is armed", () =>
    Effect.gen(function*() {
      const slots = yield* gcpA()
      const permit = (yield* take(slots, "alert-fast"))!
      const signal = yield* slots.changed
      expect(yield* Deferred.isDone(signal)).toBe(false)
      yield* permit.release
      expect(yield* Deferred.isDone(signal)).toBe(true)
      expect(yield* Deferred.isDone(yield* slots.changed)).toBe(false)
    }))

  it.effect("a host without reservations is all shared", () =>
    Effect.gen(function*() {
      const slots = yield* Slots.make(2, {})
      expect((yield* take(slots, "alert-fast"))?.pool).toBe("shared")
      expect((yield* take(slots, "code-review"))?.pool).toBe("shared")
      expect(yield* take(slots, "deep-rca")).toBeUndefined()
    }))

  it("property: whatever the interleaving, no lane exceeds its reservation + the shared pool, and others never hold reserved slots", () => {
    const lanes = ["alert-fast", "code-review", "embedding"]
    const op = fc.oneof(
      fc.record({ kind: fc.constant("take" as const), lane: fc.constantFrom(...lanes) }),
      fc.record({ kind: fc.constant("release" as const), index: fc.nat(20), twice: fc.boolean() })
    )
    fc.assert(fc.property(fc.array(op, { maxLength: 60 }), (ops) =>
      Effect.runSync(Effect.gen(function*() {
        const slots = yield* Slots.make(5, { "alert-fast": 2, embedding: 1 })
        const held: Array<{ lane: string; permit: Slots.Permit }> = []
        for (const o of ops) {
          if (o.kind === "take") {
            const p = yield* take(slots, o.lane)
            const free = yield* slots.snapshot
            if (p !== undefined) {
              held.push({ lane: o.lane, permit: p })
              if (p.pool === "reserved") expect(["alert-fast", "embedding"]).toContain(o.lane)
            } else {
              // Refused only when the lane's reserved and the shared pool are both full.
              const own = free.reserved[o.lane]
              expect(own === undefined || own.inUse === own.total).toBe(true)
              expect(free.shared.inUse).toBe(free.shared.total)
            }
          } else if (held.length > 0) {
            const [h] = held.splice(o.index % held.length, 1)
            yield* h!.permit.release
            if (o.twice) yield* h!.permit.release
          }
          const s = yield* slots.snapshot
          expect(s.shared.inUse).toBeLessThanOrEqual(2)
          expect(s.shared.inUse).toBeGreaterThanOrEqual(0)
          expect(s.reserved["alert-fast"]!.inUse).toBeLessThanOrEqual(2)
          expect(s.reserved.embedding!.inUse).toBeLessThanOrEqual(1)
          expect(s.inUse).toBe(held.length)
        }
      }))
    ))
  })
})
