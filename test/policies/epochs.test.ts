import t from 'tap';
import { createHash } from 'node:crypto';
import { contextHash, decisionKey, epochKeys, epochKeysToBump } from '../../policies/src/epochs.ts';

const S = 'store1';

t.test('epochKeys: [global, user, object] key names', async (t) => {
  t.same(epochKeys(S, 'user:u1', 'work:w1'), ['authz:{store1}:epoch:global', 'authz:{store1}:epoch:user:u1', 'authz:{store1}:epoch:object:work:w1']);
  t.throws(() => epochKeys(S, 'u1', 'work:w1'), /user must be "user:<id>"/);
  t.throws(() => epochKeys(S, 'publisher:p#admin', 'work:w1'), /user must be "user:<id>"/);
  t.throws(() => epochKeys(S, 'user:u1', 'w1'), /object must be "<type>:<id>"/);
});

t.test('epochKeysToBump: the contract rules', async (t) => {
  // tuple user is user:<id> → that user's epoch only
  t.same(epochKeysToBump(S, [{ user: 'user:u1', relation: 'admin', object: 'publisher:p1' }]), ['authz:{store1}:epoch:user:u1']);
  t.same(epochKeysToBump(S, [{ user: 'user:u1', relation: 'owner', object: 'work:w1' }]), ['authz:{store1}:epoch:user:u1']);
  t.same(epochKeysToBump(S, [{ user: 'user:u1', relation: 'admin', object: 'system:platform' }]), ['authz:{store1}:epoch:user:u1']);
  // otherwise the object epoch, plus global when the object type is a parent (publisher, system)
  t.same(epochKeysToBump(S, [{ user: 'publisher:p1', relation: 'publisher', object: 'work:w1' }]), ['authz:{store1}:epoch:object:work:w1']);
  t.same(epochKeysToBump(S, [{ user: 'publisher:p1', relation: 'publisher', object: 'recording:r1' }]), ['authz:{store1}:epoch:object:recording:r1']);
  t.same(epochKeysToBump(S, [{ user: 'system:platform', relation: 'system', object: 'publisher:p1' }]), [
    'authz:{store1}:epoch:object:publisher:p1',
    'authz:{store1}:epoch:global',
  ]);
  t.same(epochKeysToBump(S, [{ user: 'publisher:p2#admin', relation: 'viewer', object: 'publisher:p1' }]), [
    'authz:{store1}:epoch:object:publisher:p1',
    'authz:{store1}:epoch:global',
  ]);
  // a wildcard reaches every user: object + global
  t.same(epochKeysToBump(S, [{ user: 'user:*', relation: 'owner', object: 'work:w1' }]), ['authz:{store1}:epoch:object:work:w1', 'authz:{store1}:epoch:global']);
  // each key once, first-seen order
  t.same(
    epochKeysToBump(S, [
      { user: 'user:u1', relation: 'owner', object: 'work:w1' },
      { user: 'publisher:p1', relation: 'publisher', object: 'work:w1' },
      { user: 'user:u1', relation: 'owner', object: 'work:w2' },
      { user: 'publisher:p1', relation: 'publisher', object: 'work:w1' },
    ]),
    ['authz:{store1}:epoch:user:u1', 'authz:{store1}:epoch:object:work:w1'],
  );
  t.same(epochKeysToBump(S, []), []);
});

t.test('decisionKey: sha256 over all parts; any part changes the key', async (t) => {
  const base = { storeId: S, modelId: 'm1', user: 'user:u1', relation: 'can_read', object: 'work:w1', epochs: ['3', null, '7'] };
  const key = decisionKey(base);
  t.match(key, /^authz:decision:[0-9a-f]{64}$/);
  const expected = createHash('sha256').update(JSON.stringify([S, 'm1', 'user:u1', 'can_read', 'work:w1', '', '3', '0', '7'])).digest('hex');
  t.equal(key, `authz:decision:${expected}`);
  t.equal(decisionKey({ ...base, epochs: ['3', '0', '7'] }), key, 'missing epoch = 0');
  t.equal(decisionKey({ ...base, epochs: [3, 0, 7] }), key, 'numbers and strings agree');
  const variants = [
    { storeId: 'store2' },
    { modelId: 'm2' },
    { user: 'user:u2' },
    { relation: 'can_update' },
    { object: 'work:w2' },
    { contextHash: 'abc' },
    { epochs: ['4', null, '7'] },
    { epochs: ['3', '1', '7'] },
    { epochs: ['3', null, '8'] },
  ];
  const keys = new Set(variants.map((v) => decisionKey({ ...base, ...v })));
  t.equal(keys.size, variants.length);
  t.notOk(keys.has(key));
  // no separator ambiguity
  t.not(decisionKey({ ...base, user: 'user:a', relation: 'b:c' }), decisionKey({ ...base, user: 'user:a:b', relation: 'c' }));
});

t.test('contextHash: empty is "", key order does not matter', async (t) => {
  t.equal(contextHash(), '');
  t.equal(contextHash({}, []), '');
  t.match(contextHash({ a: 1 }), /^[0-9a-f]{64}$/);
  t.equal(contextHash({ a: 1, b: { c: 2, d: 3 } }), contextHash({ b: { d: 3, c: 2 }, a: 1 }));
  t.not(contextHash({ a: 1 }), contextHash({ a: 2 }));
  t.not(contextHash(undefined, [{ user: 'user:u', relation: 'r', object: 'work:w' }]), '');
});

t.test('departments and custom roles are parents too: re-linking one bumps global', async (t) => {
  const keys = epochKeysToBump('s', [
    { user: 'publisher:p', relation: 'publisher', object: 'department:d' },
    { user: 'publisher:p', relation: 'publisher', object: 'role:p/clerk' },
  ]);
  t.same(keys, ['authz:{s}:epoch:object:department:d', 'authz:{s}:epoch:global', 'authz:{s}:epoch:object:role:p/clerk']);
  t.same(epochKeysToBump('s', [{ user: 'role:p/clerk#assignee', relation: 'grant_works_read', object: 'publisher:p' }]), ['authz:{s}:epoch:object:publisher:p', 'authz:{s}:epoch:global'], 'a custom role grant');
  t.same(epochKeysToBump('s', [{ user: 'user:*', relation: 'suspended', object: 'publisher:p' }]), ['authz:{s}:epoch:object:publisher:p', 'authz:{s}:epoch:global'], 'suspension');
  t.same(epochKeysToBump('s', [{ user: 'user:u', relation: 'disabled', object: 'system:platform' }]), ['authz:{s}:epoch:user:u'], 'disabling: that user only');
});
