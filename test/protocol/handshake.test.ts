// Pure handshake pieces: ticket parsing, expiry, version choice, HMAC proofs, resume-key derivation.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AuthError, ProtocolError, UsageError } from '../../src/common/errors.js';
import { NONCE_BYTES, PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN, TICKET_ID_HEX_CHARS } from '../../src/protocol/constants.js';
import {
  checkNonce,
  checkTicketValid,
  chooseVersion,
  computeProof,
  deriveResumeKey,
  newNonce,
  parseTicket,
  resumeProofKey,
  ticketId,
  verifyProof,
} from '../../src/protocol/handshake.js';
import { expectThrows } from '../helpers/errors.js';
import { fcParams } from '../helpers/fc.js';

const SECRET = 'correct-horse-battery-staple-0123';

describe('parseTicket', () => {
  it('takes the first non-empty, non-comment line as the secret', () => {
    const t = parseTicket(`# migration ticket for vm-42\n\n   ${SECRET}   \n# trailing comment\n`);
    expect(t.secret.toString('utf8')).toBe(SECRET);
    expect(t.expiresAt).toBeUndefined();
  });

  it('accepts CRLF line endings', () => {
    expect(parseTicket(`# c\r\n${SECRET}\r\n`).secret.toString()).toBe(SECRET);
  });

  it('reads an expires= line (before or after the secret)', () => {
    const at = '2031-05-06T07:08:09Z';
    expect(parseTicket(`${SECRET}\nexpires=${at}\n`).expiresAt).toBe(Date.parse(at));
    const t = parseTicket(`expires=${at}\n${SECRET}\n`);
    expect(t.expiresAt).toBe(Date.parse(at));
    expect(t.secret.toString()).toBe(SECRET);
  });

  it('a secret shorter than 16 bytes: UsageError PC_ERR_USAGE', () => {
    expectThrows(() => parseTicket('short-secret'), UsageError, 'PC_ERR_USAGE');
    expectThrows(() => parseTicket('123456789012345'), UsageError, 'PC_ERR_USAGE');
    expect(parseTicket('1234567890123456').secret.length).toBe(16);
    // Length is counted in bytes: 8 two-byte characters are 16 bytes.
    expect(parseTicket('éééééééé').secret.length).toBe(16);
  });

  it('no secret at all (empty, only comments, only expires): UsageError PC_ERR_USAGE', () => {
    for (const text of ['', '\n\n', '# only a comment\n', 'expires=2030-01-01T00:00:00Z\n']) {
      expectThrows(() => parseTicket(text), UsageError, 'PC_ERR_USAGE');
    }
  });

  it('an unparseable expiry: UsageError PC_ERR_USAGE', () => {
    expectThrows(() => parseTicket(`${SECRET}\nexpires=next tuesday\n`), UsageError, 'PC_ERR_USAGE');
  });
});

describe('checkTicketValid', () => {
  it('a ticket without expiry is always valid', () => {
    checkTicketValid({ secret: Buffer.from(SECRET) }, Number.MAX_SAFE_INTEGER);
  });

  it('valid up to and including expiresAt; after it AuthError PC_ERR_TICKET_EXPIRED', () => {
    const t = { secret: Buffer.from(SECRET), expiresAt: 1_000_000 };
    checkTicketValid(t, 999_999);
    checkTicketValid(t, 1_000_000);
    expectThrows(() => checkTicketValid(t, 1_000_001), AuthError, 'PC_ERR_TICKET_EXPIRED');
  });
});

describe('chooseVersion', () => {
  it('picks the highest common version', () => {
    expect(chooseVersion([1, 5], [2, 3])).toBe(3);
    expect(chooseVersion([3, 9], [1, 4])).toBe(4);
    expect(chooseVersion([2, 2], [2, 2])).toBe(2);
    expect(chooseVersion([PROTOCOL_VERSION_MIN, PROTOCOL_VERSION_MAX])).toBe(PROTOCOL_VERSION_MAX);
  });

  it('disjoint ranges: ProtocolError PC_ERR_VERSION', () => {
    expectThrows(() => chooseVersion([3, 4], [1, 2]), ProtocolError, 'PC_ERR_VERSION');
    expectThrows(() => chooseVersion([1, 2], [3, 4]), ProtocolError, 'PC_ERR_VERSION');
    expectThrows(() => chooseVersion([PROTOCOL_VERSION_MAX + 1, PROTOCOL_VERSION_MAX + 5]), ProtocolError, 'PC_ERR_VERSION');
    // An inverted (empty) range from the peer shares nothing.
    expectThrows(() => chooseVersion([5, 1], [1, 5]), ProtocolError, 'PC_ERR_VERSION');
  });

  it('property: the choice lies in both ranges and nothing higher does', () => {
    const range = fc.tuple(fc.nat({ max: 20 }), fc.nat({ max: 20 })).map(([a, b]) => [Math.min(a, b), Math.max(a, b)] as [number, number]);
    fc.assert(
      fc.property(range, range, (peer, ours) => {
        const lo = Math.max(peer[0], ours[0]);
        const hi = Math.min(peer[1], ours[1]);
        if (lo > hi) {
          expectThrows(() => chooseVersion(peer, ours), ProtocolError, 'PC_ERR_VERSION');
        } else {
          expect(chooseVersion(peer, ours)).toBe(hi);
        }
      }),
      fcParams(),
    );
  });
});

describe('proofs', () => {
  const key = Buffer.from(SECRET);
  const sn = 'aa'.repeat(NONCE_BYTES);
  const dn = 'bb'.repeat(NONCE_BYTES);

  it('newNonce is NONCE_BYTES of lowercase hex, fresh each time', () => {
    const a = newNonce();
    expect(a).toMatch(new RegExp(`^[0-9a-f]{${NONCE_BYTES * 2}}$`));
    expect(newNonce()).not.toBe(a);
  });

  // Regression: the handshake once took any nonce of 32 hex characters or more, i.e. 16 bytes, half a nonce.
  it('checkNonce takes exactly NONCE_BYTES (64 hex characters); 16, 31 or 33 bytes: AuthError PC_ERR_AUTH', () => {
    expect(NONCE_BYTES).toBe(32);
    expect(() => checkNonce(newNonce())).not.toThrow();
    for (const bytes of [0, 1, 16, 31, NONCE_BYTES + 1]) {
      const e = expectThrows(() => checkNonce('ab'.repeat(bytes)), AuthError, 'PC_ERR_AUTH');
      expect(e.message).toContain(`nonce of ${bytes} bytes, must be ${NONCE_BYTES}`);
    }
  });

  it('a proof is a deterministic 32-byte HMAC in hex, and verifies against itself', () => {
    const p = computeProof(key, 'source', sn, dn);
    expect(p).toMatch(/^[0-9a-f]{64}$/);
    expect(computeProof(key, 'source', sn, dn)).toBe(p);
    verifyProof(p, p);
  });

  it('the wrong key fails: AuthError PC_ERR_AUTH', () => {
    const p = computeProof(Buffer.from('another-secret-of-enough-length'), 'source', sn, dn);
    expectThrows(() => verifyProof(computeProof(key, 'source', sn, dn), p), AuthError, 'PC_ERR_AUTH');
  });

  it('a proof is bound to the role, both nonces and the session (no reflection, no replay)', () => {
    const base = computeProof(key, 'source', sn, dn, 's1');
    const variants = [
      computeProof(key, 'dest', sn, dn, 's1'),
      computeProof(key, 'source', dn, sn, 's1'),
      computeProof(key, 'source', sn, 'cc'.repeat(NONCE_BYTES), 's1'),
      computeProof(key, 'source', 'cc'.repeat(NONCE_BYTES), dn, 's1'),
      computeProof(key, 'source', sn, dn, 's2'),
      computeProof(key, 'source', sn, dn),
    ];
    expect(new Set([base, ...variants]).size).toBe(variants.length + 1);
    for (const v of variants) expectThrows(() => verifyProof(base, v), AuthError, 'PC_ERR_AUTH');
  });

  it('a truncated, empty, or overlong proof fails with AuthError PC_ERR_AUTH (no RangeError from timingSafeEqual)', () => {
    const p = computeProof(key, 'dest', sn, dn);
    for (const bad of ['', p.slice(0, 62), `${p}00`, p.slice(2), 'zz']) {
      expectThrows(() => verifyProof(p, bad), AuthError, 'PC_ERR_AUTH');
    }
  });

  it('property: a proof with any one byte changed fails', () => {
    const p = computeProof(key, 'source', sn, dn);
    fc.assert(
      fc.property(fc.nat({ max: 31 }), fc.integer({ min: 1, max: 255 }), (at, x) => {
        const b = Buffer.from(p, 'hex');
        b[at]! ^= x;
        expectThrows(() => verifyProof(p, b.toString('hex')), AuthError, 'PC_ERR_AUTH');
      }),
      fcParams(),
    );
  });
});

describe('deriveResumeKey', () => {
  const secret = Buffer.from(SECRET);
  const sn = newNonce();
  const dn = newNonce();

  it('is deterministic: both sides derive the same 32-byte key', () => {
    const a = deriveResumeKey(secret, sn, dn, 'session-1');
    expect(a).toHaveLength(32);
    expect(deriveResumeKey(Buffer.from(SECRET), sn, dn, 'session-1').equals(a)).toBe(true);
  });

  it('differs per session, per nonce and per secret, and is not the ticket secret or a proof', () => {
    const a = deriveResumeKey(secret, sn, dn, 'session-1');
    const others = [
      deriveResumeKey(secret, sn, dn, 'session-2'),
      deriveResumeKey(secret, newNonce(), dn, 'session-1'),
      deriveResumeKey(secret, sn, newNonce(), 'session-1'),
      deriveResumeKey(Buffer.from('a-different-ticket-secret'), sn, dn, 'session-1'),
    ];
    for (const o of others) expect(o.equals(a)).toBe(false);
    expect(a.equals(secret)).toBe(false);
    expect(a.toString('hex')).not.toBe(computeProof(secret, 'source', sn, dn, 'session-1'));
  });
});

describe('resumeProofKey (a resume proves the ticket as well as the resume key)', () => {
  it('depends on both the ticket secret and the resume key, is 32 bytes, and is neither of them', () => {
    const secret = Buffer.from(SECRET);
    const rk = deriveResumeKey(secret, newNonce(), newNonce(), 'ab'.repeat(16));
    const k = resumeProofKey(secret, rk);
    expect(k).toHaveLength(32);
    expect(resumeProofKey(Buffer.from(SECRET), Buffer.from(rk)).equals(k)).toBe(true);
    expect(k.equals(rk)).toBe(false);
    expect(k.equals(secret)).toBe(false);
    expect(resumeProofKey(Buffer.from('another-secret-of-enough-length'), rk).equals(k)).toBe(false);
    const other = Buffer.from(rk);
    other[0]! ^= 1;
    expect(resumeProofKey(secret, other).equals(k)).toBe(false);
  });
});

describe('ticketId (the ticket\'s public name in HELLO)', () => {
  it('is HMAC-SHA256(secret, "postcopy ticket id v1") cut to 16 bytes, in lower-case hex', () => {
    // Computed apart with Python's hmac module.
    expect(ticketId(parseTicket(SECRET))).toBe('7c55bf74cf3b16aab6b6f3d9948b3c09');
    expect(ticketId(parseTicket(SECRET))).toHaveLength(TICKET_ID_HEX_CHARS);
  });

  it('depends on the secret only (not the expiry), and never shows the secret', () => {
    fc.assert(
      fc.property(fc.string({ minLength: 16, maxLength: 64 }).filter((s) => s.trim() === s && !s.includes('\n') && !s.startsWith('#') && !s.startsWith('expires=')), (secret) => {
        const id = ticketId({ secret: Buffer.from(secret) });
        expect(id).toMatch(/^[0-9a-f]{32}$/);
        expect(ticketId({ secret: Buffer.from(secret), expiresAt: 1 })).toBe(id);
        expect(ticketId({ secret: Buffer.from(`${secret}x`) })).not.toBe(id);
        expect(id).not.toContain(Buffer.from(secret).toString('hex').slice(0, 8));
      }),
      fcParams(),
    );
  });
});
