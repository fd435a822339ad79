/**
 * No import cycle in src/ (issue 11): scripts/import-cycles.mjs finds what
 * `npx madge --circular --extensions ts src` finds, type-only imports included, at a third of the CPU.
 */
import { describe, expect, it } from "@effect/vitest"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

import { importCycles as cycles } from "../scripts/import-cycles.mjs"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")

describe("module graph", () => {
  // A cycle between modules makes load order matter and keeps two concepts from being read apart.
  it("src/ has no import cycle", () => {
    expect(cycles(path.join(root, "src"))).toEqual([])
  }, 60_000)

  it("the check finds a cycle through type-only imports, .js specifiers, a folder's index and import() (so the check above can fail)", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "awooop-cycles-"))
    try {
      fs.mkdirSync(path.join(dir, "sub"))
      fs.writeFileSync(path.join(dir, "a.ts"), `import type { B } from "./b.ts"\nexport type A = { b?: B }\n`)
      fs.writeFileSync(path.join(dir, "b.ts"), `import { x } from "./sub/index.js"\nimport type { A } from "./a.ts"\nexport type B = { a?: A }\nexport const y = x\n`)
      fs.writeFileSync(path.join(dir, "sub", "index.ts"), `export const x = 1\nexport const load = () => import("../c.ts")\n`)
      fs.writeFileSync(path.join(dir, "c.ts"), `export * from "./sub"\n`)
      expect(cycles(dir).sort()).toEqual([["a.ts", "b.ts"], ["c.ts", "sub/index.ts"]])
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  }, 60_000)
})
