import { describe, expect, it } from "@effect/vitest"
import { spawnSync } from "node:child_process"
import { createRequire } from "node:module"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const madge = createRequire(import.meta.url).resolve("madge/bin/cli.js")

describe("module graph", () => {
  // A cycle between modules makes load order matter and keeps two concepts from being read apart.
  it("src/ has no import cycle (madge --circular)", () => {
    const out = spawnSync(process.execPath, [madge, "--circular", "--extensions", "ts", "--json", "--no-spinner", "src"], {
      cwd: root,
      encoding: "utf8"
    })
    expect(out.stderr).toBe("")
    expect(JSON.parse(out.stdout)).toEqual([])
  }, 60_000)
})
