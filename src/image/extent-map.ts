// The holes of a regular image file without reading them: Node has no SEEK_DATA/SEEK_HOLE or FIEMAP, and the npm
// packages that bind them build native code at install, so the field tool `qemu-img map` walks them for us. Its
// output is streamed through a strict parser into one bit per grain; any failure is a reason, never a wrong map.
import { spawn } from 'node:child_process';
import { isPostcopyError } from '../common/errors.js';
import { MAP_STDERR_KEEP_CHARS, MAP_TIMEOUT_MS } from './constants.js';
import { QemuMapParser } from './qemu-map-parser.js';
import { ZeroGrains } from './zero-grains.js';

export type ZeroMapResult = { ok: true; map: ZeroGrains; extents: number; dataBytes: number } | { ok: false; reason: string };

export interface ZeroMapRequest {
  /** The tool's command (qemu-img, or a stand-in in tests). */
  tool: string;
  /** A path to the very file the caller has open (Linux: /proc/<pid>/fd/<fd>, so a renamed path cannot mislead). */
  path: string;
  size: number;
  grain: number;
  timeoutMs?: number;
}

/** Map the file's zero grains with `qemu-img map -U -f raw --output=json`; the result says why when it cannot. */
export function takeZeroMap(req: ZeroMapRequest): Promise<ZeroMapResult> {
  const map = new ZeroGrains(req.size, req.grain);
  const parser = new QemuMapParser(req.size, (e) => {
    if (!e.zero) map.addData(e.offset, e.length);
  });
  return new Promise((resolve) => {
    let settled = false;
    let stderr = '';
    // -U (force-share): a running QEMU's image lock must not refuse a read-only map; -f raw: never probe a format.
    const child = spawn(req.tool, ['map', '-U', '-f', 'raw', '--output=json', req.path], { stdio: ['ignore', 'pipe', 'pipe'] });
    const finish = (r: ZeroMapResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      resolve(r);
    };
    const timer = setTimeout(() => finish({ ok: false, reason: `${req.tool} map took longer than ${req.timeoutMs ?? MAP_TIMEOUT_MS} ms` }), req.timeoutMs ?? MAP_TIMEOUT_MS);
    child.on('error', (e: NodeJS.ErrnoException) => finish({ ok: false, reason: e.code === 'ENOENT' ? `${req.tool} is not installed` : `${req.tool} could not start: ${e.message}` }));
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (text: string) => {
      if (settled) return;
      try {
        parser.push(text);
      } catch (e) {
        finish({ ok: false, reason: why(e) });
      }
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (text: string) => {
      stderr = (stderr + text).slice(-MAP_STDERR_KEEP_CHARS);
    });
    // 'close': the exit code and every byte of stdout are in.
    child.on('close', (code, signal) => {
      if (settled) return;
      if (code !== 0) {
        const last = stderr.trim().split('\n').pop() ?? '';
        return finish({ ok: false, reason: `${req.tool} map failed (${signal ?? `exit ${code}`})${last ? `: ${last}` : ''}` });
      }
      try {
        parser.end();
        finish({ ok: true, map, extents: parser.extents, dataBytes: parser.dataBytes });
      } catch (e) {
        finish({ ok: false, reason: why(e) });
      }
    });
  });
}

function why(e: unknown): string {
  return isPostcopyError(e) ? (e.detail ?? e.message) : String(e);
}
