/**
 * Loaded before every test file (bunfig.toml [test] preload). Bun's test runner does not emit the
 * process 'exit' event, so the folders tests make under the temporary folder (the executable's above
 * all, shared by every file of a run) are removed by a hook that runs once after the last file.
 */
import { afterAll } from 'bun:test'
import { removeTempDirs } from './harness.ts'

afterAll(removeTempDirs)
