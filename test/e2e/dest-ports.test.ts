// D's ports as real processes meet them: the export's TCP port is held from start until the export binds it at
// Prepare, and the migration port taken in the moment between D's check and its bind is still one line and exit 2.
import { join, resolve } from 'node:path';
import { createServer } from 'node:net';
import { pathToFileURL } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { EXIT } from '../../src/cli/exit-codes.js';
import { generateDemoImage } from '../../src/guest/image-gen.js';
import { freePort, readEvents, startAgent, waitForEvent, workDir, Teardown } from './helpers/processes.js';

const teardown = new Teardown();
afterEach(() => teardown.run());

const INJECT = pathToFileURL(resolve(__dirname, 'helpers/inject-fault.mjs')).href;

function setup(name: string) {
  const w = workDir(name);
  teardown.later(w.cleanup);
  return { ...w, src: join(w.dir, 'src.img'), dst: join(w.dir, 'dst.img'), events: join(w.dir, 'dst.jsonl') };
}

/** Try to bind 127.0.0.1:port here: the error code, or null when it was free (released again at once). */
function bindError(port: number): Promise<string | null> {
  return new Promise((res) => {
    const s = createServer();
    s.once('error', (e: NodeJS.ErrnoException) => res(e.code ?? e.message));
    s.listen({ port, host: '127.0.0.1', exclusive: true }, () => s.close(() => res(null)));
  });
}

describe('dest ports', () => {
  it('the migration port taken between the check and the bind: one line, exit 2, and the exit event says 2', async () => {
    const t = setup('steal');
    const port = await freePort();
    const dest = teardown.agent(
      startAgent(['dest', '--listen', `127.0.0.1:${port}`, '--image', t.dst, '--ticket-file', t.ticket, '--events', t.events], {
        POSTCOPY_TEST_FAULT: 'steal-port',
        NODE_OPTIONS: `--import ${INJECT}`,
      }),
    );
    const { code } = await dest.exit;
    expect(code, dest.stderr()).toBe(EXIT.USAGE);
    expect(dest.stderr().trimEnd().split('\n'), dest.stderr()).toEqual([expect.stringMatching(new RegExp(`^postcopy dest: .*--listen 127\\.0\\.0\\.1:${port}: the port is already in use`))]);
    expect(readEvents(t.events).filter((e) => e.event === 'exit').map((e) => e.code)).toEqual([EXIT.USAGE]);
  });

  it('--nbd-listen: nobody else can bind the port while D waits for S; the export then serves on it', async () => {
    const t = setup('nbdhold');
    generateDemoImage(t.src, 1024 * 1024, 8);
    const [port, nbdPort] = [await freePort(), await freePort()];
    const dest = teardown.agent(
      startAgent(['dest', '--listen', `127.0.0.1:${port}`, '--nbd-listen', `127.0.0.1:${nbdPort}`, '--image', t.dst, '--ticket-file', t.ticket, '--events', t.events]),
    );
    await waitForEvent(t.events, (e) => e.event === 'listening');
    expect(await bindError(nbdPort)).toBe('EADDRINUSE');
    const source = teardown.agent(startAgent(['source', '--connect', `127.0.0.1:${port}`, '--image', t.src, '--ticket-file', t.ticket]));
    const exported = await waitForEvent(t.events, (e) => e.event === 'export');
    expect(exported.uris).toEqual([`nbd://127.0.0.1:${nbdPort}/disk`]);
    expect((await source.exit).code, source.stderr()).toBe(EXIT.OK);
    await waitForEvent(t.events, (e) => e.event === 'summary');
    dest.child.kill('SIGTERM');
    expect((await dest.exit).code, dest.stderr()).toBe(EXIT.OK);
  });
});
