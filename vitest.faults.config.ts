import { defineConfig } from "vitest/config"

// `npm run test:faults`: the fault matrix (test/faults), apart from `npm test` (it spawns gateways and
// takes about two minutes). Files run one at a time, like the main suite.
export default defineConfig({
  test: {
    include: ["test/faults/**/*.test.ts"],
    globalSetup: ["test/support/globalSetup.ts"],
    setupFiles: ["test/support/setup.ts"],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    fileParallelism: false
  }
})
