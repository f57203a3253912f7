// npm run build: bundles the demo page's code (demo/app.js with the client,
// yjs and y-protocols) into dist/demo.js, which the gateway embeds
// (include_str!) and serves at /demo/app.js. dist/demo.js is committed:
// rebuild after changing src/ or demo/ (test/build.test.mjs checks it).

import { dirname } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

import { build } from 'esbuild'

export const demoBuildOptions = {
  absWorkingDir: dirname(fileURLToPath(import.meta.url)),
  entryPoints: ['demo/app.js'],
  outfile: 'dist/demo.js',
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: ['es2020'],
  minify: true,
  legalComments: 'none',
  charset: 'utf8',
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await build({ ...demoBuildOptions, logLevel: 'info' })
}
