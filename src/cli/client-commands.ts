// `postcopy submit|jobs|status|abort|set-speed`: clients of a running `postcopy serve`, over its control socket.
// Each prints the API's answer (one line per job, or the API's JSON with --json) and exits with what it means.
import { resolve } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { UsageError } from '../common/errors.js';
import { isNbdUri } from '../nbd/uri.js';
import { FINISHED_STATES, JOB_ROLES, type JobRole, type JobStatus } from '../service/job-types.js';
import { submitOptionKinds } from '../service/openapi-document.js';
import { callApi, DEFAULT_CONTROL_PATH, isApiErrorBody, type ApiReply } from './control-client.js';
import { EXIT } from './exit-codes.js';
import { formatEta, formatPercent, fraction, humanBytes } from './progress.js';
import { parseSize } from './sizes.js';
import { StatusLine } from './terminal.js';

/** `status --watch` asks again this often: a person's view, light on the service. */
export const WATCH_INTERVAL_MS = 1000;
/** `status --watch` waits this long for a service that stops answering (a restart) before it gives up. */
export const WATCH_UNREACHABLE_LIMIT_MS = 60_000;

/** Generated help lines are wrapped at the width of the other commands' help text. */
const HELP_WIDTH = 104;

/** Options whose value is a file on this host: sent absolute, since the service's working directory is not ours. */
const PATH_OPTIONS = new Set(['image', 'ticket-file', 'qmp', 'serial-log', 'nbd-socket', 'nbd-tls-cert', 'nbd-tls-key', 'nbd-tls-ca', 'fallback']);

const CLIENT_OPTIONS = {
  control: { type: 'string' },
  json: { type: 'boolean' },
} as const;

const CLIENT_OPTIONS_HELP = `  --control PATH          the service's control socket (default ${DEFAULT_CONTROL_PATH})
  --json                  print the API's JSON instead of lines`;

export const CLIENT_EXIT_HELP = `Exit codes:
  0  done (status --watch: the job completed)
  1  refused (no such job, or not in a state that allows it), or no service answered; status --watch: the job failed
  2  bad command line, or a request the service refused as bad (its message says why)
  3  status --watch: the job was aborted (rolled back before cut-over: the guest runs on the source)`;

export const SUBMIT_HELP = `Usage: postcopy submit source|dest [--id ID] [--control PATH] [--json] OPTIONS...

Submit a migration job to the host's service. OPTIONS are those of 'postcopy source' or 'postcopy dest'
(see their --help) except what the service provides itself: --state-dir, --events, --progress,
--progress-interval, --log-level, the --tls-* files, and dest's --listen (the service's migration port).
A relative path is sent made absolute. Prints the job (queued, or running if a slot was free).

  --id ID                 the job's name (a-z, 0-9, '-', at most 63); the service picks one without it
  --max-bandwidth RATE    the job's own bulk-data cap (e.g. 50M = 50 MiB/s), within its fair share
${CLIENT_OPTIONS_HELP}

${CLIENT_EXIT_HELP}`;

export const JOBS_HELP = `Usage: postcopy jobs [--control PATH] [--json]

List the service's jobs, one line each: id, role, phase, data processed/total, rate, ETA.

${CLIENT_OPTIONS_HELP}

${CLIENT_EXIT_HELP}`;

export const STATUS_HELP = `Usage: postcopy status ID [--watch] [--control PATH] [--json]

One job's status: id, role, phase, data processed/total, rate, ETA (and its cap and error, if any).

  --watch                 redraw every ${WATCH_INTERVAL_MS / 1000} s until the job has ended; the exit code says how it ended
                          (with --json: a JSON line whenever the status changed). A service that stops
                          answering (a restart) is waited for up to ${WATCH_UNREACHABLE_LIMIT_MS / 1000} s
${CLIENT_OPTIONS_HELP}

${CLIENT_EXIT_HELP}`;

export const ABORT_HELP = `Usage: postcopy abort ID [--control PATH] [--json]

Abort a job: a queued one is dropped; a running one before cut-over is rolled back (this waits until it
is: the guest stays on the source). After cut-over an abort is refused: the guest runs on the
destination and the source holds blocks it lacks.

${CLIENT_OPTIONS_HELP}

${CLIENT_EXIT_HELP}`;

export const SET_SPEED_HELP = `Usage: postcopy set-speed ID RATE|none [--control PATH] [--json]

Cap a job's bulk data at RATE bytes per second (64K, 50M, 1G: binary units), live; 'none' lifts the
job's own cap. Within the cap the job still gets no more than its fair share of the host's
--max-bandwidth; demand reads (the guest waiting) are never throttled.

${CLIENT_OPTIONS_HELP}

${CLIENT_EXIT_HELP}`;

type Values = Record<string, string | boolean | undefined>;
type Options = NonNullable<ParseArgsConfig['options']>;

interface Parsed {
  values: Values;
  positionals: string[];
  control: string;
  json: boolean;
}

/** The command line with exactly the positionals named; null when --help was asked (and printed). */
function parseClientArgs(argv: string[], options: Options, positionals: string[], help: string): Parsed | null {
  let parsed: { values: Values; positionals: string[] };
  try {
    parsed = parseArgs({ args: argv, options: { ...CLIENT_OPTIONS, ...options, help: { type: 'boolean', short: 'h' } }, strict: true, allowPositionals: true }) as typeof parsed;
  } catch (e) {
    throw new UsageError('PC_ERR_USAGE', (e as Error).message);
  }
  if (parsed.values.help) {
    process.stdout.write(help + '\n');
    return null;
  }
  if (parsed.positionals.length !== positionals.length) {
    const given = parsed.positionals.length > positionals.length ? `unexpected '${parsed.positionals[positionals.length]}'` : `${positionals[parsed.positionals.length]} is missing`;
    throw new UsageError('PC_ERR_USAGE', `${given} (usage: ${help.split('\n')[0]!.replace(/^Usage: /, '')})`);
  }
  const control = typeof parsed.values.control === 'string' ? parsed.values.control : DEFAULT_CONTROL_PATH;
  return { ...parsed, control, json: parsed.values.json === true };
}

const jobPath = (id: string): string => `/v1/jobs/${encodeURIComponent(id)}`;

/**
 * A reply that is not the success asked for: the API's message (and its JSON with --json), or why no service
 * answered; the exit code for it. Null when the reply is the success.
 */
function refusal(cmd: string, reply: ApiReply, ok: number, json: boolean): number | null {
  if (reply.kind === 'reply' && reply.status === ok) return null;
  if (reply.kind === 'unreachable') {
    process.stderr.write(`postcopy ${cmd}: ${reply.line}\n`);
    return EXIT.INTERNAL;
  }
  if (json && reply.body !== undefined) process.stdout.write(JSON.stringify(reply.body) + '\n');
  const why = isApiErrorBody(reply.body) ? `${reply.body.error.message} [${reply.body.error.code}]` : `the service answered ${reply.status}`;
  process.stderr.write(`postcopy ${cmd}: ${why}\n`);
  return reply.status === 400 ? EXIT.USAGE : EXIT.INTERNAL;
}

/** Print a success: the API's JSON, or lines made from it. */
function print(json: boolean, body: unknown, lines: () => string[]): void {
  process.stdout.write(json ? JSON.stringify(body) + '\n' : lines().map((l) => l + '\n').join(''));
}

export async function runSubmit(argv: string[]): Promise<number> {
  const [role, ...rest] = argv;
  if (role === undefined || role === '--help' || role === '-h') {
    process.stdout.write(SUBMIT_HELP + '\n');
    return role === undefined ? EXIT.USAGE : EXIT.OK;
  }
  if (!JOB_ROLES.includes(role as JobRole)) throw new UsageError('PC_ERR_USAGE', `submit takes 'source' or 'dest' first, got '${role}'`);
  const kinds = submitOptionKinds(role as JobRole);
  const jobOptions = Object.fromEntries(Object.entries(kinds).map(([name, type]) => [name, { type }]));
  const a = parseClientArgs(rest, { ...jobOptions, id: { type: 'string' } }, [], `${SUBMIT_HELP}\n\n${roleOptionsHelp(role, kinds)}`);
  if (!a) return EXIT.OK;
  const options: Record<string, string | boolean> = {};
  for (const name of Object.keys(kinds)) {
    const v = a.values[name];
    if (v === undefined) continue;
    options[name] = typeof v === 'string' && PATH_OPTIONS.has(name) && !isNbdUri(v) ? resolve(v) : v;
  }
  const body = { role, ...(typeof a.values.id === 'string' ? { id: a.values.id } : {}), options };
  const reply = await callApi(a.control, 'POST', '/v1/jobs', body);
  const refused = refusal('submit', reply, 201, a.json);
  if (refused !== null) return refused;
  const job = (reply as { body: JobStatus }).body;
  print(a.json, job, () => [`submitted: ${jobColumns(job).join('  ')}`]);
  return EXIT.OK;
}

/** The options a role's job takes, from the document, wrapped to the help's width. */
function roleOptionsHelp(role: string, kinds: Record<string, 'string' | 'boolean'>): string {
  const items = Object.entries(kinds).map(([name, type], i, all) => `--${name}${type === 'boolean' ? '' : ' V'}${i < all.length - 1 ? ',' : ''}`);
  const lines: string[] = [];
  let line = '';
  for (const item of items) {
    if (line !== '' && line.length + 1 + item.length > HELP_WIDTH) {
      lines.push(line);
      line = '';
    }
    line = line === '' ? `  ${item}` : `${line} ${item}`;
  }
  return [`A ${role} job takes:`, ...lines, line].join('\n');
}

export async function runJobs(argv: string[]): Promise<number> {
  const a = parseClientArgs(argv, {}, [], JOBS_HELP);
  if (!a) return EXIT.OK;
  const reply = await callApi(a.control, 'GET', '/v1/jobs');
  const refused = refusal('jobs', reply, 200, a.json);
  if (refused !== null) return refused;
  const list = (reply as { body: { jobs: JobStatus[] } }).body;
  print(a.json, list, () => (list.jobs.length === 0 ? ['no jobs'] : table([JOB_HEADER, ...list.jobs.map(jobColumns)])));
  return EXIT.OK;
}

export async function runStatus(argv: string[]): Promise<number> {
  const a = parseClientArgs(argv, { watch: { type: 'boolean' } }, ['ID'], STATUS_HELP);
  if (!a) return EXIT.OK;
  const [id] = a.positionals as [string];
  if (a.values.watch === true) return watch(id, a);
  const reply = await callApi(a.control, 'GET', jobPath(id));
  const refused = refusal('status', reply, 200, a.json);
  if (refused !== null) return refused;
  const job = (reply as { body: JobStatus }).body;
  print(a.json, job, () => [jobColumns(job).join('  ')]);
  return EXIT.OK;
}

/** Redraw the job's line until it has ended; exit with how it ended. */
async function watch(id: string, a: Parsed): Promise<number> {
  const onTerminal = process.stdout.isTTY === true && !a.json;
  const status = onTerminal ? new StatusLine((t) => process.stdout.write(t), () => process.stdout.columns) : null;
  let last = '';
  const show = (text: string): void => {
    if (status) status.show(text);
    else if (text !== last) process.stdout.write(text + '\n');
    last = text;
  };
  const say = (line: string): void => (status ? status.above(line) : void process.stderr.write(line + '\n'));
  let unreachableSince: number | null = null;
  for (;; await new Promise((r) => setTimeout(r, WATCH_INTERVAL_MS))) {
    const reply = await callApi(a.control, 'GET', jobPath(id));
    // A service that answered before and stops (a restart) is waited for; one that never answered is an error.
    if (reply.kind === 'unreachable' && last !== '') {
      if (unreachableSince === null) say(`postcopy status: ${reply.line}; waiting up to ${WATCH_UNREACHABLE_LIMIT_MS / 1000} s`);
      unreachableSince ??= Date.now();
      if (Date.now() - unreachableSince < WATCH_UNREACHABLE_LIMIT_MS) continue;
    }
    unreachableSince = null;
    // The status line is ended before a refusal's line, which would otherwise be written into it.
    if (reply.kind !== 'reply' || reply.status !== 200) status?.end();
    const refused = refusal('status', reply, 200, a.json);
    if (refused !== null) return refused;
    const job = (reply as { body: JobStatus }).body;
    show(a.json ? JSON.stringify(job) : jobColumns(job).join('  '));
    if (FINISHED_STATES.includes(job.state)) {
      status?.end();
      return job.state === 'completed' ? EXIT.OK : job.state === 'aborted' ? EXIT.ROLLED_BACK : EXIT.INTERNAL;
    }
  }
}

export async function runAbort(argv: string[]): Promise<number> {
  const a = parseClientArgs(argv, {}, ['ID'], ABORT_HELP);
  if (!a) return EXIT.OK;
  const [id] = a.positionals as [string];
  // No time limit: a rollback is answered once it is done.
  const reply = await callApi(a.control, 'POST', `${jobPath(id)}/abort`, undefined, null);
  const refused = refusal('abort', reply, 200, a.json);
  if (refused !== null) return refused;
  const job = (reply as { body: JobStatus }).body;
  print(a.json, job, () => [jobColumns(job).join('  ')]);
  return EXIT.OK;
}

export async function runSetSpeed(argv: string[]): Promise<number> {
  const a = parseClientArgs(argv, {}, ['ID', 'RATE'], SET_SPEED_HELP);
  if (!a) return EXIT.OK;
  const [id, rate] = a.positionals as [string, string];
  const bytesPerSecond = rate.toLowerCase() === 'none' ? null : parseSize(rate, 'RATE');
  const reply = await callApi(a.control, 'POST', `${jobPath(id)}/speed`, { bytesPerSecond });
  const refused = refusal('set-speed', reply, 200, a.json);
  if (refused !== null) return refused;
  const job = (reply as { body: JobStatus }).body;
  print(a.json, job, () => [`${job.id}: own cap ${perSecond(job.speedLimitBytesPerSecond)}, may use ${perSecond(job.effectiveLimitBytesPerSecond)} now`]);
  return EXIT.OK;
}

const perSecond = (n: number | null): string => (n === null ? 'none' : `${humanBytes(n)}/s`);

const JOB_HEADER = ['ID', 'ROLE', 'PHASE', 'DATA', 'RATE', 'ETA'];

/** A job as its columns: id, role, phase, processed/total (percent), rate, ETA, then its cap and error if any. */
export function jobColumns(j: JobStatus): string[] {
  const data = j.dataTotalBytes > 0 ? `${humanBytes(j.dataProcessedBytes)}/${humanBytes(j.dataTotalBytes)} ${formatPercent(fraction(j.dataProcessedBytes, j.dataTotalBytes))}` : '--';
  const rate = j.rateBytesPerSecond === null ? '--' : `${humanBytes(j.rateBytesPerSecond)}/s`;
  const eta = FINISHED_STATES.includes(j.state) ? '--' : formatEta(j.etaSeconds);
  const extra = [
    ...(j.speedLimitBytesPerSecond !== null ? [`cap ${perSecond(j.speedLimitBytesPerSecond)}`] : []),
    ...(j.error ? [`error: ${j.error.message} [${j.error.code}]`] : []),
  ];
  return [j.id, j.role, j.phase, data, rate, eta, ...extra];
}

/** Rows as lines, each column as wide as its widest cell (the last cell of a row is not padded). */
function table(rows: string[][]): string[] {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return rows.map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  '));
}
