/**
 * `hvshare bench ... --report FILE.svg|FILE.html`: the results drawn, for people to look at. Plain SVG, no
 * library: horizontal bar charts (one bar per series and case, reference lines for the targets) and cumulative
 * latency curves. Every mark carries data-series, data-label and data-value, so what a picture shows can be
 * checked against the JSON of the same run.
 */
import { writeFile } from 'node:fs/promises';
import { extname } from 'node:path';
import { caseLabel, checkTargets, type BlockBenchResult } from './bench-block.js';
import { fileCaseLabel, type FileCaseResult, type LatencyResult } from './bench-file.js';
import { COLUMN_LABELS, COLUMNS, type FuseBenchResult } from './bench-fuse.js';
import { p99 } from './bench-stats.js';

const WIDTH = 1000;
const LABEL_WIDTH = 360;
/** Longer case labels are cut (the whole label is the bar's tooltip and its data-label). */
const LABEL_CHARS = 56;
const PLOT_WIDTH = WIDTH - LABEL_WIDTH - 90;
const BAR = 9;
const COLORS = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#b07aa1'];

export interface Series {
  name: string;
  color?: string;
}

export interface BarChart {
  title: string;
  unit: string;
  series: Series[];
  /** One row per case: a value per series (null: not measured). */
  rows: { label: string; values: (number | null)[] }[];
  /** Vertical lines at these values (targets, the ceiling). */
  marks?: { value: number; label: string }[];
  /**
   * A logarithmic axis whose bars grow from `from` (1 for ratios: left of it faster, right slower); for figures
   * that span orders of magnitude. Without it, a linear axis from 0.
   */
  log?: { from?: number };
}

export interface CdfChart {
  title: string;
  unit: string;
  curves: { name: string; values: number[] }[];
}

const escape = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const num = (n: number) => (Math.abs(n) >= 100 ? n.toFixed(0) : Math.abs(n) >= 10 ? n.toFixed(1) : n.toFixed(2));
const colorOf = (series: Series[], i: number) => series[i]!.color ?? COLORS[i % COLORS.length]!;

function legend(series: Series[], y: number): string {
  let x = LABEL_WIDTH;
  return series
    .map((s, i) => {
      const at = x;
      // About 6.5 px per character at this font size, then a gap.
      x += 14 + s.name.length * 6.5 + 24;
      return `<rect x="${at}" y="${y - 9}" width="10" height="10" fill="${colorOf(series, i)}"/><text x="${at + 14}" y="${y}">${escape(s.name)}</text>`;
    })
    .join('');
}

/** A horizontal bar chart at vertical offset `top`; returns its markup and height. */
function barChart(chart: BarChart, top: number): { svg: string; height: number } {
  const values = chart.rows.flatMap((r) => r.values.filter((v): v is number => v !== null && Number.isFinite(v) && (!chart.log || v > 0)));
  const markValues = (chart.marks ?? []).map((m) => m.value);
  const all = [...values, ...markValues];
  const f = chart.log ? Math.log10 : (v: number) => v;
  const lo = chart.log ? f(Math.min(chart.log.from ?? Infinity, ...all) / 1.2) : Math.min(0, ...all);
  const hi = chart.log ? f(Math.max(chart.log.from ?? 0, ...all) * 1.2) : Math.max(0, ...all) || 1;
  const x = (v: number) => LABEL_WIDTH + ((f(Math.max(v, chart.log ? 1e-12 : -Infinity)) - lo) / (hi - lo || 1)) * PLOT_WIDTH;
  const base = chart.log ? (chart.log.from ?? 10 ** lo) : 0;
  const rowHeight = chart.series.length * (BAR + 2) + 8;
  const plotTop = top + 44;
  const out: string[] = [
    `<g class="chart" data-title="${escape(chart.title)}">`,
    `<text x="10" y="${top + 18}" class="title">${escape(chart.title)} (${escape(chart.unit)})</text>`,
    legend(chart.series, top + 36),
  ];
  chart.rows.forEach((row, r) => {
    const y = plotTop + r * rowHeight;
    // Cut in the middle: the ends tell rows apart ("...: median", "...: p99").
    const keep = (LABEL_CHARS - 1) >> 1;
    const shown = row.label.length > LABEL_CHARS ? `${row.label.slice(0, keep)}…${row.label.slice(-keep)}` : row.label;
    out.push(`<text x="${LABEL_WIDTH - 8}" y="${y + rowHeight / 2}" text-anchor="end"><title>${escape(row.label)}</title>${escape(shown)}</text>`);
    row.values.forEach((v, s) => {
      // Nothing to draw on a log scale for 0 (a latency a poll already under way saw): the value is written instead.
      if (v === null || !Number.isFinite(v)) return;
      const by = y + s * (BAR + 2);
      if (chart.log && v <= 0) {
        out.push(`<text x="${x(base) + 4}" y="${by + BAR - 1}" class="value">${num(v)}</text>`);
        return;
      }
      const from = Math.min(x(v), x(base));
      const width = Math.max(1, Math.abs(x(v) - x(base)));
      out.push(
        `<rect class="bar" data-series="${escape(chart.series[s]!.name)}" data-label="${escape(row.label)}" data-value="${v}" ` +
          `x="${from.toFixed(1)}" y="${by}" width="${width.toFixed(1)}" height="${BAR}" fill="${colorOf(chart.series, s)}"/>`,
        `<text x="${(Math.max(x(v), x(base)) + 4).toFixed(1)}" y="${by + BAR - 1}" class="value">${num(v)}</text>`,
      );
    });
  });
  const bottom = plotTop + chart.rows.length * rowHeight;
  out.push(`<line x1="${x(base)}" y1="${plotTop - 4}" x2="${x(base)}" y2="${bottom}" stroke="#333"/>`);
  if (chart.log) out.push(`<text x="${LABEL_WIDTH + PLOT_WIDTH}" y="${bottom + 12}" text-anchor="end" fill="#666">logarithmic scale</text>`);
  const marks = chart.marks ?? [];
  marks.forEach((m, i) => {
    // Labels one under the other: marks close together would write over each other.
    out.push(
      `<line class="mark" data-label="${escape(m.label)}" data-value="${m.value}" x1="${x(m.value)}" y1="${plotTop - 4}" x2="${x(m.value)}" y2="${bottom + 12 * i + 4}" stroke="#c00" stroke-dasharray="4 3"/>`,
      `<text x="${x(m.value) + 3}" y="${bottom + 12 * (i + 1)}" fill="#c00">${escape(m.label)} (${num(m.value)})</text>`,
    );
  });
  out.push('</g>');
  return { svg: out.join('\n'), height: bottom - top + 12 * marks.length + 24 };
}

/** Cumulative distributions of latencies: x the latency (up to the largest p99), y the share of samples. */
function cdfChart(chart: CdfChart, top: number): { svg: string; height: number } {
  const height = 260;
  const plotTop = top + 44;
  const plotHeight = height - 80;
  const hi = Math.max(1, ...chart.curves.map((c) => (c.values.length ? p99(c.values) : 0)));
  const x = (v: number) => LABEL_WIDTH + (Math.min(v, hi) / hi) * PLOT_WIDTH;
  const y = (share: number) => plotTop + plotHeight * (1 - share);
  const series = chart.curves.map((c) => ({ name: c.name }));
  const out: string[] = [
    `<g class="chart" data-title="${escape(chart.title)}">`,
    `<text x="10" y="${top + 18}" class="title">${escape(chart.title)} (${escape(chart.unit)}, share of rounds at or below)</text>`,
    legend(series, top + 36),
    `<line x1="${LABEL_WIDTH}" y1="${y(0)}" x2="${LABEL_WIDTH + PLOT_WIDTH}" y2="${y(0)}" stroke="#333"/>`,
    `<line x1="${LABEL_WIDTH}" y1="${y(0)}" x2="${LABEL_WIDTH}" y2="${y(1)}" stroke="#333"/>`,
    `<text x="${LABEL_WIDTH - 6}" y="${y(1) + 4}" text-anchor="end">100%</text><text x="${LABEL_WIDTH - 6}" y="${y(0.5) + 4}" text-anchor="end">50%</text>`,
    `<text x="${LABEL_WIDTH}" y="${y(0) + 14}">0</text><text x="${LABEL_WIDTH + PLOT_WIDTH}" y="${y(0) + 14}" text-anchor="end">${num(hi)} (largest p99)</text>`,
  ];
  chart.curves.forEach((c, i) => {
    const sorted = [...c.values].sort((a, b) => a - b);
    const points = sorted.map((v, k) => `${x(v).toFixed(1)},${y((k + 1) / sorted.length).toFixed(1)}`).join(' ');
    out.push(
      `<polyline class="curve" data-series="${escape(c.name)}" data-count="${sorted.length}" data-median="${sorted[sorted.length >> 1] ?? 0}" ` +
        `points="${points}" fill="none" stroke="${colorOf(series, i)}" stroke-width="2"/>`,
    );
  });
  out.push('</g>');
  return { svg: out.join('\n'), height };
}

/** The whole picture: the charts one under the other. */
export function renderReport(title: string, charts: (BarChart | CdfChart)[]): string {
  let top = 40;
  const parts: string[] = [];
  for (const chart of charts) {
    const drawn = 'curves' in chart ? cdfChart(chart, top) : barChart(chart, top);
    parts.push(drawn.svg);
    top += drawn.height + 20;
  }
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${top}" viewBox="0 0 ${WIDTH} ${top}" font-family="sans-serif" font-size="11">`,
    '<style>.title{font-size:14px;font-weight:bold}.value{fill:#444;font-size:10px}</style>',
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="24" style="font-size:18px;font-weight:bold">${escape(title)}</text>`,
    ...parts,
    '</svg>',
  ].join('\n');
}

export function blockReport(result: BlockBenchResult): string {
  const rows = result.cases.map((c) => ({ c, label: caseLabel(c) }));
  const targets = checkTargets(result.cases).filter((t) => t.worstPct !== null);
  return renderReport('hvshare bench block: the hypervisor path against native I/O', [
    {
      title: 'Throughput per case',
      unit: 'MiB/s',
      series: [{ name: 'native sync' }, { name: 'native async' }, { name: 'hypervisor' }],
      rows: rows.map(({ c, label }) => ({ label, values: [c.nativeSync.mibPerSec, c.nativeAsync.mibPerSec, c.hypervisor.mibPerSec] })),
    },
    {
      title: 'Overhead of the hypervisor path against the faster native side (below 0: faster)',
      unit: '%',
      series: [{ name: 'overhead' }],
      rows: rows.map(({ c, label }) => ({ label, values: [c.overheadPct] })),
      marks: targets.map((t) => ({ value: t.limitPct, label: `target ${t.target}` })),
    },
    {
      title: 'CPU per GiB moved, every thread of the process',
      unit: 'ms',
      series: [{ name: 'native sync' }, { name: 'native async' }, { name: 'hypervisor' }],
      rows: rows.map(({ c, label }) => ({ label, values: [c.nativeSync.cpuMsPerGiB, c.nativeAsync.cpuMsPerGiB, c.hypervisor.cpuMsPerGiB] })),
    },
  ]);
}

export function fileReport(cases: FileCaseResult[], latency: LatencyResult, fileBytes: number): string {
  const label = (c: FileCaseResult) => fileCaseLabel(c, fileBytes);
  return renderReport('hvshare bench file: the filesystem in a guest against the same code natively', [
    {
      title: 'Throughput per case',
      unit: 'MiB/s',
      series: [{ name: 'native' }, { name: 'guest' }],
      rows: cases.map((c) => ({ label: label(c), values: [c.nativeMiBps, c.hypervisorMiBps] })),
    },
    {
      title: 'CPU per GiB written or read',
      unit: 'ms',
      series: [{ name: 'native' }, { name: 'guest' }],
      rows: cases.map((c) => ({ label: label(c), values: [c.nativeCpuMsPerGiB, c.hypervisorCpuMsPerGiB] })),
    },
    {
      title: 'Written and closed, then opened and read: latency per round',
      unit: 'µs',
      curves: [
        { name: 'dom1 -> dom2 (the lock moves)', values: latency.crossDomain.samplesUs },
        { name: 'dom1 alone', values: latency.sameDomain.samplesUs },
      ],
    },
  ]);
}

export function fuseReport(result: FuseBenchResult): string {
  const compared = result.rows.filter((r) => r.strictRatio !== null || r.autoRatio !== null);
  const latencies = result.rows.filter((r) => r.group === 'visibility' && r.unit === 'µs');
  const charts: BarChart[] = [
    {
      title: 'Each view against the fuse-native pass-through in the same cache mode (the ceiling is 1)',
      unit: 'times slower',
      series: [{ name: 'strict' }, { name: 'auto' }],
      rows: compared.map((r) => ({ label: r.workload, values: [r.strictRatio, r.autoRatio] })),
      marks: [
        { value: 1, label: 'ceiling' },
        { value: 1.5, label: 'strict target 1.5x' },
      ],
      log: { from: 1 },
    },
  ];
  if (latencies.length > 0) {
    charts.push({
      title: 'Cross-mount visibility latency',
      unit: 'µs',
      series: COLUMNS.map((c) => ({ name: COLUMN_LABELS[c] })),
      rows: latencies.map((r) => ({ label: r.workload, values: COLUMNS.map((c) => r.values[c]) })),
      log: {},
    });
  }
  return renderReport('hvshare bench fuse: domain views against the FUSE ceiling', charts);
}

/** Writes `svg` to `path`: as it is for .svg, inside a page for .html. */
export async function writeReport(path: string, title: string, svg: string): Promise<void> {
  const ext = extname(path).toLowerCase();
  if (ext === '.svg') return writeFile(path, svg);
  if (ext === '.html' || ext === '.htm') {
    return writeFile(path, `<!doctype html>\n<html><head><meta charset="utf-8"><title>${escape(title)}</title></head>\n<body>\n${svg}\n</body></html>\n`);
  }
  throw new Error(`--report ${path}: the file must end in .svg or .html`);
}
