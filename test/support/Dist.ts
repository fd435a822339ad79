/**
 * The compiled gateway (`dist/`), for tests that run it as a process: `node dist/main.js` (one
 * bundled file) starts in a fraction of the CPU time of `node --import tsx src/main.ts`, which
 * compiles and loads every module at start.
 *
 * `await ensureDist()` (in a `beforeAll`) runs `node scripts/build.mjs` — what `npm start` runs first:
 * it compiles (esbuild, under a second) only when a source is newer than the last build — under a
 * lock, so two test workers never build at once (the build empties dist/ first). Only suites that
 * spawn the gateway pay for it. `ensureDeclarations()` adds the `.d.ts` files (`build.mjs --types`:
 * tsc, ~17 s of CPU), which only the check of the package export needs.
 */
import { spawn } from "node:child_process"
import { createHash } from "node:crypto"
import * as os from "node:os"
import * as path from "node:path"
import { withDirLock } from "./DirLock.ts"

export const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "../..")

/**
 * `node dist/main.js`. Without `npm start`'s `--enable-source-maps`: parsing the bundle's map costs
 * ~0.2 s of CPU per start (1.14 → 1.33 s, measured), and no test reads a stack trace. process.e2e
 * runs the production command line itself.
 */
export const gatewayCommand = [process.execPath, "dist/main.js"] as const

// One lock per checkout (worktrees build their own dist/), and one for the declarations: tsc only
// adds .d.ts files, so a worker that only needs the JavaScript does not wait for it.
const checkout = createHash("sha256").update(root).digest("hex").slice(0, 12)
const lockDir = path.join(os.tmpdir(), `awooop-dist-lock-${checkout}`)
const typesLockDir = path.join(os.tmpdir(), `awooop-dist-types-lock-${checkout}`)
/** A lock left by a killed run is taken over after this long (a cold build takes well under it). */
const staleLockMs = 300_000

const build = (args: ReadonlyArray<string>): Promise<{ readonly status: number | null; readonly output: string }> =>
  new Promise((resolve) => {
    const child = spawn(process.execPath, ["scripts/build.mjs", ...args], { cwd: root, stdio: ["ignore", "pipe", "pipe"] })
    let output = ""
    child.stdout.on("data", (d: Buffer) => (output += d.toString()))
    child.stderr.on("data", (d: Buffer) => (output += d.toString()))
    child.once("exit", (status) => resolve({ status, output }))
  })

let checked: Promise<void> | null = null
let typed: Promise<void> | null = null

/**
 * Builds dist/ unless it is up to date; throws with the compiler's output when the build fails.
 * Checked once per worker: sources edited during a run are not rebuilt until the next one.
 */
export const ensureDist = (): Promise<void> => {
  checked ??= buildLocked(lockDir, []).catch((error) => {
    checked = null
    throw error
  })
  return checked
}

/** ensureDist(), then the declarations (the .d.ts files in dist/) unless they are up to date. Once per worker too. */
export const ensureDeclarations = (): Promise<void> => {
  typed ??= ensureDist().then(() => buildLocked(typesLockDir, ["--types"])).catch((error) => {
    typed = null
    throw error
  })
  return typed
}

const buildLocked = (lockDir: string, args: ReadonlyArray<string>): Promise<void> =>
  withDirLock(lockDir, staleLockMs, async () => {
    const result = await build(args)
    if (result.status !== 0) throw new Error(`node scripts/build.mjs ${args.join(" ")} failed (${result.status}):\n${result.output}`)
  })
