/**
 * The embedded PGlite store is one process's: PGlite is a single backend with no lock of its own, so
 * a second process opening the same directory (the audit CLI while the gateway runs, two gateways)
 * would write the same files underneath it. Whoever opens the store first creates
 * `<dataDir>/awooop.lock` holding its pid; the next one refuses, naming that pid, while that process
 * is alive. A lock left by a process that died (SIGKILL, a crash) is taken over.
 */
import * as SqlError from "@effect/sql/SqlError"
import { Data, Effect } from "effect"
import * as fs from "node:fs"
import * as Path from "node:path"

export const lockFileName = "awooop.lock"

interface Holder {
  readonly pid: number
  readonly command: string
  readonly since: string
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    // EPERM: it exists, only not ours to signal.
    return (e as NodeJS.ErrnoException).code === "EPERM"
  }
}

const readHolder = (file: string): Holder | null => {
  try {
    const parsed = JSON.parse(fs.readFileSync(file, "utf8")) as Partial<Holder>
    return typeof parsed.pid === "number" ? { pid: parsed.pid, command: String(parsed.command ?? "?"), since: String(parsed.since ?? "?") } : null
  } catch {
    return null
  }
}

const lockError = (message: string, cause?: unknown) => new SqlError.SqlError({ message, cause })

/** Another live process holds the store (the cause of the SqlError the storage layer fails with). */
export class StoreInUse extends Data.TaggedError("StoreInUse")<{ readonly pid: number; readonly message: string }> {}

/** Takes the store's lock for this process's lifetime in the scope; fails if a live process holds it. */
export const acquire = (dataDir: string) =>
  Effect.acquireRelease(
    Effect.suspend(() => {
      const file = Path.join(dataDir, lockFileName)
      const me: Holder = { pid: process.pid, command: process.argv.slice(1).map((a) => Path.basename(a)).join(" "), since: new Date().toISOString() }
      for (let attempt = 0; attempt < 3; attempt++) {
        try {
          fs.writeFileSync(file, `${JSON.stringify(me)}\n`, { flag: "wx" })
          return Effect.succeed(file)
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== "EEXIST") return Effect.fail(lockError(`cannot create the lock file ${file}`, e))
        }
        const holder = readHolder(file)
        if (holder !== null && holder.pid !== process.pid && alive(holder.pid)) {
          const message = `the embedded store ${dataDir} is in use by process ${holder.pid} (${holder.command}, since ${holder.since}); ` +
            `PGlite serves one process at a time: stop that process first (the gateway: SIGTERM), ` +
            `or run both on a PostgreSQL server (DATABASE_URL)`
          return Effect.fail(lockError(message, new StoreInUse({ pid: holder.pid, message })))
        }
        // Left by a process that is gone (or unreadable): take it over.
        fs.rmSync(file, { force: true })
      }
      return Effect.fail(lockError(`cannot take the lock file ${file}: another process keeps re-creating it`))
    }),
    (file) =>
      Effect.sync(() => {
        // Only our own lock is removed (never one a later process took over).
        if (readHolder(file)?.pid === process.pid) fs.rmSync(file, { force: true })
      })
  )
