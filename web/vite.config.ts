import { defineConfig } from 'vite';

// Everything is bundled into dist/ (no CDN); the server serves it at `/`.
// Hashed files go to dist/assets/, which the server caches as immutable.
export default defineConfig({
  esbuild: { jsx: 'automatic', jsxImportSource: 'preact' },
  build: { target: 'es2022', assetsInlineLimit: 0 },
});
