// The golden cases through the wasm-bindgen build's JavaScript exports
// (`make wasm-js` writes target/modules/js/), run by `node --test guest/tests/js/`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const golden = fileURLToPath(new URL('../golden/', import.meta.url));
const modulePath = fileURLToPath(new URL('../../../target/modules/js/dittofs_reconciler.js', import.meta.url));
const guest = require(modulePath);

test('manifest() returns the expected manifest', () => {
  assert.equal(guest.manifest() + '\n', readFileSync(golden + 'manifest.json', 'utf8'));
});

const cases = readdirSync(golden).filter((f) => f.endsWith('.snapshot.json')).sort();

test('there are golden cases', () => {
  assert.ok(cases.length >= 20, `only ${cases.length} cases`);
});

for (const file of cases) {
  const name = file.slice(0, -'.snapshot.json'.length);
  test(`reconcile(): ${name}`, () => {
    const snapshot = readFileSync(golden + file, 'utf8');
    const expected = readFileSync(golden + `${name}.outcome.json`, 'utf8');
    assert.equal(guest.reconcile(snapshot) + '\n', expected);
  });
}
