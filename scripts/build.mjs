#!/usr/bin/env node
/**
 * Compiles src/ to dist/: JavaScript and source maps with esbuild (one module per source file, the
 * layout tsc gives, relative `.ts` imports rewritten to `.js`; the two processes, dist/main.js and
 * dist/replay/cli.js, each bundled into one file: see `bundle`), declarations with tsc.
 *
 *   node scripts/build.mjs           JavaScript, only when dist/ is missing or older than a source (prestart, tests)
 *   node scripts/build.mjs --types   the same, then declarations when they are missing or stale (the package export)
 *   node scripts/build.mjs --force   always both (npm run build)
 *
 * Why two compilers: esbuild only strips types (about half a second for src/, a few seconds more for
 * the bundle), while tsc must type check the whole program to write declarations (about 17 s of CPU).
 * Running the gateway needs only the JavaScript; `npm run typecheck` is where types are checked.
 * tsconfig's `isolatedModules` guarantees that each file compiles on its own. Without esbuild (a
 * dependency) tsc writes everything, as before, and nothing is bundled.
 *
 * Plain JavaScript so it runs before anything is compiled. dist/ is emptied before the JavaScript is
 * written, so a source file deleted since the last build leaves no stale module behind.
 */
import { spawnSync } from "node:child_process"
import { cpSync, existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs"
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

/**
 * dist/main.js — the process `npm start` runs — is one bundled file, its dependencies included and
 * tree-shaken: loading the module graph file by file (effect's barrel alone is ~300 modules) cost
 * ~3.3 s of CPU and ~190 MB of RSS before the gateway did anything; the bundle ~0.8 s and ~133 MB
 * (BENCHMARKS.md). The audit CLI (dist/replay/cli.js, `npm run journal`) is bundled the same way
 * (it loaded ~1.6 s of modules per run). The per-module files stay beside them for the typed
 * client (the package export). Left outside: PGlite (it loads its WebAssembly and data files from its own
 * package folder) and optional native modules. `require` is defined for the CommonJS dependencies.
 */
const bundle = async (esbuild, entry) => {
  const outfile = join(dist, entry.replace(/\.ts$/, ".js"))
  const result = await esbuild.build({
    absWorkingDir: root,
    entryPoints: [join(root, "src", entry)],
    outfile,
    allowOverwrite: true,
    bundle: true,
    format: "esm",
    platform: "node",
    target: "node20",
    mainFields: ["module", "main"],
    tsconfig: join(root, "tsconfig.build.json"),
    external: ["@electric-sql/pglite", "@electric-sql/pglite-socket", "pg-native", "msgpackr-extract"],
    banner: { js: "import { createRequire as __awooopRequire } from \"node:module\"; const require = __awooopRequire(import.meta.url);" },
    sourcemap: "linked",
    sourcesContent: false,
    logLevel: "warning"
  }).catch(() => null)
  if (result === null) {
    console.error(`build: bundling ${outfile} failed; dist/ is incomplete`)
    process.exit(1)
  }
  trimSourceMap(`${outfile}.map`)
}

/** The two processes the package starts: the gateway and the audit CLI (`npm run journal`). */
const processes = ["main.ts", join("replay", "cli.ts")]

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
const B64_VALUE = new Map([...B64].map((c, i) => [c, i]))

/** One source map segment's fields, from base64 VLQ. */
const decodeSegment = (text) => {
  const out = []
  let value = 0
  let shift = 0
  for (const c of text) {
    const digit = B64_VALUE.get(c)
    value += (digit & 31) << shift
    if (digit & 32) shift += 5
    else {
      out.push(value & 1 ? -(value >>> 1) : value >>> 1)
      value = 0
      shift = 0
    }
  }
  return out
}

const encodeValue = (n) => {
  let v = n < 0 ? (-n << 1) | 1 : n << 1
  let out = ""
  do {
    let digit = v & 31
    v >>>= 5
    if (v > 0) digit |= 32
    out += B64[digit]
  } while (v > 0)
  return out
}

/**
 * The bundle's source map keeps only our own sources' mappings. Node's --enable-source-maps parses
 * a map eagerly; with every dependency's positions the bundle's map cost ~0.85 s of CPU and ~80 MB of
 * RSS at start. Frames in dependencies then name the bundle (dist/main.js:line), ours the sources.
 */
const trimSourceMap = (file) => {
  const map = JSON.parse(readFileSync(file, "utf8"))
  const keep = map.sources.map((s) => !s.includes("node_modules/"))
  const newIndex = []
  const sources = []
  map.sources.forEach((s, i) => {
    newIndex[i] = keep[i] ? sources.length : -1
    if (keep[i]) sources.push(s)
  })
  // Fields are deltas: decode to absolute values, filter, encode again.
  let src = 0
  let line = 0
  let col = 0
  let name = 0
  let prev = { src: 0, line: 0, col: 0, name: 0 }
  const lines = map.mappings.split(";").map((group) => {
    let genCol = 0
    let prevGenCol = 0
    const kept = []
    for (const segment of group === "" ? [] : group.split(",")) {
      const f = decodeSegment(segment)
      genCol += f[0]
      if (f.length < 4) continue
      src += f[1]
      line += f[2]
      col += f[3]
      if (f.length >= 5) name += f[4]
      if (newIndex[src] < 0) continue
      const s = newIndex[src]
      let text = encodeValue(genCol - prevGenCol) + encodeValue(s - prev.src) + encodeValue(line - prev.line) + encodeValue(col - prev.col)
      prevGenCol = genCol
      prev = { ...prev, src: s, line, col }
      if (f.length >= 5) {
        text += encodeValue(name - prev.name)
        prev.name = name
      }
      kept.push(text)
    }
    return kept.join(",")
  })
  writeFileSync(file, JSON.stringify({ ...map, sources, mappings: lines.join(";") }))
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
  if (esbuildPath !== null) {
    const esbuild = await import(esbuildPath)
    for (const entry of processes) await bundle(esbuild, entry)
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
