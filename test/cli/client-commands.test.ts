// The CLI clients against a real control API (on a temp socket, with the in-memory JobService): what each sends,
// prints (lines, or the API's JSON with --json) and exits with; --watch until the job ends; no service at all.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { UsageError } from '../../src/common/errors.js';
import { silentLogger } from '../../src/common/logger.js';
import { ABORT_HELP, JOBS_HELP, runAbort, runJobs, runSetSpeed, runStatus, runSubmit, SET_SPEED_HELP, STATUS_HELP, SUBMIT_HELP } from '../../src/cli/client-commands.js';
import { startControlApi, type ControlApi } from '../../src/service/control-api.js';
import { FakeJobService, jobStatus } from '../helpers/fake-job-service.js';
import { waitUntil } from '../helpers/wait.js';

const dir = mkdtempSync(join(tmpdir(), 'client-commands-'));
const sock = join(dir, 'control.sock');
let service: FakeJobService;
let api: ControlApi;
let out: string;
let err: string;

beforeEach(async () => {
  service = new FakeJobService();
  api = await startControlApi({ path: sock, service, log: silentLogger() });
  out = '';
  err = '';
  vi.spyOn(process.stdout, 'write').mockImplementation((c: string | Uint8Array) => ((out += String(c)), true));
  vi.spyOn(process.stderr, 'write').mockImplementation((c: string | Uint8Array) => ((err += String(c)), true));
});
afterEach(async () => {
  vi.restoreAllMocks();
  await api.close();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const C = ['--control', sock];

describe('postcopy submit', () => {
  it('sends the flags as options (paths made absolute, flags true, URIs as they are) and prints the job', async () => {
    const code = await runSubmit(['source', ...C, '--id', 'mig-1', '--connect', 'd.example:7000', '--image', 'disks/a.img', '--ticket-file', '/etc/t', '--guest', 'qemu', '--qmp', '/run/q.sock', '--postcopy-ram', '--max-bandwidth', '50M']);
    expect(code, err).toBe(0);
    expect(service.jobs.get('mig-1')!.options).toEqual({
      connect: 'd.example:7000',
      image: resolve('disks/a.img'),
      'ticket-file': '/etc/t',
      guest: 'qemu',
      qmp: '/run/q.sock',
      'postcopy-ram': true,
      'max-bandwidth': '50M',
    });
    expect(out).toMatch(/^submitted: mig-1 {2}source {2}queued {2}0 B\/8\.0 GiB 0\.0% {2}-- {2}--\n$/);
    await runSubmit(['dest', ...C, '--image', 'nbd://h/x', '--ticket-file', 't', '--force']);
    expect(service.jobs.get('job-1')!.options).toEqual({ image: 'nbd://h/x', 'ticket-file': resolve('t'), force: true });
  });

  it('--json prints the API\'s status as it came', async () => {
    expect(await runSubmit(['dest', ...C, '--json', '--id', 'd', '--image', '/a', '--ticket-file', '/t'])).toBe(0);
    expect(JSON.parse(out)).toEqual(service.jobs.get('d'));
  });

  it('an option the service provides, or the other role\'s, is a usage error here (never sent)', async () => {
    await expect(runSubmit(['dest', ...C, '--image', '/a', '--ticket-file', '/t', '--listen', '0:1'])).rejects.toThrow(UsageError);
    await expect(runSubmit(['source', ...C, '--image', '/a', '--events', '/e'])).rejects.toThrow(/Unknown option '--events'/);
    await expect(runSubmit(['dest', ...C, '--connect', 'x:1'])).rejects.toThrow(/Unknown option '--connect'/);
    await expect(runSubmit(['both', ...C])).rejects.toThrow(/'source' or 'dest'/);
    expect(service.calls).toEqual([]);
  });

  it('refused as bad by the API: its message, exit 2; refused otherwise (id taken): exit 1, and --json prints the error', async () => {
    expect(await runSubmit(['source', ...C, '--image', '/a', '--ticket-file', '/t'])).toBe(2);
    expect(err).toBe("postcopy submit: options: 'connect' is required [invalid_request]\n");
    err = '';
    service.jobs.set('taken', jobStatus('taken', 'dest'));
    expect(await runSubmit(['dest', ...C, '--json', '--id', 'taken', '--image', '/a', '--ticket-file', '/t'])).toBe(1);
    expect(err).toBe("postcopy submit: a job 'taken' exists already [id_taken]\n");
    expect(JSON.parse(out)).toEqual({ error: { code: 'id_taken', message: "a job 'taken' exists already" } });
  });
});

describe('postcopy jobs, status, abort, set-speed', () => {
  beforeEach(() => {
    service.jobs.set('a1', jobStatus('a1', 'source', { state: 'running', phase: 'streaming', dataProcessedBytes: 2 * 2 ** 30, rateBytesPerSecond: 80 * 2 ** 20, etaSeconds: 77, speedLimitBytesPerSecond: 100 * 2 ** 20 }));
    service.jobs.set('long-name-2', jobStatus('long-name-2', 'dest', { state: 'failed', phase: 'failed', error: { code: 'PC_ERR_AUTH', message: 'ticket authentication failed' } }));
  });

  it('jobs: a header and one aligned line per job; --json the API\'s list; "no jobs" when there are none', async () => {
    expect(await runJobs(C)).toBe(0);
    expect(out.split('\n')).toEqual([
      'ID           ROLE    PHASE      DATA                   RATE        ETA',
      'a1           source  streaming  2.0 GiB/8.0 GiB 25.0%  80.0 MiB/s  1m17s  cap 100.0 MiB/s',
      'long-name-2  dest    failed     0 B/8.0 GiB 0.0%       --          --     error: ticket authentication failed [PC_ERR_AUTH]',
      '',
    ]);
    out = '';
    expect(await runJobs([...C, '--json'])).toBe(0);
    expect(JSON.parse(out)).toEqual({ jobs: [...service.jobs.values()] });
    service.jobs.clear();
    out = '';
    await runJobs(C);
    expect(out).toBe('no jobs\n');
  });

  it('status: the line; unknown job: the message and exit 1; no ID: a usage error', async () => {
    expect(await runStatus(['a1', ...C])).toBe(0);
    expect(out).toBe('a1  source  streaming  2.0 GiB/8.0 GiB 25.0%  80.0 MiB/s  1m17s  cap 100.0 MiB/s\n');
    expect(await runStatus(['nope', ...C])).toBe(1);
    expect(err).toBe("postcopy status: no job 'nope' [not_found]\n");
    await expect(runStatus(C)).rejects.toThrow(/ID is missing/);
    await expect(runStatus(['a', 'b', ...C])).rejects.toThrow(/unexpected 'b'/);
  });

  it('abort: the rolled-back job; past cut-over: the reason and exit 1', async () => {
    expect(await runAbort(['a1', ...C])).toBe(0);
    expect(out).toMatch(/^a1 {2}source {2}aborted /);
    service.jobs.set('b', jobStatus('b', 'dest', { state: 'running', pastCutover: true }));
    expect(await runAbort(['b', ...C])).toBe(1);
    expect(err).toMatch(/^postcopy abort: job 'b' is past cut-over: the guest runs on the destination .*\[past_cutover\]\n$/);
  });

  it('set-speed: RATE in binary units, none lifts the cap, a bad RATE is a usage error', async () => {
    expect(await runSetSpeed(['a1', '50M', ...C])).toBe(0);
    expect(service.calls).toContain(`setSpeed a1 ${50 * 2 ** 20}`);
    expect(out).toBe('a1: own cap 50.0 MiB/s, may use 50.0 MiB/s now\n');
    out = '';
    expect(await runSetSpeed(['a1', 'none', ...C, '--json'])).toBe(0);
    expect(JSON.parse(out).speedLimitBytesPerSecond).toBeNull();
    await expect(runSetSpeed(['a1', 'fast', ...C])).rejects.toThrow(/RATE: 'fast' is not a size/);
    expect(await runSetSpeed(['nope', '1M', ...C])).toBe(1);
  });

  it.each([
    ['completed', 0],
    ['aborted', 3],
    ['failed', 1],
  ] as const)('status --watch redraws until the job is %s, then exits %i', async (end, exitCode) => {
    const watching = runStatus(['a1', '--watch', ...C]);
    await waitUntil(() => service.calls.filter((c) => c === 'get a1').length >= 1, 'the first poll');
    service.update('a1', { dataProcessedBytes: 4 * 2 ** 30 });
    await waitUntil(() => service.calls.filter((c) => c === 'get a1').length >= 2, 'the second poll');
    service.update('a1', { state: end, phase: end, dataProcessedBytes: 8 * 2 ** 30 });
    expect(await watching).toBe(exitCode);
    const lines = out.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^a1 {2}source {2}streaming {2}2\.0 GiB\/8\.0 GiB 25\.0%/);
    expect(lines).toContainEqual(expect.stringMatching(/^a1 {2}source {2}streaming {2}4\.0 GiB\/8\.0 GiB 50\.0%/));
    expect(lines.at(-1)).toMatch(new RegExp(`^a1  source  ${end}  8\\.0 GiB/8\\.0 GiB 100\\.0%`));
  });

  it('status --watch --json: a JSON line per change, the last one the finished job', async () => {
    service.update('a1', { state: 'completed', phase: 'completed' });
    expect(await runStatus(['a1', '--watch', '--json', ...C])).toBe(0);
    expect(out.trimEnd().split('\n').map((l) => JSON.parse(l).state)).toEqual(['completed']);
  });
});

describe('no service', () => {
  it('no socket: one clear line naming it, exit 1', async () => {
    const missing = join(dir, 'none.sock');
    expect(await runJobs(['--control', missing])).toBe(1);
    expect(err).toBe(`postcopy jobs: no control socket at ${missing}: is 'postcopy serve' running? (--control PATH names another socket)\n`);
  });

  it('a socket nobody answers on (its service killed): one clear line, exit 1', async () => {
    const stale = join(dir, 'stale.sock');
    const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(stale)}, () => process.kill(process.pid, 'SIGKILL'))`]);
    await new Promise((r) => child.once('exit', r));
    expect(await runStatus(['a1', '--control', stale])).toBe(1);
    expect(err).toBe(`postcopy status: nothing answers on ${stale} (a socket left by a service that is gone?): is 'postcopy serve' running?\n`);
  });

  it('status --watch waits through a restart of the service and sees the job end', async () => {
    service.jobs.set('a1', jobStatus('a1', 'source', { state: 'running', phase: 'streaming' }));
    const watching = runStatus(['a1', '--watch', ...C]);
    await waitUntil(() => service.calls.includes('get a1'), 'the first poll');
    await api.close();
    await waitUntil(() => err.includes('waiting up to'), 'the watcher to notice');
    service.update('a1', { state: 'completed', phase: 'completed' });
    api = await startControlApi({ path: sock, service, log: silentLogger() });
    expect(await watching).toBe(0);
    expect(err).toBe(`postcopy status: no control socket at ${sock}: is 'postcopy serve' running? (--control PATH names another socket); waiting up to 60 s\n`);
    expect(out.trimEnd().split('\n').at(-1)).toMatch(/^a1 {2}source {2}completed/);
  });
});

describe('help', () => {
  it('submit ROLE --help adds the options that role\'s job takes, from the document', async () => {
    expect(await runSubmit(['source', '--help'])).toBe(0);
    expect(out.startsWith(SUBMIT_HELP)).toBe(true);
    const list = out.slice(out.indexOf('A source job takes:'));
    expect(list).toMatch(/--connect V, --image V, --ticket-file V/);
    expect(list).toMatch(/--postcopy-ram(,|\n)/);
    expect(list).not.toMatch(/--events|--state-dir|--tls-cert|--force/);
    expect(Math.max(...list.split('\n').map((l) => l.length))).toBeLessThanOrEqual(104);
  });

  it.each([
    ['submit', () => runSubmit(['--help']), SUBMIT_HELP],
    ['jobs', () => runJobs(['--help']), JOBS_HELP],
    ['status', () => runStatus(['--help']), STATUS_HELP],
    ['abort', () => runAbort(['-h']), ABORT_HELP],
    ['set-speed', () => runSetSpeed(['--help']), SET_SPEED_HELP],
  ] as const)('%s --help prints its usage and exits 0', async (_name, run, help) => {
    expect(await run()).toBe(0);
    expect(out).toBe(help + '\n');
    expect(help).toMatch(/--control PATH .*\/run\/postcopy\/control\.sock/);
    expect(help).toMatch(/--json/);
  });
});
