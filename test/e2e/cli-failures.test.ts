// How an unexpected failure of a real `postcopy` process reads: one line and exit 1, the stack only at debug level.
// The failures are injected by a preloaded module (helpers/inject-fault.mjs), standing in for bugs.
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { AGENT_NODE_FLAGS } from '../../src/cli/node-flags.js';
import { EXIT } from '../../src/cli/exit-codes.js';
import { freePort, readEvents, startAgent, workDir, Teardown } from './helpers/processes.js';

const teardown = new Teardown();
afterEach(() => teardown.run());

const INJECT = pathToFileURL(resolve(__dirname, 'helpers/inject-fault.mjs')).href;

async function destWithFault(fault: string, level: string) {
  const w = workDir('fail');
  teardown.later(w.cleanup);
  const events = join(w.dir, 'dst.jsonl');
  const argv = ['dest', '--listen', `127.0.0.1:${await freePort()}`, '--image', join(w.dir, 'dst.img'), '--state-dir', join(w.dir, 'new', 'state'), '--ticket-file', w.ticket, '--events', events];
  // startAgent runs node with the agent's flags; the preload goes in through NODE_OPTIONS.
  const dest = teardown.agent(startAgent(argv, { POSTCOPY_TEST_FAULT: fault, POSTCOPY_LOG_LEVEL: level, NODE_OPTIONS: `--import ${INJECT}` }));
  const { code } = await dest.exit;
  return { code, stderr: dest.stderr(), exitEvents: readEvents(events).filter((e) => e.event === 'exit').map((e) => e.code) };
}

const stackLines = (text: string) => text.split('\n').filter((l) => /^\s+at /.test(l));

describe('unexpected failures', () => {
  it('an error inside the command: exit 1, one line without a stack, the exit event says 1', async () => {
    const r = await destWithFault('mkdir', 'info');
    expect(r.code, r.stderr).toBe(EXIT.INTERNAL);
    expect(r.stderr.trimEnd().split('\n'), r.stderr).toEqual([expect.stringMatching(/^postcopy dest: internal error: injected mkdir failure/)]);
    expect(r.exitEvents).toEqual([EXIT.INTERNAL]);
  });

  it('the same at debug level: the stack follows the line', async () => {
    const r = await destWithFault('mkdir', 'debug');
    expect(r.code, r.stderr).toBe(EXIT.INTERNAL);
    expect(r.stderr).toMatch(/postcopy dest: internal error: Error: injected mkdir failure\n\s+at /);
    expect(stackLines(r.stderr).length).toBeGreaterThan(0);
  });

  it('an error thrown from a callback nobody catches: exit 1, one line without a stack', async () => {
    const r = await destWithFault('callback-throw', 'warn');
    expect(r.code, r.stderr).toBe(EXIT.INTERNAL);
    expect(r.stderr.trimEnd().split('\n'), r.stderr).toEqual([expect.stringMatching(/^postcopy dest: internal error: injected callback failure/)]);
  });
});
