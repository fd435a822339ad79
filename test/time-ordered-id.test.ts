import { describe, expect, it } from "@effect/vitest"
import { runIdOf } from "../src/http/AsyncRunRoutes.ts"
import { timeOrderedUuid } from "../src/domain/TimeOrderedId.ts"

const v7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/

describe("run and shadow stream ids", () => {
  it("are RFC 9562 version-7 UUIDs whose first 48 bits are the milliseconds", () => {
    const at = Date.UTC(2026, 11, 7, 13, 0, 0, 123)
    const id = timeOrderedUuid(at)
    expect(id).toMatch(v7)
    expect(parseInt(id.slice(0, 8) + id.slice(9, 13), 16)).toBe(at)
    expect(timeOrderedUuid()).toMatch(v7)
  })

  it("sort in time order as text (so index inserts land at the right edge), and differ within a millisecond", () => {
    const base = Date.now()
    const ids = Array.from({ length: 200 }, (_, i) => timeOrderedUuid(base + Math.floor(i / 10)))
    for (let i = 10; i < ids.length; i++) expect(ids[i - 10]! < ids[i]!).toBe(true)
    expect(new Set(ids).size).toBe(ids.length)
  })

  it("are accepted wherever a run id is read back (the routes' UUID pattern)", () => {
    const id = timeOrderedUuid()
    expect(runIdOf(id)).toBe(id)
    expect(runIdOf(`run-${id}`)).toBe(id)
  })
})
