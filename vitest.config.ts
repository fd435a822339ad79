import { configDefaults, defineConfig } from "vitest/config"

// The TestClock suites need a fresh module scope: in a shared one their `TestClock.adjust` found a
// live Clock (the @effect/vitest runner and the file then disagreed on the default services).
const isolated = ["test/breaker.test.ts", "test/host-entity.test.ts", "test/maintenance.test.ts", "test/routing.scenarios.test.ts"]

const shared = {
  // The package's own exports (`awooop-inference-gateway/client`) resolve to src/ in tests, to dist/ elsewhere.
  // (Only that condition is added: Vite's "module" would pick ESM builds Node cannot load, e.g. @opentelemetry/api's.)
  ssr: { resolve: { conditions: ["source", "node", "development|production"] } }
}

const common = {
  setupFiles: ["test/support/setup.ts"],
  testTimeout: 30_000,
  hookTimeout: 60_000
}

export default defineConfig({
  ...shared,
  test: {
    // Two files at a time on a 2-core machine: most suites wait on sockets, Postgres and child
    // processes, not the CPU. Each test makes its own random database, so neighbours don't collide.
    // The slowest files (Chromium, the spawned gateways) start first (vitest orders by last duration).
    maxWorkers: 2,
    minWorkers: 1,
    // Worker processes are reused from file to file: loading effect, @effect/platform, sql, cluster…
    // (Node's module cache) once per worker instead of once per file. In a full run (56 files, on a
    // loaded machine) this took CPU from 468 s to 302 s user+sys, collect from 147 s to ~25 s.
    // Environment changes are undone after each file (test/support/setup.ts). Each project still
    // gets fresh workers, and the isolated project re-evaluates its modules for every file.
    isolate: false,
    // One migrated template database per run; every test database is a copy of it (TestDatabase.ts).
    globalSetup: ["test/support/globalSetup.ts"],
    projects: [
      {
        ...shared,
        test: {
          ...common,
          name: "shared",
          include: ["test/**/*.test.ts"],
          // The fault matrix has its own command (`npm run test:faults`, vitest.faults.config.ts).
          exclude: [...configDefaults.exclude, "test/faults/**", ...isolated],
          // The forks pool reuses processes by the root's `isolate`; this one tells the worker not to
          // re-evaluate the modules between this project's files either (vitest 3.2).
          isolate: false
        }
      },
      { ...shared, test: { ...common, name: "isolated", include: isolated } }
    ]
  }
})
