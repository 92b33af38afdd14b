// `--guest qemu` for the two commands: builds the source and destination QEMU migrators from parsed options.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UsageError } from '../common/errors.js';
import type { EventSink } from '../common/events.js';
import type { Logger } from '../common/logger.js';
import { MAX_SOCKET_PATH, SOCKET_NAME_BUDGET } from './constants.js';
import { QemuDestMigrator } from './qemu-dest.js';
import { QemuSourceMigrator } from './qemu-source.js';
import { checkTemplate } from './qemu-process.js';

/**
 * The state dir, or a private (0700) temp dir when the state dir's path is too long for a socket path (sun_path):
 * nobody else may reach QEMU's stream socket before QEMU does.
 */
function socketDir(preferred: string | undefined, longestName: number): { dir: string; temporary: boolean } {
  if (preferred && preferred.length + 1 + longestName <= MAX_SOCKET_PATH) return { dir: preferred, temporary: false };
  return { dir: mkdtempSync(join(tmpdir(), 'postcopy-qemu-')), temporary: true };
}

export async function openSourceQemu(o: {
  qmp: string;
  postcopyRam: boolean;
  stateDir: string | undefined;
  maxDowntimeMs: number | undefined;
  log: Logger;
  events: EventSink;
}): Promise<QemuSourceMigrator> {
  const { dir, temporary } = socketDir(o.stateDir, SOCKET_NAME_BUDGET);
  const opened = QemuSourceMigrator.open({
    qmpPath: o.qmp,
    postcopyRam: o.postcopyRam,
    socketDir: dir,
    removeSocketDir: temporary,
    ...(o.maxDowntimeMs !== undefined ? { downtimeLimitMs: o.maxDowntimeMs } : {}),
    log: o.log,
    events: o.events,
  });
  if (temporary) opened.catch(() => rmSync(dir, { recursive: true, force: true }));
  return opened;
}

export function destQemu(o: {
  qemuCmd: string | undefined;
  qmp: string | undefined;
  serialLog: string | undefined;
  stateDir: string;
  hasExport: boolean;
  log: Logger;
  events: EventSink;
}): QemuDestMigrator {
  if (!o.qemuCmd && !o.qmp) throw new UsageError('PC_ERR_USAGE', '--guest qemu needs --qemu-cmd TEMPLATE (start QEMU here) or --qmp PATH (attach to one started with -incoming defer)');
  if (o.qemuCmd && !o.hasExport) throw new UsageError('PC_ERR_USAGE', '--qemu-cmd needs an NBD export for the guest disk: --nbd-socket PATH or --nbd-listen HOST:PORT');
  if (o.qemuCmd) checkTemplate(o.qemuCmd);
  const runDir = socketDir(o.stateDir, SOCKET_NAME_BUDGET).dir;
  return new QemuDestMigrator({
    ...(o.qemuCmd ? { command: o.qemuCmd } : {}),
    qmpPath: o.qmp ?? join(runDir, 'qemu-qmp.sock'),
    serialPath: o.serialLog ?? join(o.stateDir, 'qemu-serial.log'),
    runDir,
    log: o.log,
    events: o.events,
  });
}
