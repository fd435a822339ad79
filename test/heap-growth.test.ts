import { describe, expect, it } from "@effect/vitest"
import { heapGrowingFlag, parseHeapGrowingPercent } from "../src/config/HeapGrowth.ts"

describe("AWOOOP_HEAP_GROWING_PERCENT", () => {
  it("defaults to 50 and becomes V8's --heap-growing-percent", () => {
    expect(parseHeapGrowingPercent(undefined)).toEqual({ percent: 50 })
    expect(parseHeapGrowingPercent(" ")).toEqual({ percent: 50 })
    expect(parseHeapGrowingPercent("20")).toEqual({ percent: 20 })
    expect(heapGrowingFlag(50, [])).toBe("--heap-growing-percent=50")
    expect(heapGrowingFlag(20, ["--enable-source-maps"])).toBe("--heap-growing-percent=20")
  })

  it("0 keeps V8's heuristic, and node's own flag wins over the setting", () => {
    expect(parseHeapGrowingPercent("0")).toEqual({ percent: 0 })
    expect(heapGrowingFlag(0, [])).toBeNull()
    expect(heapGrowingFlag(50, ["--heap-growing-percent=100"])).toBeNull()
    expect(heapGrowingFlag(50, ["--heap_growing_percent=100"])).toBeNull()
  })

  it("refuses what is not a whole number from 0 to 1000, naming the setting and the value", () => {
    for (const bad of ["fifty", "-1", "1001", "12.5", "1e2"]) {
      const result = parseHeapGrowingPercent(bad)
      expect(result.percent, bad).toBeUndefined()
      expect(result.error).toContain("AWOOOP_HEAP_GROWING_PERCENT")
      expect(result.error).toContain(JSON.stringify(bad))
    }
  })
})
