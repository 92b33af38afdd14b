// Hand-written SVG bar charts (grouped bars, optional min–max whiskers, optional log scale): no dependency.

export interface BarSeries {
  name: string;
  values: Array<number | null>;
  /** Whisker ends (e.g. min and max over runs), same length as values. */
  lo?: Array<number | null>;
  hi?: Array<number | null>;
}

export interface BarChart {
  title: string;
  yLabel: string;
  groups: string[];
  series: BarSeries[];
  log?: boolean;
  /** Horizontal reference lines (targets). */
  refs?: Array<{ value: number; label: string }>;
}

const COLORS = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#bab0ac'];

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function niceMax(x: number): number {
  if (!(x > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(x));
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= x) return m * p;
  return 10 * p;
}

function fmt(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  if (a >= 1) return v.toFixed(2);
  return v.toPrecision(2);
}

export function barChart(c: BarChart): string {
  const groupW = Math.max(70, c.series.length * 22 + 24);
  const left = 70;
  const right = 20;
  const top = 48;
  const plotH = 260;
  const bottom = 70;
  const legendH = 18 * Math.ceil(c.series.length / 3);
  const width = Math.max(520, left + right + groupW * c.groups.length);
  const height = top + plotH + bottom + legendH;
  const all: number[] = [];
  for (const s of c.series) {
    for (const v of [...s.values, ...(s.hi ?? [])]) if (v !== null && Number.isFinite(v)) all.push(v);
  }
  for (const r of c.refs ?? []) all.push(r.value);
  const positive = all.filter((v) => v > 0);
  const log = c.log === true && positive.length > 0;
  let y: (v: number) => number;
  const ticks: number[] = [];
  if (log) {
    const lo = 10 ** Math.floor(Math.log10(Math.min(...positive)));
    const hi = 10 ** Math.ceil(Math.log10(Math.max(...positive)));
    const span = Math.log10(hi) - Math.log10(lo) || 1;
    y = (v) => top + plotH - ((Math.log10(Math.max(v, lo)) - Math.log10(lo)) / span) * plotH;
    for (let t = lo; t <= hi * 1.0001; t *= 10) ticks.push(t);
  } else {
    const max = niceMax(Math.max(0, ...all));
    y = (v) => top + plotH - (Math.max(0, v) / max) * plotH;
    for (let i = 0; i <= 5; i++) ticks.push((max * i) / 5);
  }
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`);
  out.push(`<rect width="${width}" height="${height}" fill="white"/>`);
  out.push(`<text x="${width / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">${esc(c.title)}</text>`);
  out.push(`<text transform="translate(14,${top + plotH / 2}) rotate(-90)" text-anchor="middle">${esc(c.yLabel)}${log ? ' (log)' : ''}</text>`);
  for (const t of ticks) {
    const ty = y(t);
    out.push(`<line x1="${left}" x2="${width - right}" y1="${ty}" y2="${ty}" stroke="#ddd"/>`);
    out.push(`<text x="${left - 6}" y="${ty + 4}" text-anchor="end">${fmt(t)}</text>`);
  }
  out.push(`<line x1="${left}" x2="${left}" y1="${top}" y2="${top + plotH}" stroke="#333"/>`);
  out.push(`<line x1="${left}" x2="${width - right}" y1="${top + plotH}" y2="${top + plotH}" stroke="#333"/>`);
  const barW = Math.min(28, (groupW - 16) / Math.max(1, c.series.length));
  c.groups.forEach((g, gi) => {
    const gx = left + gi * groupW + (groupW - barW * c.series.length) / 2;
    c.series.forEach((s, si) => {
      const v = s.values[gi];
      if (v === null || v === undefined || !Number.isFinite(v)) return;
      const x = gx + si * barW;
      const yv = y(v);
      const base = top + plotH;
      out.push(`<rect x="${x + 1}" y="${Math.min(yv, base)}" width="${barW - 2}" height="${Math.abs(base - yv)}" fill="${COLORS[si % COLORS.length]}"><title>${esc(`${s.name} · ${g}: ${fmt(v)}`)}</title></rect>`);
      const lo = s.lo?.[gi];
      const hi = s.hi?.[gi];
      if (lo !== null && lo !== undefined && hi !== null && hi !== undefined && Number.isFinite(lo) && Number.isFinite(hi) && hi > lo) {
        const cx = x + barW / 2;
        out.push(`<line x1="${cx}" x2="${cx}" y1="${y(lo)}" y2="${y(hi)}" stroke="#222"/>`);
        out.push(`<line x1="${cx - 3}" x2="${cx + 3}" y1="${y(lo)}" y2="${y(lo)}" stroke="#222"/>`);
        out.push(`<line x1="${cx - 3}" x2="${cx + 3}" y1="${y(hi)}" y2="${y(hi)}" stroke="#222"/>`);
      }
      if (c.series.length <= 4) out.push(`<text x="${x + barW / 2}" y="${Math.min(yv, base) - 3}" text-anchor="middle" font-size="9">${fmt(v)}</text>`);
    });
    const lines = g.split('\n');
    lines.forEach((line, li) => {
      out.push(`<text x="${left + gi * groupW + groupW / 2}" y="${top + plotH + 16 + li * 13}" text-anchor="middle">${esc(line)}</text>`);
    });
  });
  for (const r of c.refs ?? []) {
    const ry = y(r.value);
    out.push(`<line x1="${left}" x2="${width - right}" y1="${ry}" y2="${ry}" stroke="#c00" stroke-dasharray="5,4"/>`);
    out.push(`<text x="${width - right - 2}" y="${ry - 3}" text-anchor="end" fill="#c00">${esc(r.label)}</text>`);
  }
  c.series.forEach((s, si) => {
    const lx = left + (si % 3) * ((width - left - right) / 3);
    const ly = top + plotH + bottom - 10 + Math.floor(si / 3) * 18;
    out.push(`<rect x="${lx}" y="${ly - 9}" width="10" height="10" fill="${COLORS[si % COLORS.length]}"/>`);
    out.push(`<text x="${lx + 14}" y="${ly}">${esc(s.name)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
