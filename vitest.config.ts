import { configDefaults, defineConfig } from "vitest/config"

export default defineConfig({
  // The package's own exports (`awooop-inference-gateway/client`) resolve to src/ in tests, to dist/ elsewhere.
  // (Only that condition is added: Vite's "module" would pick ESM builds Node cannot load, e.g. @opentelemetry/api's.)
  ssr: { resolve: { conditions: ["source", "node", "development|production"] } },
  test: {
    include: ["test/**/*.test.ts"],
    // The fault matrix has its own command (`npm run test:faults`, vitest.faults.config.ts).
    exclude: [...configDefaults.exclude, "test/faults/**"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Integration suites share the local Postgres; each uses its own schema, but
    // running files one at a time keeps a 2-core machine predictable.
    fileParallelism: false
  }
})
