/**
 * Two small chart kinds as standalone SVG (no library, no fonts to fetch): grouped bars and
 * lines. Enough for the evaluation report; every number is also in the report's tables.
 */

const COLORS = ['#2f6fb3', '#e07b39', '#3a9e5c', '#b5443c', '#7d5ba6', '#8c6d31'];
const W = 640;
const H = 320;
const M = { top: 36, right: 16, bottom: 64, left: 64 };

function esc(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function niceMax(value: number): number {
  if (value <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= value) return m * p;
  return 10 * p;
}

function fmt(v: number): string {
  if (v >= 1e6) return `${(v / 1e6).toFixed(v >= 1e7 ? 0 : 1)}M`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(v >= 1e4 ? 0 : 1)}k`;
  return Number.isInteger(v) ? String(v) : v.toFixed(v < 1 ? 2 : 1);
}

function frame(title: string, yLabel: string, yMax: number, body: string, legend: string[]): string {
  const plotH = H - M.top - M.bottom;
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => {
    const y = M.top + plotH * (1 - f);
    return `<line x1="${M.left}" x2="${W - M.right}" y1="${y}" y2="${y}" stroke="#ddd"/><text x="${M.left - 6}" y="${y + 4}" text-anchor="end" font-size="11">${fmt(yMax * f)}</text>`;
  });
  const legendItems = legend.map(
    (name, i) => `<rect x="${M.left + i * 150}" y="${H - 18}" width="10" height="10" fill="${COLORS[i % COLORS.length]}"/><text x="${M.left + i * 150 + 14}" y="${H - 9}" font-size="11">${esc(name)}</text>`,
  );
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif">
<rect width="${W}" height="${H}" fill="white"/>
<text x="${W / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">${esc(title)}</text>
<text x="14" y="${M.top + plotH / 2}" font-size="11" transform="rotate(-90 14 ${M.top + plotH / 2})" text-anchor="middle">${esc(yLabel)}</text>
${ticks.join('\n')}
${body}
${legendItems.join('\n')}
</svg>
`;
}

/** categories along x, one bar per series in each. */
export function barChart(title: string, yLabel: string, categories: string[], series: Array<{ name: string; values: number[] }>): string {
  const yMax = niceMax(Math.max(...series.flatMap((s) => s.values)));
  const plotW = W - M.left - M.right;
  const plotH = H - M.top - M.bottom;
  const groupW = plotW / categories.length;
  const barW = (groupW * 0.8) / series.length;
  const parts: string[] = [];
  categories.forEach((cat, ci) => {
    const gx = M.left + ci * groupW + groupW * 0.1;
    series.forEach((s, si) => {
      const v = s.values[ci] ?? 0;
      const h = (v / yMax) * plotH;
      const x = gx + si * barW;
      parts.push(`<rect x="${x.toFixed(1)}" y="${(M.top + plotH - h).toFixed(1)}" width="${(barW - 2).toFixed(1)}" height="${h.toFixed(1)}" fill="${COLORS[si % COLORS.length]}"><title>${esc(`${s.name} ${cat}: ${fmt(v)}`)}</title></rect>`);
    });
    parts.push(`<text x="${(gx + groupW * 0.4).toFixed(1)}" y="${M.top + plotH + 16}" text-anchor="middle" font-size="11">${esc(cat)}</text>`);
  });
  return frame(title, yLabel, yMax, parts.join('\n'), series.map((s) => s.name));
}

/** x numeric; one polyline per series. */
export function lineChart(title: string, xLabel: string, yLabel: string, series: Array<{ name: string; points: Array<[number, number]> }>): string {
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const xMin = Math.min(...xs);
  const xMax = Math.max(...xs) === xMin ? xMin + 1 : Math.max(...xs);
  const yMax = niceMax(Math.max(...series.flatMap((s) => s.points.map((p) => p[1]))));
  const plotW = W - M.left - M.right;
  const plotH = H - M.top - M.bottom;
  const px = (x: number) => M.left + ((x - xMin) / (xMax - xMin)) * plotW;
  const py = (y: number) => M.top + plotH * (1 - y / yMax);
  const parts: string[] = [];
  series.forEach((s, si) => {
    const color = COLORS[si % COLORS.length];
    parts.push(`<polyline fill="none" stroke="${color}" stroke-width="2" points="${s.points.map(([x, y]) => `${px(x).toFixed(1)},${py(y).toFixed(1)}`).join(' ')}"/>`);
    for (const [x, y] of s.points) parts.push(`<circle cx="${px(x).toFixed(1)}" cy="${py(y).toFixed(1)}" r="3" fill="${color}"><title>${esc(`${s.name}: ${fmt(x)} → ${fmt(y)}`)}</title></circle>`);
  });
  for (const x of [...new Set(xs)].sort((a, b) => a - b)) {
    parts.push(`<text x="${px(x).toFixed(1)}" y="${M.top + plotH + 16}" text-anchor="middle" font-size="11">${fmt(x)}</text>`);
  }
  parts.push(`<text x="${M.left + plotW / 2}" y="${M.top + plotH + 34}" text-anchor="middle" font-size="11">${esc(xLabel)}</text>`);
  return frame(title, yLabel, yMax, parts.join('\n'), series.map((s) => s.name));
}
