import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect, Either } from "effect"
import { HeapGrowingPercent, heapGrowingFlag } from "../src/config/HeapGrowth.ts"

const percentFrom = (env: Record<string, string>) =>
  Effect.runSync(Effect.either(Effect.withConfigProvider(HeapGrowingPercent, ConfigProvider.fromMap(new Map(Object.entries(env))))))

describe("AWOOOP_HEAP_GROWING_PERCENT", () => {
  it("defaults to 50 and becomes V8's --heap-growing-percent", () => {
    expect(percentFrom({})).toEqual(Either.right(50))
    expect(heapGrowingFlag(50, [])).toBe("--heap-growing-percent=50")
    expect(heapGrowingFlag(20, ["--enable-source-maps"])).toBe("--heap-growing-percent=20")
  })

  it("0 keeps V8's heuristic, and node's own flag wins over the setting", () => {
    expect(percentFrom({ AWOOOP_HEAP_GROWING_PERCENT: "0" })).toEqual(Either.right(0))
    expect(heapGrowingFlag(0, [])).toBeNull()
    expect(heapGrowingFlag(50, ["--heap-growing-percent=100"])).toBeNull()
    expect(heapGrowingFlag(50, ["--heap_growing_percent=100"])).toBeNull()
  })

  it("refuses what is not a whole number from 0 to 1000, naming the setting", () => {
    for (const bad of ["fifty", "-1", "1001", "12.5"]) {
      const result = percentFrom({ AWOOOP_HEAP_GROWING_PERCENT: bad })
      expect(Either.isLeft(result), bad).toBe(true)
      if (Either.isLeft(result)) expect(String(result.left)).toContain("AWOOOP_HEAP_GROWING_PERCENT")
    }
  })
})
