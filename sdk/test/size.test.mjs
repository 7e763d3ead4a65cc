// datafly.js is on every page's critical path: keep it small and dependency-free.
import test from 'node:test';
import assert from 'node:assert/strict';
import { gzipSync } from 'node:zlib';
import { SDK_SOURCE } from '../test-support/fake-browser.mjs';

test('datafly.js is under 8 KB gzipped', () => {
  const bytes = gzipSync(Buffer.from(SDK_SOURCE), { level: 9 }).length;
  assert.ok(bytes < 8 * 1024, `datafly.js is ${bytes} bytes gzipped`);
});

test('datafly.js needs nothing else at run time', () => {
  assert.doesNotMatch(SDK_SOURCE, /\brequire\s*\(|\bimport\s*[({'"]|^\s*import\s/m);
});
