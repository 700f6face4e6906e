import { defineConfig } from 'vite';

// Everything is bundled into dist/ (no CDN); the server serves it at `/`.
// Hashed files go to dist/assets/, which the server caches as immutable.
// The service worker (src/sw.ts) is a second entry written to dist/sw.js:
// an unhashed name at the root, so that its scope is the whole app and the
// server sends it `no-cache` (browsers check it for updates).
export default defineConfig({
  esbuild: { jsx: 'automatic', jsxImportSource: 'preact' },
  build: {
    target: 'es2022',
    assetsInlineLimit: 0,
    rollupOptions: {
      input: { main: 'index.html', sw: 'src/sw.ts' },
      output: {
        entryFileNames: (chunk) => (chunk.name === 'sw' ? 'sw.js' : 'assets/[name]-[hash].js'),
      },
    },
  },
});
