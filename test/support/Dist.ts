/**
 * The compiled gateway (`dist/`), for tests that run it as a process: `node dist/main.js` starts in
 * about half the CPU time of `node --import tsx src/main.ts`, which compiles every module at start.
 *
 * `await ensureDist()` (in a `beforeAll`) runs `node scripts/build.mjs` — what `npm start` runs first:
 * it compiles only when a source is newer than the last build — under a lock, so two test workers
 * never build at once (the build empties dist/ first). Only suites that spawn the gateway pay for it.
 */
import { spawn } from "node:child_process"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

export const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "../..")

/** `node --enable-source-maps dist/main.js` (stack traces name the sources). */
export const gatewayCommand = [process.execPath, "--enable-source-maps", "dist/main.js"] as const

// One lock per checkout (worktrees build their own dist/).
const lockDir = path.join(os.tmpdir(), `awooop-dist-lock-${createHash("sha256").update(root).digest("hex").slice(0, 12)}`)
/** A lock left by a killed run is taken over after this long (a cold build takes well under it). */
const staleLockMs = 300_000

const takeLock = async (): Promise<void> => {
  for (;;) {
    try {
      fs.mkdirSync(lockDir)
      return
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error
    }
    const age = Date.now() - (fs.statSync(lockDir, { throwIfNoEntry: false })?.mtimeMs ?? Date.now())
    if (age > staleLockMs) fs.rmSync(lockDir, { recursive: true, force: true })
    else await new Promise((r) => setTimeout(r, 100))
  }
}

const build = (): Promise<{ readonly status: number | null; readonly output: string }> =>
  new Promise((resolve) => {
    const child = spawn(process.execPath, ["scripts/build.mjs"], { cwd: root, stdio: ["ignore", "pipe", "pipe"] })
    let output = ""
    child.stdout.on("data", (d: Buffer) => (output += d.toString()))
    child.stderr.on("data", (d: Buffer) => (output += d.toString()))
    child.once("exit", (status) => resolve({ status, output }))
  })

let checked: Promise<void> | null = null

/**
 * Builds dist/ unless it is up to date; throws with the compiler's output when the build fails.
 * Checked once per worker: sources edited during a run are not rebuilt until the next one.
 */
export const ensureDist = (): Promise<void> => {
  checked ??= buildLocked().catch((error) => {
    checked = null
    throw error
  })
  return checked
}

const buildLocked = async (): Promise<void> => {
  await takeLock()
  try {
    const result = await build()
    if (result.status !== 0) throw new Error(`node scripts/build.mjs failed (${result.status}):\n${result.output}`)
  } finally {
    fs.rmSync(lockDir, { recursive: true, force: true })
  }
}
