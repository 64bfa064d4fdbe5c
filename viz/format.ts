/** How numbers read on the page. Pure: shared by the views and the tests. */

/** 1234 → "1.23 s", 87 → "87 ms". */
export function duration(ms: number | null): string {
  if (ms === null || !Number.isFinite(ms)) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)} min ${s % 60} s`;
}

/** Time of day with milliseconds, local: "07:45:12.345". */
export function clock(atMs: number): string {
  const d = new Date(atMs);
  const pad = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

/** Offset from the start of a run: "+12.345 s". */
export function offset(ms: number): string {
  return `+${(ms / 1000).toFixed(3)} s`;
}

/** Rates and sizes with a sensible number of digits. */
export function num(x: number, digits = 1): string {
  if (!Number.isFinite(x)) return '—';
  if (Math.abs(x) >= 100) return String(Math.round(x));
  return x.toFixed(digits);
}

/** 268435456 → "256 MiB". */
export function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${Number.isInteger(n) ? n : n.toFixed(1)} ${units[i]}`;
}

export function percent(share: number): string {
  return `${Math.round(share * 100)}%`;
}
