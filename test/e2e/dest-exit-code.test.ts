// `postcopy dest` as a real process: on every way it ends, the `exit` event's code is the process's exit code
// (orchestrators read one or the other, and must learn the same thing).
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { EXIT } from '../../src/cli/exit-codes.js';
import { generateDemoImage } from '../../src/guest/image-gen.js';
import { freePort, readEvents, startAgent, waitForEvent, workDir, Teardown, type Agent } from './helpers/processes.js';

const teardown = new Teardown();
afterEach(() => teardown.run());

function setup(name: string) {
  const w = workDir(name);
  teardown.later(w.cleanup);
  return { ...w, src: join(w.dir, 'src.img'), dst: join(w.dir, 'dst.img'), events: join(w.dir, 'dst.jsonl') };
}

/** D's exit code, after checking its events file has exactly one `exit` event and that it says the same. */
async function exitCodeAgreeingWithEvent(dest: Agent, events: string): Promise<number | null> {
  const { code } = await dest.exit;
  const exits = readEvents(events).filter((e) => e.event === 'exit');
  expect(exits.map((e) => e.code), `exit events; stderr:\n${dest.stderr()}`).toEqual([code]);
  return code;
}

describe('dest: the exit event tells the exit code', () => {
  it('SIGTERM while listening, nothing begun: exit 3 and an exit event saying 3', async () => {
    const t = setup('exit-sig');
    const dest = teardown.agent(startAgent(['dest', '--listen', `127.0.0.1:${await freePort()}`, '--image', t.dst, '--ticket-file', t.ticket, '--events', t.events]));
    await waitForEvent(t.events, (e) => e.event === 'listening');
    dest.child.kill('SIGTERM');
    expect(await exitCodeAgreeingWithEvent(dest, t.events)).toBe(EXIT.ROLLED_BACK);
  });

  it('a mistake found once the events file is open: exit 2 and an exit event saying 2', async () => {
    const t = setup('exit-usage');
    const dest = teardown.agent(
      startAgent(['dest', '--listen', `127.0.0.1:${await freePort()}`, '--image', t.dst, '--ticket-file', t.ticket, '--events', t.events, '--progress-interval', '5']),
    );
    expect(await exitCodeAgreeingWithEvent(dest, t.events)).toBe(EXIT.USAGE);
  });

  // D's own configuration is wrong for this source (found only at BEGIN): a refusal, not a rollback; both sides say 2.
  it('refused at Prepare (fallback image of another size): exit 2 on both sides and an exit event saying 2', async () => {
    const t = setup('exit-rollback');
    generateDemoImage(t.src, 1024 * 1024, 5);
    const fallback = join(t.dir, 'fallback.img');
    writeFileSync(fallback, Buffer.alloc(4096, 1));
    const port = await freePort();
    const dest = teardown.agent(
      startAgent(['dest', '--listen', `127.0.0.1:${port}`, '--image', t.dst, '--ticket-file', t.ticket, '--events', t.events, '--fallback', fallback]),
    );
    await waitForEvent(t.events, (e) => e.event === 'listening');
    const source = teardown.agent(startAgent(['source', '--connect', `127.0.0.1:${port}`, '--image', t.src, '--ticket-file', t.ticket]));
    expect(await exitCodeAgreeingWithEvent(dest, t.events)).toBe(EXIT.USAGE);
    expect((await source.exit).code).toBe(EXIT.USAGE);
  });

  it('a completed migration: exit 0 and an exit event saying 0', async () => {
    const t = setup('exit-ok');
    generateDemoImage(t.src, 1024 * 1024, 6);
    const port = await freePort();
    const dest = teardown.agent(startAgent(['dest', '--listen', `127.0.0.1:${port}`, '--image', t.dst, '--ticket-file', t.ticket, '--events', t.events]));
    await waitForEvent(t.events, (e) => e.event === 'listening');
    teardown.agent(startAgent(['source', '--connect', `127.0.0.1:${port}`, '--image', t.src, '--ticket-file', t.ticket]));
    expect(await exitCodeAgreeingWithEvent(dest, t.events)).toBe(EXIT.OK);
  });
});
