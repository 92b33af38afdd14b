// The example units in systemd/: systemd itself finds nothing wrong with them (systemd-analyze verify), they name
// their sockets as the service asks for them, the control socket is 0600, and the service is Type=exec.
import { execFile } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { FD_NAMES } from '../../src/service/listen-fds.js';
import { assertTools, skipWithout, toolPath } from '../nbd/helpers/tools.js';

const UNITS = resolve(dirname(fileURLToPath(import.meta.url)), '../../systemd');
const unit = (name: string) => readFileSync(join(UNITS, name), 'utf8');
/** Every value of `key=` in a unit file (continuation lines joined). */
const values = (text: string, key: string) =>
  text
    .replace(/\\\n/g, ' ')
    .split('\n')
    .filter((l) => l.startsWith(`${key}=`))
    .map((l) => l.slice(key.length + 1).trim());

describe('systemd units', () => {
  it('each socket unit names its fd as the service asks for it; the control socket is 0600; the service takes both', () => {
    expect(values(unit('postcopy.socket'), 'FileDescriptorName')).toEqual([FD_NAMES.migration]);
    const control = unit('postcopy-control.socket');
    expect(values(control, 'FileDescriptorName')).toEqual([FD_NAMES.control]);
    expect(values(control, 'SocketMode')).toEqual(['0600']);
    expect(values(control, 'ListenStream')).toEqual(['/run/postcopy/control.sock']);
    const service = unit('postcopy.service');
    expect(values(service, 'Type')).toEqual(['exec']);
    expect(values(service, 'Sockets')).toEqual(['postcopy.socket postcopy-control.socket']);
    // V8's JIT needs writable and executable pages.
    expect(values(service, 'MemoryDenyWriteExecute')).toEqual([]);
  });

  it.skipIf(skipWithout(['systemd-analyze']))('systemd-analyze verify finds nothing wrong', async () => {
    assertTools(['systemd-analyze']);
    const dir = mkdtempSync(join(tmpdir(), 'pc-units-'));
    try {
      cpSync(UNITS, dir, { recursive: true });
      // verify checks that ExecStart's binary exists; this machine has no installed postcopy.
      const service = join(dir, 'postcopy.service');
      writeFileSync(service, readFileSync(service, 'utf8').replace('/usr/bin/postcopy', process.execPath));
      const files = ['postcopy.service', 'postcopy.socket', 'postcopy-control.socket'].map((f) => join(dir, f));
      const { stderr } = await promisify(execFile)(toolPath('systemd-analyze')!, ['verify', '--man=no', ...files]);
      expect(stderr).toBe('');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
