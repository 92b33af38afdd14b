// Review item 2 of issue 10: the destination QEMU adapter removes on rollback only what this session created.
// A stand-in for QEMU that exits at once (`sh -c 'exit 1'`) makes Prepare fail, as a bad --qemu-cmd would;
// the files at --serial-log and --qmp are then checked after the rollback's abort().
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { nullEvents } from '../../src/common/events.js';
import { silentLogger } from '../../src/common/logger.js';
import { QemuDestMigrator } from '../../src/hypervisor/qemu-dest.js';
import type { GuestDefinition } from '../../src/protocol/messages.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function setup(): { dir: string; migrator: (o?: { serialPath?: string; qmpPath?: string }) => QemuDestMigrator } {
  const dir = mkdtempSync(join(tmpdir(), 'postcopy-qemu-dest-files-'));
  dirs.push(dir);
  return {
    dir,
    migrator: (o = {}) =>
      new QemuDestMigrator({
        command: `sh -c 'exit 1' {export} {serial}`,
        qmpPath: o.qmpPath ?? join(dir, 'qmp.sock'),
        serialPath: o.serialPath ?? join(dir, 'serial.log'),
        runDir: dir,
        log: silentLogger(),
        events: nullEvents,
      }),
  };
}

const guest = { persistent: { kind: 'qemu' } } as unknown as GuestDefinition;
const exportUris = ['nbd+unix:///?socket=/nonexistent.sock'];
const facts = (p: string) => {
  const st = statSync(p);
  return { mode: st.mode & 0o7777, size: st.size, sha: createHash('sha256').update(readFileSync(p)).digest('hex') };
};

describe('QEMU destination: a rollback removes only what this session created (review item 2)', () => {
  it("an existing --serial-log (the operator's console log) survives a failed start and its rollback, mode and content", async () => {
    const { dir, migrator } = setup();
    const serial = join(dir, 'console.log');
    writeFileSync(serial, 'weeks of console history\n', { mode: 0o640 });
    const before = facts(serial);
    const m = migrator({ serialPath: serial });
    await expect(m.prepare(guest, exportUris)).rejects.toThrow(/exited/);
    await m.abort();
    expect(existsSync(serial)).toBe(true);
    expect(facts(serial)).toEqual(before);
  });

  it('a serial log this session created is removed by the rollback, private (0600) while it existed', async () => {
    const { dir, migrator } = setup();
    const serial = join(dir, 'serial.log');
    const m = migrator({ serialPath: serial });
    await expect(m.prepare(guest, exportUris)).rejects.toThrow(/exited/);
    expect(lstatSync(serial).mode & 0o777).toBe(0o600);
    await m.abort();
    expect(existsSync(serial)).toBe(false);
  });

  it('a regular file at --qmp is refused at Prepare and left alone, also by the rollback', async () => {
    const { dir, migrator } = setup();
    const qmp = join(dir, 'not-a-socket');
    writeFileSync(qmp, 'the operator\'s file\n');
    const before = facts(qmp);
    const m = migrator({ qmpPath: qmp });
    await expect(m.prepare(guest, exportUris)).rejects.toThrow(/not a socket.*left alone/);
    await m.abort();
    expect(facts(qmp)).toEqual(before);
  });
});
