import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'

import { build } from 'esbuild'

import { demoBuildOptions } from '../build.mjs'

test('dist/demo.js (embedded in the gateway) is what npm run build makes from the sources', async () => {
  const result = await build({ ...demoBuildOptions, write: false })
  assert.equal(result.outputFiles.length, 1)
  const committed = readFileSync(join(demoBuildOptions.absWorkingDir, demoBuildOptions.outfile), 'utf8')
  assert.ok(result.outputFiles[0].text.length > 50_000, 'the bundle holds yjs and the client')
  assert.ok(result.outputFiles[0].text === committed, 'dist/demo.js is stale: run `npm run build` in clients/js and commit it')
})
