// `postcopy serve` refuses an operator's mistakes with one line and exit 2 before anything listens, and touches
// nothing it did not create: a plain-text port off loopback, a regular file where the control socket goes, a root
// others may write to, bad numbers.
import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { expectOneLineRefusal, freePort, startAgent, Teardown, workDir } from './helpers/processes.js';

const teardown = new Teardown();
afterEach(() => teardown.run());

/** Whether anything accepts connections on the port. */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

describe('postcopy serve: mistakes', () => {
  it('refuses each mistake in one line, exit 2, with nothing listening and nothing of the operator touched', async () => {
    const w = workDir('serve-mistakes');
    teardown.later(w.cleanup);
    const port = await freePort();
    const control = join(w.dir, 'control.sock');
    const root = join(w.dir, 'root');
    const base = ['serve', '--root', root, '--listen', `127.0.0.1:${port}`, '--control', control];
    const openRoot = join(w.dir, 'open-root');
    mkdirSync(openRoot);
    chmodSync(openRoot, 0o777);
    const notes = join(w.dir, 'notes.txt');
    writeFileSync(notes, 'the operator\'s file\n');
    const cases: Array<{ args: string[]; says: RegExp }> = [
      { args: ['serve', '--listen', `127.0.0.1:${port}`, '--control', control], says: /--root is required/ },
      { args: [...base.slice(0, 3), '--listen', `0.0.0.0:${port}`, '--control', control], says: /reachable from other hosts without TLS/ },
      { args: [...base, '--metrics-listen', '0.0.0.0:9464'], says: /--metrics-listen .*reachable from other hosts without TLS/ },
      { args: [...base, '--max-jobs', '0'], says: /--max-jobs/ },
      { args: [...base, '--max-bandwidth', 'fast'], says: /--max-bandwidth/ },
      { args: ['serve', '--root', root, '--listen', `127.0.0.1:${port}`, '--control', notes], says: /--control/ },
      { args: ['serve', '--root', openRoot, '--listen', `127.0.0.1:${port}`, '--control', control], says: /--root|writable by|group or others/ },
      { args: [...base, '--tls-cert', notes], says: /--tls/ },
    ];
    for (const c of cases) {
      const serve = teardown.agent(startAgent(c.args));
      const exit = await serve.exit;
      expect({ args: c.args.join(' '), code: exit.code }).toEqual({ args: c.args.join(' '), code: 2 });
      expectOneLineRefusal(serve.stderr(), 'postcopy serve');
      expect(serve.stderr()).toMatch(c.says);
      expect(await listening(port)).toBe(false);
    }
    expect(readFileSync(notes, 'utf8')).toBe('the operator\'s file\n');
    expect(statSync(openRoot).mode & 0o777).toBe(0o777);
  }, 60_000);
});
