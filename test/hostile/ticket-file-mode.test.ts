// Issue 10 case 4: a ticket file that group or others can read is named in one warning line (as ssh does for
// a private key), and then used: a warning, not a refusal. A 0600 ticket gets no warning.
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { readTicket } from '../../src/cli/args.js';
import { Teardown, humanLines, startAgent, waitForEvent, workDir } from '../e2e/helpers/processes.js';

const teardown = new Teardown();
afterEach(() => teardown.run());

const SECRET = 'a-ticket-secret-long-enough-0123456789';

describe('ticket file permissions', () => {
  it('readTicket warns once for modes open to group or others, and still returns the ticket', () => {
    const w = workDir('ticket-mode');
    teardown.later(w.cleanup);
    const path = join(w.dir, 't');
    writeFileSync(path, SECRET + '\n');
    for (const [mode, warned] of [[0o600, false], [0o400, false], [0o640, true], [0o644, true], [0o604, true], [0o620, true]] as const) {
      chmodSync(path, mode);
      const lines: string[] = [];
      const t = readTicket(path, (l) => lines.push(l));
      expect(t.secret.toString()).toBe(SECRET);
      expect(lines, mode.toString(8)).toHaveLength(warned ? 1 : 0);
      if (warned) {
        expect(lines[0]).toContain(path);
        expect(lines[0]).toContain(`mode 0${mode.toString(8)}`);
        expect(lines[0]).toContain(`chmod 600 ${path}`);
      }
    }
  });

  it('the real CLI: one warning line on stderr for a 0644 ticket, none for 0600; the ticket is still used', async () => {
    const w = workDir('ticket-cli');
    teardown.later(w.cleanup);
    const path = join(w.dir, 'open-ticket');
    writeFileSync(path, SECRET + '\n');
    const run = async (mode: number) => {
      chmodSync(path, mode);
      const events = join(w.dir, `d-${mode.toString(8)}.jsonl`);
      const a = teardown.agent(startAgent(['dest', '--listen', '127.0.0.1:0', '--image', join(w.dir, 'img'), '--ticket-file', path, '--events', events]));
      await waitForEvent(events, (e) => e.event === 'listening');
      a.child.kill('SIGTERM');
      await a.exit;
      return humanLines(a.stderr());
    };
    const open = (await run(0o644)).filter((l) => l.includes('warning'));
    expect(open).toHaveLength(1);
    expect(open[0]).toMatch(/^postcopy: warning: ticket file .*open-ticket is open to group or others \(mode 0644\)/);
    expect((await run(0o600)).filter((l) => l.includes('warning'))).toEqual([]);
  });
});
