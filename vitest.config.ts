import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Crash tests spawn child writers; two files at a time fits the 2-core machines.
    maxWorkers: 2,
  },
});
