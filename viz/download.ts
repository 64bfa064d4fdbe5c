/** Saving a file from the page: a blob URL on a temporary link, clicked. */
import type { TraceFile } from '../protocol/trace.js';

/** Offer the file as a download. */
export function download(file: TraceFile, fileName: string): void {
  const blob = new Blob([JSON.stringify(file)], { type: 'application/json' });
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = fileName;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
