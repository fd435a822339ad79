#!/usr/bin/env node
/**
 * Compiles src/ to dist/ (JavaScript, declarations, source maps) with tsc -p tsconfig.build.json.
 *
 *   node scripts/build.mjs           builds only when dist/ is missing or older than a source (prestart)
 *   node scripts/build.mjs --force   always builds (npm run build)
 *
 * Plain JavaScript so it runs before anything is compiled. dist/ is emptied first, so a source file
 * deleted since the last build leaves no stale module behind.
 */
import { spawnSync } from "node:child_process"
import { cpSync, existsSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs"
import { createRequire } from "node:module"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"

const root = join(dirname(fileURLToPath(import.meta.url)), "..")
const dist = join(root, "dist")
const stamp = join(dist, ".build-stamp")
const inputs = ["src", "tsconfig.json", "tsconfig.build.json", "package.json", "package-lock.json"]

/** The newest modification time among the inputs (recursively for folders). */
const newest = (path) => {
  const s = statSync(path)
  if (!s.isDirectory()) return s.mtimeMs
  let max = s.mtimeMs
  for (const name of readdirSync(path)) max = Math.max(max, newest(join(path, name)))
  return max
}

const stale = () => {
  if (!existsSync(stamp)) return "dist/ has not been built"
  const built = statSync(stamp).mtimeMs
  const changed = inputs.map((i) => join(root, i)).filter((p) => existsSync(p) && newest(p) > built)
  return changed.length === 0 ? null : `changed since the last build: ${changed.map((p) => p.slice(root.length + 1)).join(", ")}`
}

const reason = process.argv.includes("--force") ? "npm run build" : stale()
if (reason === null) process.exit(0)

let tsc
try {
  tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc")
} catch {
  console.error(`build: ${reason}, and TypeScript is not installed (a dev dependency): run \`npm ci\` (not --omit=dev), or ship a dist/ built elsewhere`)
  process.exit(1)
}
console.error(`build: compiling src/ to dist/ (${reason})`)
rmSync(dist, { recursive: true, force: true })
const result = spawnSync(process.execPath, [tsc, "-p", join(root, "tsconfig.build.json")], { stdio: "inherit", cwd: root })
if (result.status !== 0) {
  console.error("build: tsc failed; dist/ is incomplete")
  process.exit(result.status ?? 1)
}
// tsc copies no assets: the console's own script, styles and icon travel beside its compiled modules.
cpSync(join(root, "src", "console", "assets"), join(dist, "console", "assets"), { recursive: true })
writeFileSync(stamp, `${new Date().toISOString()}\n`)
