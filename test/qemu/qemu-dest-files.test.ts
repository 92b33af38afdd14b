// The destination QEMU adapter's files on rollback: it never touches the operator's (review item 2 of issue 10),
// and it keeps QEMU's logs, its own renamed aside (issue 13: the console log that said NO DISK was deleted).
// A stand-in for QEMU that exits at once makes Prepare fail, as a bad --qemu-cmd would; the files at
// --serial-log and --qmp are then checked after the rollback's abort().
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
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

function setup(): { dir: string; migrator: (o?: { serialPath?: string; qmpPath?: string; command?: string }) => QemuDestMigrator } {
  const dir = mkdtempSync(join(tmpdir(), 'postcopy-qemu-dest-files-'));
  dirs.push(dir);
  return {
    dir,
    migrator: (o = {}) =>
      new QemuDestMigrator({
        command: o.command ?? `sh -c 'exit 1' {export} {serial}`,
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

  it("a QEMU that exits at start quietly (it booted without its disk): the error quotes the guest's console; both logs are kept aside, private", async () => {
    const { dir, migrator } = setup();
    const serial = join(dir, 'serial.log');
    // As QEMU does when the template lost its -drive: the guest says so on the console, QEMU exits 0 with no stderr.
    const m = migrator({ serialPath: serial, command: `sh -c 'echo "INIT up=1.2" >>"$0"; echo "NO DISK" >>"$0"; exit 0' {serial} {export}` });
    await expect(m.prepare(guest, exportUris)).rejects.toThrow(/exited at start \(exit code 0\): guest console: INIT up=1\.2 \/ NO DISK/);
    expect(lstatSync(serial).mode & 0o777).toBe(0o600);
    await m.abort();
    expect(existsSync(serial)).toBe(false);
    const kept = [...m.keptLogs];
    expect(kept).toHaveLength(2);
    expect(kept[0]).toMatch(/\/qemu-dest\.rolled-back-\d{8}T\d{6}Z\.log$/);
    expect(kept[1]).toMatch(/\/serial\.rolled-back-\d{8}T\d{6}Z\.log$/);
    expect(readFileSync(kept[1]!, 'utf8')).toBe('INIT up=1.2\nNO DISK\n');
    for (const k of kept) expect(statSync(k).mode & 0o777).toBe(0o600);
    expect(readdirSync(dir).sort()).toEqual(kept.map((k) => k.slice(dir.length + 1)).sort());
  });

  it("an operator's --serial-log is named as kept where it is, not moved", async () => {
    const { dir, migrator } = setup();
    const serial = join(dir, 'console.log');
    writeFileSync(serial, 'history\n', { mode: 0o640 });
    const m = migrator({ serialPath: serial, command: `sh -c 'echo boom >&2; exit 1' {export}` });
    await expect(m.prepare(guest, exportUris)).rejects.toThrow(/exit code 1\): boom/);
    await m.abort();
    expect(m.keptLogs).toEqual([expect.stringMatching(/qemu-dest\.rolled-back-.*\.log$/), serial]);
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
