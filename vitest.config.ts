import { configDefaults, defineConfig } from "vitest/config"

export default defineConfig({
  // The package's own exports (`awooop-inference-gateway/client`) resolve to src/ in tests, to dist/ elsewhere.
  // (Only that condition is added: Vite's "module" would pick ESM builds Node cannot load, e.g. @opentelemetry/api's.)
  ssr: { resolve: { conditions: ["source", "node", "development|production"] } },
  test: {
    include: ["test/**/*.test.ts"],
    // The fault matrix has its own command (`npm run test:faults`, vitest.faults.config.ts).
    exclude: [...configDefaults.exclude, "test/faults/**"],
    setupFiles: ["test/support/setup.ts"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Three files at a time on a 2-core machine: most suites wait on sockets, Postgres, child
    // processes and their own timeouts, and with two workers the cores were idle a third of a run
    // (session 12: 75-100 s, 67-78% busy; three workers 58-72 s, 83-89% busy). Each test makes its
    // own random database, so neighbours don't collide. The slowest files (Chromium, the spawned
    // gateways) start first (vitest orders by last duration; a file that failed last time goes first).
    // Sessions 8-11 kept two: the in-process gateways' 300 ms step windows failed now and then beside
    // busier neighbours. Since then the windows that failed were widened (paid-fallback's hanging
    // host 600 ms, the console's breaker host 1 s). In session 12, three-worker runs (one beside a
    // busy loop holding a core, 98% busy) failed only in two waits that read a state before it was
    // written (health-keepwarm's eviction count, async-runs' finished row) and on a product bug the
    // fuzzer found; with those fixed, 38 runs back to back were all green. On a machine where the
    // suite is CPU-bound (session 11's: 93% busy with three) a third worker gains nothing but costs
    // nothing either. Set minWorkers = maxWorkers: fewer made tinypool end a worker vitest still held
    // ("Terminating worker thread" after every test passed, vitest #8564).
    maxWorkers: 3,
    minWorkers: 3,
    // Worker processes are reused from file to file, and the modules they loaded with them: effect,
    // @effect/platform, sql, cluster… and src/ are loaded once per worker instead of once per file.
    // Measured on this 2-core machine (shared with another suite, load average 3-5), full runs back
    // to back: with `--isolate` (a process per file) 232 s wall, 249 + 69 s user+sys, collect 104 s;
    // with this 143 s and 159 s wall, 124 + 29 s and 127 + 30 s, collect 12-15 s. (An earlier note
    // here said it saved no CPU: that A/B set `isolate: false` on a project only, which the forks
    // pool ignores.)
    // What a file leaves in the process is then seen by the next one, so test/support/setup.ts gives
    // each file back the environment it started with and @effect/vitest's default `it.effect` /
    // `it.scoped` (a `layer(...)` block replaces them on vitest's shared `it`: the TestClock suites
    // then found a live Clock, which is why they once ran in an isolated project of their own), and
    // each journal without settings spills to a folder of its own (src/journal/JournalConfig.ts).
    isolate: false,
    // One migrated template database per run; every test database is a copy of it (TestDatabase.ts).
    globalSetup: ["test/support/globalSetup.ts"]
  }
})
