// Bulk tier: our migration of an image into D's file beside the baselines of the same run, in paired rounds
// (every contender once per round, order rotated, output removed and `sync`ed before each run):
// a plain Node socket pipe (TCP and Unix) into a file with positional sync writes, nbdcopy from qemu-nbd and
// from nbdkit into a file (and with --flush, since D makes its image durable), and cp.
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BenchImage } from '../lib/images.js';
import { Server, freshOutput, start, timed, waitConnectable, freePort } from '../lib/proc.js';
import { spread, type Spread } from '../lib/stats.js';
import { cleanRun, cpuSec, migrate, type MigrationRun } from './migrate.js';
import { ServicePair } from './service.js';
import { kibToMiB, sec } from '../lib/units.js';

const SENDER = fileURLToPath(new URL('../baselines/pipe-sender.js', import.meta.url));
const RECEIVER = fileURLToPath(new URL('../baselines/pipe-receiver.js', import.meta.url));

export interface ContenderResult {
  id: string;
  label: string;
  /** Whole-process wall time, seconds. */
  wallSec: Spread;
  /** Only for ours: D's cut-over → complete. */
  transferSec?: Spread;
  /** CPU seconds of client + server (ours: S + D). */
  cpuSec: Spread;
  /** The two sides apart: ours S (server side) and D (client side); a baseline's server and client. */
  sideCpuSec?: { server: Spread; client: Spread };
  /** Ours only: peak RSS per agent, MiB. */
  rssMiB?: { source: Spread; dest: Spread };
  /** Paired ratio ours / this, per round (whole-process times). */
  oursOverThis?: Spread;
  runs: number[];
  /** CPU seconds (client + server) per round, aligned with `runs` (NaN where the run failed). */
  cpuRuns?: number[];
  failures: number;
}

export interface BulkResult {
  image: Omit<BenchImage, 'dataRuns'>;
  rounds: number;
  contenders: ContenderResult[];
  /** Ours: bytes moved (bulk + demand) and zero bytes skipped, from D's summary of the last run. */
  moved: { bulkBytes: number; demandBytes: number; zeroSkipped: number };
  /** Ours: bytes moved in bulk / (cut-over → complete). */
  bulkMiBps: Spread;
  /** The same migration as jobs between two running services ÷ nbdcopy from a running nbdkit, per round. */
  serviceOverNbdkit: Spread;
}

interface Contender {
  id: string;
  label: string;
  run: (round: number) => Promise<RunRecord>;
}

interface RunRecord {
  wallMs: number;
  cpuSec: number;
  /** CPU of each side when there are two: ours S and D; a baseline's server and client. */
  serverCpuSec?: number;
  clientCpuSec?: number;
  ok: boolean;
  transferMs?: number;
  mig?: MigrationRun;
}

export async function runBulk(
  image: BenchImage,
  o: { workDir: string; rounds: number; tag: string; extra?: boolean },
  log: (line: string) => void,
): Promise<BulkResult> {
  const dir = o.workDir;
  const out = join(dir, `${o.tag}.out.img`);
  const [qPort, kPort, pPort] = await Promise.all([freePort(), freePort(), freePort()]);
  const pSock = join(dir, `${o.tag}.pipe.sock`);
  const servers: Server[] = [];
  const qemu = new Server('qemu-nbd', start('qemu-nbd', ['-f', 'raw', '-x', 'disk', '-b', '127.0.0.1', '-p', String(qPort), '--persistent', '-e', '8', '-r', image.path], { log: join(dir, 'qemu-nbd.log') }));
  const nbdkit = new Server('nbdkit', start('nbdkit', ['-f', '-r', '-i', '127.0.0.1', '-p', String(kPort), '-e', 'disk', 'file', image.path], { log: join(dir, 'nbdkit.log') }));
  const pipeTcp = new Server('pipe-sender-tcp', start(process.execPath, [SENDER, image.path, String(pPort)], { log: join(dir, 'pipe-sender.log') }));
  const pipeUnix = new Server('pipe-sender-unix', start(process.execPath, [SENDER, image.path, pSock], { log: join(dir, 'pipe-sender.log') }));
  servers.push(qemu, nbdkit, pipeTcp, pipeUnix);
  let services: ServicePair | null = null;
  try {
    // Started once, before the rounds, like the NBD servers: a run pays no process start-up.
    services = await ServicePair.start(join(dir, `${o.tag}.services`));
    const pair = services;
    await Promise.all([waitConnectable({ port: qPort }), waitConnectable({ port: kPort }), waitConnectable({ port: pPort }), waitConnectable({ path: pSock })]);
    const withServer = async (server: Server | null, cmd: string, args: string[]): Promise<RunRecord> => {
      freshOutput(out);
      const s0 = server ? server.cpuSec() : 0;
      const r = await timed(cmd, args, { log: join(dir, `${o.tag}.baseline.log`) });
      const s1 = server ? server.cpuSec() : 0;
      const sides = server ? { serverCpuSec: s1 - s0, clientCpuSec: r.cpuSec } : {};
      return { wallMs: r.wallMs, cpuSec: r.cpuSec + (s1 - s0), ok: r.code === 0, ...sides };
    };
    const contenders: Contender[] = [
      {
        id: 'postcopy',
        label: 'postcopy S→D (TCP loopback)',
        run: async () => {
          const m = await migrate({ workDir: dir, image: image.path, label: o.tag });
          cleanRun(dir, o.tag);
          return {
            wallMs: m.wholeMs,
            cpuSec: cpuSec(m.dest) + cpuSec(m.source),
            serverCpuSec: cpuSec(m.source),
            clientCpuSec: cpuSec(m.dest),
            ok: m.destCode === 0 && m.sourceCode === 0,
            transferMs: m.transferMs,
            mig: m,
          };
        },
      },
      {
        id: 'postcopy-service',
        label: 'postcopy jobs between running services',
        run: async () => {
          freshOutput(out);
          const r = await pair.migrate(image.path, out);
          if (r.error) log(`  postcopy-service: ${r.error}`);
          return { wallMs: r.wallMs, cpuSec: r.sourceCpuSec + r.destCpuSec, serverCpuSec: r.sourceCpuSec, clientCpuSec: r.destCpuSec, ok: r.ok };
        },
      },
      { id: 'pipe-tcp', label: 'Node socket pipe, TCP (writeSync)', run: () => withServer(pipeTcp, process.execPath, [RECEIVER, String(pPort), out]) },
      { id: 'pipe-unix', label: 'Node socket pipe, Unix (writeSync)', run: () => withServer(pipeUnix, process.execPath, [RECEIVER, pSock, out]) },
      { id: 'nbdcopy-qemu', label: 'nbdcopy from qemu-nbd', run: () => withServer(qemu, 'nbdcopy', [`nbd://127.0.0.1:${qPort}/disk`, out]) },
      { id: 'nbdcopy-nbdkit', label: 'nbdcopy from nbdkit', run: () => withServer(nbdkit, 'nbdcopy', [`nbd://127.0.0.1:${kPort}/disk`, out]) },
      { id: 'nbdcopy-nbdkit-flush', label: 'nbdcopy --flush from nbdkit', run: () => withServer(nbdkit, 'nbdcopy', ['--flush', `nbd://127.0.0.1:${kPort}/disk`, out]) },
      { id: 'cp', label: 'cp (local, sparse)', run: () => withServer(null, 'cp', [image.path, out]) },
    ];
    const runs = new Map<string, RunRecord[]>();
    for (const c of contenders) runs.set(c.id, []);
    for (let round = 0; round < o.rounds; round++) {
      const order = contenders.map((_, i) => contenders[(i + round) % contenders.length]!);
      const line: string[] = [];
      for (const c of order) {
        const r = await c.run(round);
        runs.get(c.id)!.push(r);
        line.push(`${c.id} ${(r.wallMs / 1000).toFixed(2)}s${r.ok ? '' : ' FAILED'}`);
      }
      log(`  round ${round + 1}/${o.rounds}: ${line.join(', ')}`);
    }
    freshOutput(out);
    const ours = runs.get('postcopy')!;
    const results: ContenderResult[] = contenders.map((c) => {
      const rs = runs.get(c.id)!;
      const ok = rs.filter((r) => r.ok);
      const res: ContenderResult = {
        id: c.id,
        label: c.label,
        wallSec: spread(ok.map((r) => sec(r.wallMs))),
        cpuSec: spread(ok.map((r) => r.cpuSec)),
        runs: rs.map((r) => sec(r.wallMs)),
        cpuRuns: rs.map((r) => (r.ok ? r.cpuSec : NaN)),
        failures: rs.length - ok.length,
      };
      if (ok.some((r) => r.serverCpuSec !== undefined)) {
        res.sideCpuSec = { server: spread(ok.map((r) => r.serverCpuSec ?? NaN)), client: spread(ok.map((r) => r.clientCpuSec ?? NaN)) };
      }
      if (c.id === 'postcopy') {
        res.transferSec = spread(ok.map((r) => sec(r.transferMs ?? NaN)));
        res.rssMiB = {
          source: spread(ok.map((r) => kibToMiB(r.mig?.source?.maxRssKiB ?? NaN))),
          dest: spread(ok.map((r) => kibToMiB(r.mig?.dest?.maxRssKiB ?? NaN))),
        };
      } else {
        res.oursOverThis = spread(rs.map((r, i) => (r.ok && ours[i]?.ok ? ours[i]!.wallMs / r.wallMs : NaN)));
      }
      return res;
    });
    const lastOk = [...ours].reverse().find((r) => r.ok)?.mig;
    const ds = (lastOk?.destSummary ?? {}) as Record<string, number>;
    const bulkMiBps = spread(
      ours.filter((r) => r.ok).map((r) => Number((r.mig?.destSummary as Record<string, number> | null)?.bytesFetchedBulk ?? NaN) / 2 ** 20 / ((r.transferMs ?? NaN) / 1000)),
    );
    const service = runs.get('postcopy-service')!;
    const serviceOverNbdkit = spread(runs.get('nbdcopy-nbdkit')!.map((r, i) => (r.ok && service[i]?.ok ? service[i]!.wallMs / r.wallMs : NaN)));
    const { dataRuns: _drop, ...img } = image;
    return {
      image: img,
      rounds: o.rounds,
      contenders: results,
      moved: { bulkBytes: ds.bytesFetchedBulk ?? NaN, demandBytes: ds.bytesFetchedDemand ?? NaN, zeroSkipped: ds.zeroBytesSkipped ?? NaN },
      bulkMiBps,
      serviceOverNbdkit,
    };
  } finally {
    await services?.stop();
    for (const s of servers) await s.stop();
  }
}
