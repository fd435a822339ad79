#!/usr/bin/env node
/**
 * Compiles src/ to dist/: JavaScript and source maps with esbuild (one module per source file, the
 * layout tsc gives, relative `.ts` imports rewritten to `.js`), declarations with tsc.
 *
 *   node scripts/build.mjs           JavaScript, only when dist/ is missing or older than a source (prestart, tests)
 *   node scripts/build.mjs --types   the same, then declarations when they are missing or stale (the package export)
 *   node scripts/build.mjs --force   always both (npm run build)
 *
 * Why two compilers: esbuild only strips types (about half a second for src/), while tsc must type
 * check the whole program to write declarations (about 17 s of CPU). Running the gateway needs only
 * the JavaScript; `npm run typecheck` is where types are checked. tsconfig's `isolatedModules`
 * guarantees that each file compiles on its own. Without esbuild (it comes with tsx, a dependency)
 * tsc writes everything, as before.
 *
 * Plain JavaScript so it runs before anything is compiled. dist/ is emptied before the JavaScript is
 * written, so a source file deleted since the last build leaves no stale module behind.
 */
import { spawnSync } from "node:child_process"
import { cpSync, existsSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs"
import { createRequire } from "node:module"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"

const root = join(dirname(fileURLToPath(import.meta.url)), "..")
const dist = join(root, "dist")
const jsStamp = join(dist, ".build-stamp")
const typesStamp = join(dist, ".types-stamp")
const inputs = ["src", "tsconfig.json", "tsconfig.build.json", "package.json", "package-lock.json"]
const require = createRequire(import.meta.url)

/** The newest modification time among the inputs (recursively for folders). */
const newest = (path) => {
  const s = statSync(path)
  if (!s.isDirectory()) return s.mtimeMs
  let max = s.mtimeMs
  for (const name of readdirSync(path)) max = Math.max(max, newest(join(path, name)))
  return max
}

/** Why the output behind `stamp` must be written again (`missing` when there is none), or null when it is up to date. */
const stale = (stamp, missing) => {
  if (!existsSync(stamp)) return missing
  const built = statSync(stamp).mtimeMs
  const changed = inputs.map((i) => join(root, i)).filter((p) => existsSync(p) && newest(p) > built)
  return changed.length === 0 ? null : `changed since the last build: ${changed.map((p) => p.slice(root.length + 1)).join(", ")}`
}

const sources = (dir) =>
  readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith(".ts") && !e.name.endsWith(".d.ts") ? [join(dir, e.name)] : [])

const resolveOptional = (id) => {
  try {
    return require.resolve(id)
  } catch {
    return null
  }
}

const tsc = (args, reason) => {
  const bin = resolveOptional("typescript/bin/tsc")
  if (bin === null) {
    console.error(`build: ${reason}, and TypeScript is not installed (a dev dependency): run \`npm ci\` (not --omit=dev), or ship a dist/ built elsewhere`)
    process.exit(1)
  }
  const result = spawnSync(process.execPath, [bin, "-p", join(root, "tsconfig.build.json"), ...args], { stdio: "inherit", cwd: root })
  if (result.status !== 0) {
    console.error("build: tsc failed; dist/ is incomplete")
    process.exit(result.status ?? 1)
  }
}

/** Relative imports name the sources (`./Lane.ts`); the compiled modules are `.js` (as tsc's rewriteRelativeImportExtensions). */
const relativeTsToJs = {
  name: "relative-ts-to-js",
  setup(build) {
    // Every import stays an import (nothing is bundled): esbuild's bundler mode only so that its
    // parser, not a regular expression, finds the specifiers.
    build.onResolve({ filter: /.*/ }, (args) => {
      if (args.kind === "entry-point") return undefined
      const relative = args.path.startsWith("./") || args.path.startsWith("../")
      return { path: relative ? args.path.replace(/\.([mc]?)ts$/, ".$1js") : args.path, external: true }
    })
  }
}

const writeJavaScript = async (reason) => {
  const esbuildPath = resolveOptional("esbuild")
  console.error(`build: compiling src/ to dist/ (${reason})`)
  rmSync(dist, { recursive: true, force: true })
  if (esbuildPath === null) {
    // No esbuild: tsc writes JavaScript and declarations in one (slower) pass.
    tsc([], reason)
    writeFileSync(typesStamp, `${new Date().toISOString()}\n`)
  } else {
    const esbuild = await import(esbuildPath)
    const result = await esbuild.build({
      absWorkingDir: root,
      entryPoints: sources(join(root, "src")),
      outdir: dist,
      outbase: join(root, "src"),
      bundle: true,
      plugins: [relativeTsToJs],
      format: "esm",
      platform: "node",
      target: "es2022",
      tsconfig: join(root, "tsconfig.build.json"),
      sourcemap: "linked",
      sourcesContent: false,
      logLevel: "warning"
    }).catch(() => null)
    if (result === null) {
      console.error("build: esbuild failed; dist/ is incomplete")
      process.exit(1)
    }
  }
  // The compilers copy no assets: the console's own script, styles and icon travel beside its compiled modules.
  cpSync(join(root, "src", "console", "assets"), join(dist, "console", "assets"), { recursive: true })
  writeFileSync(jsStamp, `${new Date().toISOString()}\n`)
}

const force = process.argv.includes("--force")

const jsReason = force ? "npm run build" : stale(jsStamp, "dist/ has not been built")
if (jsReason !== null) await writeJavaScript(jsReason)

// After a JavaScript build (which empties dist/) the declarations are missing, hence stale.
const typesReason = force || process.argv.includes("--types") ? stale(typesStamp, "no declarations yet") : null
if (typesReason !== null) {
  console.error(`build: writing declarations to dist/ (${typesReason})`)
  tsc(["--emitDeclarationOnly"], typesReason)
  writeFileSync(typesStamp, `${new Date().toISOString()}\n`)
}
