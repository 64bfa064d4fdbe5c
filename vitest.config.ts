import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Real clients, real processes and real disks: generous per-test limits, no timing asserts.
    testTimeout: 120_000,
    hookTimeout: 60_000,
    // Two cores: keep at most two test files running at once.
    maxWorkers: 2,
    reporters: ['default'],
  },
});
