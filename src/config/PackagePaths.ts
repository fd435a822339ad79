/**
 * Files of the package that are not modules (migrations/, config/), found from a module's own URL.
 * The same module runs from src/<folder>/ (tsx, the tests), dist/<folder>/ (the compiled modules)
 * and inside dist/main.js (the bundled process, scripts/build.mjs), so a fixed "../../" is wrong in
 * one of them: the package's folder is the nearest one above the module that holds package.json.
 */
import { existsSync } from "node:fs"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"

export const packagePath = (moduleUrl: string, ...segments: Array<string>): string => {
  const start = dirname(fileURLToPath(moduleUrl))
  for (let dir = start; ; dir = dirname(dir)) {
    if (existsSync(join(dir, "package.json"))) return join(dir, ...segments)
    if (dirname(dir) === dir) return join(start, "..", "..", ...segments) // no package.json above: the source layout
  }
}
