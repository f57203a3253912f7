// npm run build: bundles the demo page's code (demo/app.js with the client,
// yjs and y-protocols) into dist/demo.js, which the gateway embeds and
// serves at /demo/app.js. dist/demo.js is committed: rebuild after changing
// src/ or demo/.

import { build } from 'esbuild'

await build({
  entryPoints: ['demo/app.js'],
  outfile: 'dist/demo.js',
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: ['es2020'],
  minify: true,
  legalComments: 'none',
  charset: 'utf8',
  logLevel: 'info',
})
