/**
 * A PGlite data directory for a test, ready in a quarter of a second: a copy of one that PGlite
 * initialised once (per machine and PGlite version, under os.tmpdir()). A first `PGlite.create` on
 * an empty directory runs initdb in WebAssembly: ~6 s of CPU, 20+ s on a loaded machine, paid by
 * every suite that used the embedded store. What those suites check (the journal, a restart, the
 * store lock) starts after that; the initialisation itself still runs here, through the same
 * `PGlite.create`, whenever the template is missing (a new machine, a new PGlite version).
 *
 *   const dir = await pgliteDataDir()         // a new folder under os.tmpdir(); the caller removes it
 *   await pgliteDataDir(path.join(tmp, "db"))  // or that folder
 */
import { PGlite } from "@electric-sql/pglite"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { withDirLock } from "./DirLock.ts"
import { root } from "./Dist.ts"

// (Its package.json is not among the package's exports: read from the folder.)
const version = (JSON.parse(fs.readFileSync(path.join(root, "node_modules/@electric-sql/pglite/package.json"), "utf8")) as { version: string }).version
const template = path.join(os.tmpdir(), `awooop-pglite-template-${version}`)
/** A lock left by a killed run is taken over after this long (initdb takes well under it). */
const staleLockMs = 180_000

/** Initialises the template unless it exists (another worker or an earlier run made it). */
const ensureTemplate = async (): Promise<void> => {
  if (fs.existsSync(template)) return
  await withDirLock(`${template}.lock`, staleLockMs, async () => {
    if (fs.existsSync(template)) return
    // Built beside it and renamed into place: a template that exists is complete.
    const building = fs.mkdtempSync(`${template}.building-`)
    const db = await PGlite.create(building)
    await db.close()
    fs.renameSync(building, template)
  })
}

let ready: Promise<void> | null = null

/** A new, initialised PGlite data directory (no tables: migrations are the caller's), at `into` if given. */
export const pgliteDataDir = async (into?: string): Promise<string> => {
  ready ??= ensureTemplate().catch((error) => {
    ready = null
    throw error
  })
  await ready
  const dir = into ?? fs.mkdtempSync(path.join(os.tmpdir(), "awooop-pglite-"))
  fs.cpSync(template, dir, { recursive: true })
  return dir
}
