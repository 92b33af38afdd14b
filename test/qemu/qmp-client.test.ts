// The QMP client against a scripted QMP server (no QEMU needed): greeting and capabilities, replies matched by
// id out of order, events, QEMU errors and dead peers as one-line HypervisorErrors; and the command template.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { dirname, join } from 'node:path';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { UsageError } from '../../src/common/errors.js';
import { HypervisorError } from '../../src/hypervisor/errors.js';
import { shellQuote } from '../../src/common/shell.js';
import { expandTemplate, joinLines } from '../../src/hypervisor/qemu-process.js';
import { QmpClient } from '../../src/hypervisor/qmp-client.js';
import { closeFakeQmps, fakeQmp } from './helpers/fake-qmp.js';
import { expectThrows } from '../helpers/errors.js';
import { fcParams } from '../helpers/fc.js';

afterEach(closeFakeQmps);

describe('QmpClient', () => {
  it('matches replies by id, even out of order, and delivers events with their timestamps', async () => {
    const held: Array<{ id: number; sock: Socket }> = [];
    const path = await fakeQmp((cmd, sock) => {
      if (cmd.execute === 'slow') {
        held.push({ id: cmd.id, sock });
        return;
      }
      sock.write(JSON.stringify({ event: 'STOP', data: {}, timestamp: { seconds: 1700000000, microseconds: 250000 } }) + '\r\n');
      sock.write(JSON.stringify({ return: { status: 'running' }, id: cmd.id }) + '\r\n');
      for (const h of held.splice(0)) h.sock.write(JSON.stringify({ return: 'late', id: h.id }) + '\r\n');
    });
    const qmp = await QmpClient.connect(path);
    const stop = qmp.waitEvent('STOP');
    const slow = qmp.execute('slow');
    await expect(qmp.execute('query-status')).resolves.toEqual({ status: 'running' });
    await expect(slow).resolves.toBe('late');
    expect((await stop).at).toBe(1700000000250);
    qmp.close();
  });

  it("QEMU's error reply is one line naming the command, QEMU's text and class", async () => {
    const path = await fakeQmp((cmd, sock) =>
      sock.write(JSON.stringify({ error: { class: 'GenericError', desc: "Migration is disabled when VirtFS export path '/x' is mounted" }, id: cmd.id }) + '\n'),
    );
    const qmp = await QmpClient.connect(path);
    const err = await qmp.execute('migrate', { uri: 'unix:/tmp/m.sock' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HypervisorError);
    expect((err as HypervisorError).code).toBe('PC_ERR_HYPERVISOR');
    expect((err as Error).message).toBe("hypervisor (QEMU) failed: QMP migrate: Migration is disabled when VirtFS export path '/x' is mounted (GenericError)");
    expect((err as Error).message).not.toContain('\n');
    qmp.close();
  });

  it('QEMU going away fails every pending command and waiter with one line', async () => {
    const path = await fakeQmp((_cmd, sock) => sock.destroy());
    const qmp = await QmpClient.connect(path);
    const waiter = qmp.waitEvent('RESUME');
    const err = await qmp.execute('cont').catch((e: unknown) => e);
    expect((err as Error).message).toMatch(/^hypervisor \(QEMU\) failed: QMP cont: QMP .*qmp\.sock: QEMU closed the connection$/);
    await expect(waiter).rejects.toBeInstanceOf(HypervisorError);
    expect(qmp.closed).toBe(true);
  });

  it('a socket that is not QMP, or not there, is a one-line error after the timeout', async () => {
    const silent = await fakeQmp(() => {}, false);
    await expect(QmpClient.connect(silent, { timeoutMs: 300 })).rejects.toThrow(/no greeting within/);
    const started = Date.now();
    await expect(QmpClient.connect(join(dirname(silent), 'none.sock'), { timeoutMs: 300 })).rejects.toThrow(/^hypervisor \(QEMU\) failed: QMP .*none\.sock: .*ENOENT/);
    expect(Date.now() - started).toBeLessThan(3000);
  });

  it('an oversized line kills the connection before it is buffered whole', async () => {
    const path = await fakeQmp((_cmd, sock) => sock.write('{"return": "' + 'x'.repeat(5 * 1024 * 1024)));
    const qmp = await QmpClient.connect(path);
    await expect(qmp.execute('query-status')).rejects.toThrow(/line over/);
  });
});

describe('destination QEMU command template', () => {
  const v = { export: 'nbd+unix:///disk?socket=/run/vm 1.sock', qmp: '/run/q.sock', serial: '/var/log/s.log' };

  it('fills the placeholders shell-quoted and adds -incoming defer, -S and a QMP socket', () => {
    const cmd = expandTemplate('qemu-system-x86_64 -m 256 -drive file={export},format=raw -serial file:{serial}', v);
    expect(cmd).toBe(
      "qemu-system-x86_64 -m 256 -drive file='nbd+unix:///disk?socket=/run/vm 1.sock',format=raw -serial file:/var/log/s.log" +
        " -qmp unix:/run/q.sock,server=on,wait=off -incoming defer -S",
    );
  });

  it("keeps the operator's own {qmp}, -incoming defer and -S", () => {
    const cmd = expandTemplate('qemu -S -incoming defer -qmp unix:{qmp},server=on,wait=off -drive file={export}', v);
    expect(cmd).toBe("qemu -S -incoming defer -qmp unix:/run/q.sock,server=on,wait=off -drive file='nbd+unix:///disk?socket=/run/vm 1.sock'");
  });

  it('refuses a template without {export} or with another -incoming, as a usage mistake (exit 2)', () => {
    expect(() => expandTemplate('qemu -drive file=/x.img', v)).toThrow(/\{export\}/);
    expect(() => expandTemplate('qemu -incoming tcp:0:4444 -drive file={export}', v)).toThrow(/-incoming defer/);
    expectThrows(() => expandTemplate('qemu -drive file=/x.img', v), UsageError, 'PC_ERR_USAGE');
    expectThrows(() => expandTemplate('qemu -incoming tcp:0:4444 -drive file={export}', v), UsageError, 'PC_ERR_USAGE');
  });

  it('a template over several lines is one command: line breaks (with or without a backslash) separate arguments', () => {
    const multi = 'qemu-system-x86_64 -m 256 \\\n    -serial file:{serial}\n    -drive file={export},format=raw,if=none,id=d0\r\n  -device virtio-blk-pci,drive=d0\n';
    expect(expandTemplate(multi, v)).toBe(
      "qemu-system-x86_64 -m 256      -serial file:/var/log/s.log     -drive file='nbd+unix:///disk?socket=/run/vm 1.sock',format=raw,if=none,id=d0   -device virtio-blk-pci,drive=d0" +
        ' -qmp unix:/run/q.sock,server=on,wait=off -incoming defer -S',
    );
  });

  // What sh makes of the joined line is what the operator meant line by line: every word arrives whole, in order.
  it('property: the words sh passes to the command are the template\'s words, however the lines are broken', () => {
    const word = fc.string({ minLength: 1, maxLength: 8, unit: fc.constantFrom('a', 'Z', '9', '-', '=', ',', ' ', "'", '"', '$', '\\', '\n', '#', '*') });
    const gap = fc.constantFrom(' ', '\n', ' \\\n', '\n    ', '\t\\\n  ', '\r\n');
    fc.assert(
      fc.property(fc.array(fc.tuple(word, gap), { minLength: 1, maxLength: 6 }), (parts) => {
        const template = 'printf %s\\\\0' + parts.map(([w, g]) => g + shellQuote(w)).join('');
        const out = execFileSync('/bin/sh', ['-c', `exec ${joinLines(template)}`], { encoding: 'utf8' });
        expect(out.split('\0').slice(0, -1)).toEqual(parts.map(([w]) => w));
      }),
      fcParams(40),
    );
  });

  it("refuses what joining lines would change: a '#' comment, an unterminated quote", () => {
    expectThrows(() => expandTemplate('qemu -m 256 # memory\n -drive file={export}', v), UsageError, 'PC_ERR_USAGE');
    expect(() => expandTemplate('qemu -m 256\n# the disk\n -drive file={export}', v)).toThrow(/'#' comment .*line 2/);
    expect(() => expandTemplate("qemu -append 'console=ttyS0 -drive file={export}", v)).toThrow(/unterminated single quote/);
    expect(() => expandTemplate('qemu -drive file={export};# the rest\n -m 256', v)).toThrow(/'#' comment/);
    // A quoted line break saved with CRLF reaches QEMU as the newline sh would pass, without the CR.
    expect(expandTemplate("qemu -append 'a\r\nb' -drive file={export}", v)).toMatch(/^qemu -append 'a\nb' /);
    // Not a comment: a '#' inside a word or in quotes.
    expect(expandTemplate("qemu -name vm#1 -append '# x' -drive file={export}", v)).toMatch(/^qemu -name vm#1 -append '# x' /);
  });

  it("the README's multi-line --qemu-cmd, pasted into a shell, gives QEMU the arguments it shows", () => {
    const readme = readFileSync(join(__dirname, '../../README.md'), 'utf8');
    const pasted = /--qemu-cmd '([^']*)'/.exec(readme.slice(readme.indexOf('## Migrating a QEMU guest')))![1]!;
    expect(pasted.split('\n').length).toBeGreaterThan(2);
    const cmd = expandTemplate(pasted, v);
    const args = execFileSync('/bin/sh', ['-c', `exec ${cmd.replace(/^qemu-system-x86_64/, 'printf %s\\\\0')}`], { encoding: 'utf8' }).split('\0').slice(0, -1);
    expect(args).toEqual([
      '-machine', 'q35,accel=kvm', '-m', '4096', '-display', 'none', '-monitor', 'none',
      '-serial', 'file:/var/log/s.log',
      '-drive', 'file=nbd+unix:///disk?socket=/run/vm 1.sock,format=raw,if=none,id=d0',
      '-device', 'virtio-blk-pci,drive=d0,cyls=32,heads=16,secs=63',
      '-qmp', 'unix:/run/q.sock,server=on,wait=off', '-incoming', 'defer', '-S',
    ]);
  });

  it('quotes what the shell would expand', () => {
    expect(shellQuote("a'b $x")).toBe("'a'\\''b $x'");
    expect(shellQuote('/plain/path.sock')).toBe('/plain/path.sock');
  });
});
