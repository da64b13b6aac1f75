// A small SVG bar-chart renderer for the benchmark results: horizontal bars, one colour per series,
// min-max whiskers, an optional target line, values printed at the bar's end. No dependency.
export interface Bar {
  series: string;
  value: number;
  min?: number;
  max?: number;
}
export interface Panel {
  title: string;
  unit: string;
  rows: { label: string; bars: Bar[] }[];
  /** a vertical line at this value, labelled */
  target?: { value: number; label: string };
  log?: boolean;
}

const COLORS = ['#2b6cb0', '#c05621', '#2f855a', '#6b46c1', '#718096', '#b7791f'];
const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const fmt = (v: number) => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));

export function renderSvg(title: string, subtitle: string, panels: Panel[]): string {
  const W = 900,
    labelW = 230,
    plotW = W - labelW - 90,
    barH = 14,
    gap = 4,
    rowGap = 10;
  const out: string[] = [];
  let y = 56;
  for (const p of panels) {
    const series = [...new Set(p.rows.flatMap((r) => r.bars.map((b) => b.series)))];
    const color = (s: string) => COLORS[series.indexOf(s) % COLORS.length]!;
    const maxV = Math.max(...p.rows.flatMap((r) => r.bars.map((b) => b.max ?? b.value)), p.target?.value ?? 0) * 1.08;
    const minV = p.log ? Math.min(...p.rows.flatMap((r) => r.bars.map((b) => b.min ?? b.value)).filter((v) => v > 0)) / 2 : 0;
    const x = (v: number) => labelW + (p.log ? (Math.log10(Math.max(v, minV)) - Math.log10(minV)) / (Math.log10(maxV) - Math.log10(minV)) : v / maxV) * plotW;
    out.push(
      `<text x="10" y="${y}" font-size="15" font-weight="bold">${esc(p.title)} <tspan font-weight="normal" font-size="12" fill="#555">(${esc(p.unit)}${p.log ? ', log scale' : ''})</tspan></text>`,
    );
    let lx = labelW;
    for (const s of series.length > 1 ? series : []) {
      out.push(`<rect x="${lx}" y="${y + 6}" width="10" height="10" fill="${color(s)}"/><text x="${lx + 14}" y="${y + 15}" font-size="11">${esc(s)}</text>`);
      lx += 24 + s.length * 6.5;
    }
    y += 24;
    const top = y;
    for (const r of p.rows) {
      const h = r.bars.length * (barH + gap);
      out.push(`<text x="${labelW - 8}" y="${y + h / 2 + 2}" font-size="12" text-anchor="end">${esc(r.label)}</text>`);
      for (const b of r.bars) {
        out.push(`<rect x="${labelW}" y="${y}" width="${Math.max(1, x(b.value) - labelW).toFixed(1)}" height="${barH}" fill="${color(b.series)}"/>`);
        if (b.min !== undefined && b.max !== undefined && b.max > b.min)
          out.push(`<line x1="${x(b.min).toFixed(1)}" x2="${x(b.max).toFixed(1)}" y1="${y + barH / 2}" y2="${y + barH / 2}" stroke="#000" stroke-width="1.2"/>`);
        out.push(`<text x="${(Math.max(x(b.value), x(b.max ?? b.value)) + 4).toFixed(1)}" y="${y + barH - 3}" font-size="11">${fmt(b.value)}</text>`);
        y += barH + gap;
      }
      y += rowGap;
    }
    if (p.target) {
      const tx = x(p.target.value).toFixed(1);
      out.push(
        `<line x1="${tx}" x2="${tx}" y1="${top - 4}" y2="${y - rowGap + 2}" stroke="#c53030" stroke-dasharray="4 3"/><text x="${tx}" y="${top - 7}" font-size="11" fill="#c53030" text-anchor="middle">${esc(p.target.label)}</text>`,
      );
    }
    y += 22;
  }
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${y}" viewBox="0 0 ${W} ${y}" font-family="sans-serif">
<rect width="100%" height="100%" fill="#fff"/>
<text x="10" y="24" font-size="18" font-weight="bold">${esc(title)}</text>
<text x="10" y="42" font-size="12" fill="#555">${esc(subtitle)}</text>
${out.join('\n')}
</svg>
`;
}
